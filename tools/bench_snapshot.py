"""What a failover snapshot costs per stream: its size (in memory and pickled, as it travels) and the time each
stage takes to make its part, on a real stream in this process.

    python -m tools.bench_snapshot [--model digits] [--seconds-into 6] [--repeat 200]

A stream of real FSDD speech at 16 kHz (the model's rate: resampled streams take no snapshot) is fed to the point
asked; then each part of its state is taken `repeat` times: the front end's carried samples, the model's slot of
h, c and the running mean, the decoder's utterance so far. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time

import numpy as np
import soundfile as sf
import soxr
import torch

from stream.session import Recognizer
from stream.snapshot import StreamState

from .digits_data import FSDD_ROOT, resolve_path

FSDD = resolve_path(FSDD_ROOT) / "recordings"


def _speech(seconds: float) -> np.ndarray:
    """jackson's digits, 0.3 s apart: one open utterance (the decoder's part of the snapshot is at its largest)."""
    parts = []
    for i in range(50):
        audio, _ = sf.read(FSDD / f"{i % 10}_jackson_{i // 10}.wav", dtype="float32")
        parts += [audio, np.zeros(2400, np.float32)]
    x = soxr.resample(np.concatenate(parts), 8000, 16000).astype(np.float32)
    return x[: int(seconds * 16000)]


def _time(fn, repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits")
    p.add_argument("--seconds-into", type=float, default=6.0)
    p.add_argument("--repeat", type=int, default=200)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    recognizer = Recognizer.load(args.model, device="cpu")
    session = recognizer.session(16000)
    speech = _speech(args.seconds_into)
    for i in range(0, len(speech), 1600):
        session.accept(speech[i : i + 1600])
    pipeline = session.pipeline
    key = next(iter(pipeline.features.fronts))
    front, batcher, back = pipeline.features.fronts[key], pipeline.model.batcher, pipeline.decoder.backs[key]
    state = StreamState(front.snapshot(), batcher.snapshot(key), back.snapshot())
    out = {
        "seconds_into": args.seconds_into,
        "utterance_steps": len(state.back.heard),
        "bytes": state.nbytes,
        "pickled_bytes": len(pickle.dumps(state, protocol=5)),
        "front_us": round(_time(front.snapshot, args.repeat), 1),
        "model_us": round(_time(lambda: batcher.snapshot(key), args.repeat), 1),
        "decoder_us": round(_time(back.snapshot, args.repeat), 1),
        "pickle_us": round(_time(lambda: pickle.dumps(state, protocol=5), args.repeat), 1),
        "restore_decoder_us": round(_time(lambda: recognizer.backend().restore(state.back), max(1, args.repeat // 10)), 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
