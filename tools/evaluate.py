"""Word and sentence error rate of a model on a manifest, through the real streaming path.

    python -m tools.evaluate --model digits --manifest data/test/lucas/manifest.jsonl [--chunk-ms 160] [--beam 0]
    python -m tools.evaluate --manifest data/test/lucas/manifest.jsonl --continuous 5   # one stream, 5 s pauses

`--continuous` plays the whole manifest as one live stream (quiet noise between the utterances), as a
microphone would: the model's state is carried from each utterance into the next instead of starting fresh.
`--lead S` opens every file with S seconds of digital zeros, as edited files and some lines do.

Prints one JSON summary line last: {"model", "manifest", "utterances", "wer", "ser", "audio_seconds",
"wall_seconds", "rtf"}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from stream.backend import Event
from stream.session import Recognizer
from stream.transcribe import transcribe_array, transcribe_file
from tools.data import load_audio, read_manifest
from tools.scoring import score


def evaluate(
    recognizer: Recognizer, manifest: str | Path, chunk_ms: int = 160, out: str | None = None, first: int | None = None,
    lead_s: float = 0.0,
) -> dict:
    rows = read_manifest(manifest)[:first]
    pairs, audio_seconds = [], 0.0
    t0 = time.perf_counter()
    hyps = []
    for row in rows:
        if lead_s:
            text, duration = _transcribe_led(recognizer, row["audio"], lead_s, chunk_ms)
        else:
            transcript = transcribe_file(recognizer, row["audio"], chunk_ms=chunk_ms)
            text, duration = transcript.text, transcript.duration
        pairs.append((row["text"], text))
        audio_seconds += duration
        hyps.append({"audio": row["audio"], "ref": row["text"], "hyp": text})
    wall = time.perf_counter() - t0
    if out:
        Path(out).write_text("".join(json.dumps(h) + "\n" for h in hyps))
    result = score(pairs)
    return {
        "manifest": str(manifest),
        **result,
        "audio_seconds": round(audio_seconds, 1),
        "wall_seconds": round(wall, 2),
        "rtf": round(wall / max(audio_seconds, 1e-9), 5),
    }


def _stream(recognizer: Recognizer, audio: np.ndarray, rate: int, chunk_ms: int) -> list[Event]:
    """All events of one session fed `audio` in `chunk_ms` chunks, then finished."""
    return transcribe_array(recognizer, audio, rate, max(1, rate * chunk_ms // 1000))


def _transcribe_led(recognizer: Recognizer, path: str, lead_s: float, chunk_ms: int) -> tuple[str, float]:
    """(text, seconds) of the file read after `lead_s` of digital zeros."""
    rate = sf.info(path).samplerate
    audio = np.concatenate([np.zeros(round(lead_s * rate), np.float32), load_audio(path, rate)])
    events = _stream(recognizer, audio, rate, chunk_ms)
    return " ".join(e.text for e in events if e.type == "final"), len(audio) / rate


def evaluate_continuous(
    recognizer: Recognizer, manifest: str | Path, pause_s: float, chunk_ms: int = 160, noise_dbfs: float = -60.0,
    first: int | None = None,
) -> dict:
    """All utterances in one session, `pause_s` of noise at `noise_dbfs` between them; each word is scored
    against the utterance its start time falls in (the pause split evenly between neighbours). The stream runs at
    the first file's rate; other files are resampled to it."""
    rows = read_manifest(manifest)[:first]
    rate = sf.info(rows[0]["audio"]).samplerate
    rng = np.random.default_rng(0)
    parts, bounds, t = [], [], 0.0
    for row in rows:
        audio = load_audio(row["audio"], rate)
        pause = rng.normal(0.0, 10 ** (noise_dbfs / 20), int(pause_s * rate)).astype(np.float32)
        parts += [pause, audio]
        bounds.append(t + pause_s / 2)
        t += pause_s + len(audio) / rate
    stream = np.concatenate(parts)
    t0 = time.perf_counter()
    events = _stream(recognizer, stream, rate, chunk_ms)
    wall = time.perf_counter() - t0
    words = [w for e in events if e.type == "final" for w in e.words]
    hyps = [[] for _ in rows]
    for w in words:
        hyps[max(0, int(np.searchsorted(bounds, w.start, side="right")) - 1)].append(w.word)
    result = score((row["text"], " ".join(h)) for row, h in zip(rows, hyps))
    audio_seconds = len(stream) / rate
    return {"manifest": str(manifest), "continuous_pause_s": pause_s, **result, "audio_seconds": round(audio_seconds, 1),
            "wall_seconds": round(wall, 2), "rtf": round(wall / audio_seconds, 5)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits")
    p.add_argument("--manifest", required=True, nargs="+")
    p.add_argument("--chunk-ms", type=int, default=160)
    p.add_argument("--beam", type=int, help="0: greedy (default: the model's recommended decoding)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the per-core figure)")
    p.add_argument("--out", help="per-utterance ref/hyp JSON lines")
    p.add_argument("--first", type=int, help="only the manifest's first N utterances")
    p.add_argument("--continuous", type=float, metavar="PAUSE_S", help="one stream, PAUSE_S seconds between utterances")
    p.add_argument("--lead", type=float, default=0.0, metavar="S", help="open every file with S seconds of zeros")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    recognizer = Recognizer.load(args.model, device="cpu")
    if args.beam is not None:
        recognizer = recognizer.with_options(beam=args.beam)
    for manifest in args.manifest:
        if args.continuous is not None:
            result = evaluate_continuous(recognizer, manifest, args.continuous, args.chunk_ms, first=args.first)
        else:
            result = evaluate(recognizer, manifest, args.chunk_ms, args.out, args.first, args.lead)
        summary = {"model": str(args.model), **result}
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
