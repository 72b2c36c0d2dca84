#!/usr/bin/env bash
# The digits model card's checks on one checkpoint, each a JSON line into OUT/ (what BENCHMARKS.md and
# models/bundled/digits.md report):
#   bash tools/eval_digits.sh MODEL OUT      # e.g. bash tools/eval_digits.sh runs/all/all.pt runs/eval_all
# - the five FSDD voices' connected strings (issue 3's sets: 200 each, seeds 1-5), 16 kHz and the 8 kHz phone band;
# - jackson's first 50 strings as one stream with 3 s and 30 s pauses, and after 1 s of digital zeros;
# - 200 isolated clips cut tight (all_isolated);
# - tools.validate's groups (speechocean762's held-out digit strings and jackson's 200, seed 2).
# The test sets are made on first use (~3 min; MODEL "-": only that); needs `python -m tools.speechocean --out data/so762`.
set -euo pipefail
model=${1:?usage: eval_digits.sh MODEL OUT}
out=${2:?usage: eval_digits.sh MODEL OUT}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out" data/test data/val
seed=1
for s in george jackson lucas nicolas yweweler; do
    [[ -f data/test/$s/manifest.jsonl ]] || $py -m tools.digits_data connected --speakers $s --n 200 --seed $seed --out data/test/$s
    [[ -f data/test/${s}_tel8k/manifest.jsonl ]] || \
        $py -m tools.digits_data connected --speakers $s --n 200 --seed $seed --rate 8000 --telephone --out data/test/${s}_tel8k
    seed=$((seed + 1))
done
[[ -f data/test/all_isolated/manifest.jsonl ]] || $py -m tools.digits_data isolated --out data/test/all_isolated
[[ -e data/val/so762 ]] || ln -s ../so762 data/val/so762
[[ -f data/val/fsdd_heldout/manifest.jsonl ]] || \
    $py -m tools.digits_data connected --speakers jackson --n 200 --seed 2 --out data/val/fsdd_heldout
[[ -f data/val/fsdd_heldout_tel8k/manifest.jsonl ]] || \
    $py -m tools.digits_data connected --speakers jackson --n 200 --seed 2 --rate 8000 --telephone --out data/val/fsdd_heldout_tel8k
[[ "$model" == "-" ]] && exit 0

ev() { $py -m tools.evaluate --model "$model" --threads 1 "$@" | tail -1; }
for s in george jackson lucas nicolas yweweler; do
    ev --manifest data/test/$s/manifest.jsonl > "$out/$s.json"
    ev --manifest data/test/${s}_tel8k/manifest.jsonl > "$out/${s}_tel8k.json"
done
ev --manifest data/test/jackson/manifest.jsonl --first 50 > "$out/jackson50_files.json"
ev --manifest data/test/jackson/manifest.jsonl --first 50 --continuous 3 > "$out/jackson50_pause3.json"
ev --manifest data/test/jackson/manifest.jsonl --first 50 --continuous 30 > "$out/jackson50_pause30.json"
ev --manifest data/test/jackson/manifest.jsonl --first 50 --lead 1 > "$out/jackson50_lead1.json"
ev --manifest data/test/all_isolated/manifest.jsonl --out "$out/isolated_rows.jsonl" > "$out/isolated.json"
$py -m tools.validate --model "$model" --sets data/val --out "$out/validate.json" > "$out/validate.md"
$py - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.stem != "validate"}
five = ["george", "jackson", "lucas", "nicolas", "yweweler"]
for s in five:
    print(f"{s}: {rows[s]['wer']:.2%} / {rows[s + '_tel8k']['wer']:.2%}")
for group in (five, [s for s in five if s != "jackson"]):
    print(f"mean of {len(group)}: {sum(rows[s]['wer'] for s in group) / len(group):.2%} / "
          f"{sum(rows[s + '_tel8k']['wer'] for s in group) / len(group):.2%}")
for k in ("jackson50_files", "jackson50_pause3", "jackson50_pause30", "jackson50_lead1", "isolated"):
    print(f"{k}: {rows[k]['wer']:.2%}")
EOF
