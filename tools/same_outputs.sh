#!/usr/bin/env bash
# Do two checkouts of rnnstream print the same thing, byte for byte? (a refactor's check)
#   bash tools/same_outputs.sh /path/to/before /path/to/after [--no-ray]
# Runs `rnnstream transcribe` (jsonl with 160 ms chunks and whole files, srt, greedy, text) and `rnnstream batch`
# (in process, and on a local Ray unless --no-ray) from each checkout with this checkout's .venv, over the example,
# 50 connected-digit files (40 at 16 kHz, 10 at the 8 kHz telephone band) and 12 odd or broken inputs made here;
# prints `same` or `DIFF` per output. Timings in batch's summary line differ by nature.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PY="$here/.venv/bin/python"
a=$(cd "$1" && pwd); b=$(cd "$2" && pwd); ray=${3:-}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$here" && "$PY" -m tools.digits_data connected --n 40 --seed 11 --out "$work/in/c16" >/dev/null &&
  "$PY" -m tools.digits_data connected --n 10 --seed 12 --rate 8000 --telephone --out "$work/in/c8" >/dev/null || exit 1
cd "$work/in" && "$PY" - <<'PY' || exit 1
import glob, shutil
import numpy as np, soundfile as sf, soxr
files = sorted(glob.glob("c16/audio/*"))
x, r = sf.read(files[0], dtype="float32")
y = soxr.resample(x, r, 44100)
sf.write("stereo44k.wav", np.stack([y, 0.5 * y], 1), 44100, subtype="PCM_24")
sf.write("float32.wav", x, r, subtype="FLOAT")
sf.write("lead_silence.flac", np.concatenate([np.zeros(r), x]), r)
sf.write("tiny.wav", x[:100], r)
sf.write("silence.wav", np.zeros(r * 3, np.float32), r)
open("truncated.wav", "wb").write(open(files[1], "rb").read()[:300])
open("notaudio.wav", "w").write("hello")
open("empty.wav", "w").close()
PY
cp "$here/examples/phone-number-8k.wav" .
cp "$here/../shared/data/speechocean762/audio/0001/000010035.opus" so.opus
cp "$here/../shared/data/fsdd/recordings/3_jackson_0.wav" clip.wav
files=(phone-number-8k.wav c16/audio/*.wav c8/audio/*.wav stereo44k.wav float32.wav lead_silence.flac tiny.wav
       silence.wav so.opus clip.wav truncated.wav notaudio.wav empty.wav missing.wav)
run() {  # checkout, output folder
  local out=$2; mkdir -p "$out"
  local cli=(env PYTHONPATH="$1" OMP_NUM_THREADS=1 "$PY" -m stream.cli)
  "${cli[@]}" transcribe "${files[@]}" --format jsonl > "$out/t160.jsonl" 2> "$out/t160.err"; echo "rc $?" >> "$out/t160.err"
  "${cli[@]}" transcribe "${files[@]}" --format jsonl --chunk-ms 0 > "$out/t0.jsonl" 2> "$out/t0.err"; echo "rc $?" >> "$out/t0.err"
  "${cli[@]}" transcribe phone-number-8k.wav c16/audio/00003.wav --format srt > "$out/t.srt" 2>&1
  "${cli[@]}" transcribe phone-number-8k.wav c16/audio/00003.wav --beam 0 --format jsonl > "$out/greedy.jsonl" 2>&1
  "${cli[@]}" transcribe "${files[@]}" > "$out/text.txt" 2>&1
  "${cli[@]}" batch "${files[@]}" --in-process --no-progress -o "$out/batch_local.jsonl" 2>/dev/null
  [[ "$ray" == --no-ray ]] || "${cli[@]}" batch "${files[@]}" --no-progress -o "$out/batch_ray.jsonl" 2>/dev/null
}
run "$a" "$work/a"; run "$b" "$work/b"
for f in "$work"/a/*; do
  name=$(basename "$f"); cmp -s "$f" "$work/b/$name" && echo "same $name" || echo "DIFF $name"
done
