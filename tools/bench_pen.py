"""Cost of live pen streams: N writers at 100 points a second through the in-process pipeline (the same stages,
batcher and decoding as every other use), one torch thread; and the time to the last letter after the last point.

    python -m tools.bench_pen --model models/bundled/handwriting.pt --writers 200 --seconds 20

Each writer replays held-out UNIPEN words (tools.unipen) re-timed to 100 points a second with 0.5 s pen-up between
words, fed in 0.16 s chunks (16 points), one tick for all writers. Writers per core = writers x ink seconds / CPU
seconds of this process. Invariant: only CPU time of this process counts (other jobs on the machine do not).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from stream.messages import Chunk
from stream.pipeline import PipelineSpec
from stream.session import Recognizer

from . import unipen

RATE = 100


def tape(seconds: float, seed: int) -> np.ndarray:
    """Held-out words' points, resampled in time to RATE points a second, one after another."""
    held = unipen.split_writers(0)
    idx = np.random.default_rng(seed).permutation(unipen.indices("7", held, train=False))
    parts, t, x = [], 0.0, 0.0
    for i in idx:
        p, _, _ = unipen.sample("7", int(i))
        step = max(1, round(len(p) / max(1.0, (p[-1, 2] - p[0, 2]) * RATE)))
        p = p[::step].copy()
        p[:, 2] = t + np.arange(len(p)) / RATE
        p[:, 0] += x - p[:, 0].min()
        parts.append(p)
        t, x = p[-1, 2] + 0.5, p[:, 0].max() + 3.0
        if t > seconds:
            break
    return np.concatenate(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="handwriting")
    p.add_argument("--writers", type=int, default=200)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    recognizer = Recognizer.load(args.model, device="cpu")
    pipeline = recognizer.pipeline(PipelineSpec(slots=args.writers, max_slots=args.writers))
    tapes = [tape(args.seconds, seed) for seed in range(min(args.writers, 8))]
    chunk = int(0.16 * RATE)
    keys = list(range(args.writers))
    pipeline.reserve(keys)
    ticks = int(args.seconds * RATE / chunk)
    cpu0, wall0, events = time.process_time(), time.perf_counter(), 0
    for tick in range(ticks + 1):
        chunks = {}
        for k in keys:
            data = tapes[k % len(tapes)][tick * chunk : (tick + 1) * chunk].astype(np.float32)
            first = tick == 0
            chunks[k] = Chunk(data, last=tick == ticks, rate=RATE if first else None, channels=4 if first else None)
        updates = pipeline.step(0, tick, chunks)
        events += sum(len(u.events) for u in updates.values())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ink = args.writers * ticks * chunk / RATE
    print(json.dumps({"writers": args.writers, "ink_seconds": round(ink, 1), "cpu_seconds": round(cpu, 2),
                      "wall_seconds": round(wall, 2), "writers_per_core": round(ink / cpu, 1),
                      "cpu_ms_per_tick": round(1000 * cpu / (ticks + 1), 1), "events": events}))


if __name__ == "__main__":
    main()
