"""Word and sentence error rate of a model on a manifest, through the real streaming path.

    python tools/evaluate.py --model digits --manifest data/test/lucas/manifest.jsonl [--chunk-ms 160] [--beam 0]

Prints one JSON summary line last: {"model", "manifest", "utterances", "wer", "ser", "audio_seconds",
"wall_seconds", "rtf"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream.session import Recognizer  # noqa: E402
from stream.transcribe import transcribe_file  # noqa: E402
from tools.data import read_manifest  # noqa: E402
from tools.scoring import score  # noqa: E402


def evaluate(recognizer: Recognizer, manifest: str | Path, chunk_ms: int = 160, out: str | None = None) -> dict:
    rows = read_manifest(manifest)
    pairs, audio_seconds = [], 0.0
    t0 = time.perf_counter()
    hyps = []
    for row in rows:
        transcript = transcribe_file(recognizer, row["audio"], chunk_ms=chunk_ms)
        pairs.append((row["text"], transcript.text))
        audio_seconds += transcript.duration
        hyps.append({"audio": row["audio"], "ref": row["text"], "hyp": transcript.text})
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits")
    p.add_argument("--manifest", required=True, nargs="+")
    p.add_argument("--chunk-ms", type=int, default=160)
    p.add_argument("--beam", type=int, help="0: greedy (default: the model's recommended decoding)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the per-core figure)")
    p.add_argument("--out", help="per-utterance ref/hyp JSON lines")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    recognizer = Recognizer.load(args.model, device="cpu")
    if args.beam is not None:
        recognizer = recognizer.with_options(beam=args.beam)
    for manifest in args.manifest:
        summary = {"model": str(args.model), **evaluate(recognizer, manifest, args.chunk_ms, args.out)}
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
