"""Pipeline benchmarks: concurrent real-time streams and offline throughput, on Ray or in one process.

    python -m tools.bench_pipeline streams DIR [--streams N] [--seconds S] [--in-process]
    python -m tools.bench_pipeline offline INPUTS... [--in-process]

`streams` replays real audio as N live streams, each fed at 1x speed in 160 ms chunks with
staggered starts, and measures each chunk's latency: from the moment its last sample "arrived" to
the moment the pipeline's events for it are back at the ingest (tick wait included). `offline`
times `rnnstream batch` from files read to JSON written. `--in-process` runs the very same stages in this process,
so the cost (or gain) of Ray is a measured ratio. Each prints one JSON summary line last.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from models.checkpoint import Checkpoint, load_checkpoint
from stream.batch.driver import BatchOptions, cpu_times, run_batch
from stream.batch.inputs import expand_inputs
from stream.cli import add_model_args, checkpoint_and_options, positive_int
from stream.distributed.cluster import start_pipeline
from stream.ingest import Ingest
from stream.pipeline import PipelineSpec
from stream.session import Recognizer


def _tape(inputs: list[str], max_files: int = 400, pause: float = 1.5, seed: int = 0) -> tuple[np.ndarray, int]:
    """What every stream replays: the inputs' audio (most common rate, mono) as utterances of 3-8 clips
    with short gaps, separated by `pause` seconds of silence, so endpointing closes each utterance as in
    dictation or a call (a stream that never pauses keeps one 20 s utterance open: see BENCHMARKS.md)."""
    import soundfile as sf

    paths = expand_inputs(inputs).paths[:max_files]
    clips: dict[int, list[np.ndarray]] = {}
    for p in paths:
        try:
            audio, rate = sf.read(p, dtype="float32", always_2d=True)
        except Exception:
            continue
        clips.setdefault(rate, []).append(audio.mean(axis=1))
    if not clips:
        raise SystemExit("rnnstream: error: bench needs readable audio inputs")
    rate = max(clips, key=lambda r: len(clips[r]))
    rng = np.random.default_rng(seed)
    parts, i, pool = [], 0, clips[rate]
    while i < len(pool):
        for clip in pool[i : i + rng.integers(3, 9)]:
            parts += [clip, np.zeros(int(rng.uniform(0.1, 0.4) * rate), np.float32)]
            i += 1
        parts.append(np.zeros(int(pause * rate), np.float32))
    tape = np.concatenate(parts)
    return (np.clip(tape, -1, 1) * 32767).astype(np.int16), rate


def _spec(args: argparse.Namespace) -> tuple[Checkpoint, PipelineSpec]:
    """The model, loaded once (on the CPU: the driver reads its config, Ray ships the file), and the stages' spec."""
    checkpoint, options = checkpoint_and_options(args)
    return checkpoint, PipelineSpec(device=args.compute_device, options=options, decoders=args.decoders)


def _pipeline(args: argparse.Namespace):
    """(pipeline, close) for Ray on this node or for one process."""
    import torch

    checkpoint, spec = _spec(args)
    if args.in_process:
        torch.set_num_threads(args.threads)
        if args.compute_device not in (None, "cpu"):
            checkpoint = load_checkpoint(args.model, args.compute_device)
        return Recognizer(checkpoint, spec.options, spec.endpoint).pipeline(spec), lambda: None
    cluster, pipeline = start_pipeline(args.model, spec, args.address)

    def close() -> None:
        pipeline.close()
        cluster.close()

    return pipeline, close


def _cpu(pids: list[int]) -> np.ndarray:
    return np.array(cpu_times(pids))


def _histogram(ms: np.ndarray, edges=(50, 100, 150, 200, 300, 500, 1000)) -> dict[str, float]:
    """Share of chunks per latency band (ms)."""
    counts = np.histogram(ms, bins=[0, *edges, np.inf])[0] / max(len(ms), 1)
    names = [f"<{edges[0]}", *(f"{a}-{b}" for a, b in itertools.pairwise(edges)), f">{edges[-1]}"]
    return {n: round(float(c), 4) for n, c in zip(names, counts)}


def _roles(args: argparse.Namespace) -> list[str]:
    if args.in_process:
        return ["process"]
    return ["driver", "features", "model", *(f"decoder{i}" for i in range(args.decoders))]


def bench_streams(args: argparse.Namespace) -> dict:
    tape, rate = _tape(args.inputs, pause=args.pause)
    n, chunk_s, tick_s = args.streams, args.chunk_ms / 1000, args.tick_ms / 1000
    size = round(chunk_s * rate)
    chunks_per_stream = max(1, round(args.seconds / chunk_s))
    offsets = (np.arange(n) * 7919 * size) % len(tape)  # every stream starts somewhere else on the tape
    tape2 = np.concatenate([tape, tape[: size * (chunks_per_stream + 1)]])

    pipeline, close = _pipeline(args)
    pids = [os.getpid(), *pipeline.pids()]
    cpu = _cpu(pids)
    ingest = Ingest(pipeline, min_chunk=min(0.1, chunk_s), max_chunk=max(chunk_s, 0.1), window=args.window, track_latency=True)
    keys = [ingest.open(rate) for _ in range(n)]
    sent = np.zeros(n, int)
    t0 = time.monotonic() + 0.5
    due = t0 + chunk_s * (1 + np.arange(n) / n)  # staggered: chunk k of stream i is due at start_i + (k+1) chunk
    cpu0 = time.process_time()
    try:
        next_tick = t0
        while (sent < chunks_per_stream).any() or ingest.inflight:
            now = time.monotonic()
            for i in np.nonzero((due <= now) & (sent < chunks_per_stream))[0]:
                start = offsets[i] + sent[i] * size
                ingest.push(keys[i], tape2[start : start + size], mark=due[i])
                sent[i] += 1
                due[i] += chunk_s
                if sent[i] == chunks_per_stream:
                    ingest.finish(keys[i])
            ingest.submit(block=True)
            next_tick += tick_s
            while True:  # deliver results until the next tick is due
                left = next_tick - time.monotonic()
                if left <= 0 or not ingest.inflight:
                    break
                ingest.collect(timeout=left)
            if (left := next_tick - time.monotonic()) > 0:
                time.sleep(left)
            ingest.collect(timeout=0)
        wall = time.monotonic() - t0
        cpu = _cpu(pids) - cpu
        stats = pipeline.stats()
    finally:
        close()
    warm = np.array(ingest.latencies[int(len(ingest.latencies) * args.warmup / max(args.seconds, 1e-9)) :] or [0.0])
    p50, p95, p99 = (float(np.percentile(warm, q)) * 1000 for q in (50, 95, 99))
    return {
        "mode": "in-process" if args.in_process else "ray",
        "streams": n,
        "seconds": args.seconds,
        "chunk_ms": args.chunk_ms,
        "tick_ms": args.tick_ms,
        "p50_ms": round(p50, 1),
        "p95_ms": round(p95, 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(float(warm.max()) * 1000, 1),
        "latency_share": _histogram(warm * 1000),
        "realtime_held": bool(p95 <= args.budget_ms),
        "audio_seconds": round(n * chunks_per_stream * chunk_s, 1),
        "wall_seconds": round(wall, 2),
        "rtfx": round(n * chunks_per_stream * chunk_s / wall, 1),
        "lstm_calls": stats.get("lstm_calls"),
        "ticks": ingest.stats.ticks,
        "blocked": ingest.stats.blocked,
        "dropped_seconds": ingest.stats.dropped_seconds,
        "driver_cpu_seconds": round(time.process_time() - cpu0, 2),
        "cpu_seconds": round(cpu.sum(), 2),  # driver and actors: what the work costs, whatever else runs
        "cpu_rtfx": round(n * chunks_per_stream * chunk_s / cpu.sum(), 1),
        "cpu_by_process": dict(zip(_roles(args), np.round(cpu, 2).tolist())),
        "load_avg": round(os.getloadavg()[0], 2),
    }


def bench_offline(args: argparse.Namespace) -> dict:
    checkpoint, spec = _spec(args)
    opts = BatchOptions(
        address=args.address, workers=args.workers, streams=args.streams, chunk_seconds=args.chunk_seconds,
        in_process=args.in_process, threads=args.threads, progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        summary = run_batch(args.inputs, Path(tmp) / "out.jsonl", args.model, opts, spec, errors=None, checkpoint=checkpoint)
        total = time.monotonic() - t0
    return {
        "mode": "in-process" if args.in_process else "ray",
        "files": summary.transcribed,
        "failed": summary.failed,
        "workers": len(summary.per_worker),
        "streams": args.streams,
        "chunk_seconds": args.chunk_seconds,
        "audio_seconds": round(summary.audio_seconds, 1),
        "wall_seconds": round(summary.wall_seconds, 2),
        "rtfx": round(summary.rtfx, 1),
        "startup_seconds": round(total - summary.wall_seconds, 2),
        "cpu_seconds": round(summary.cpu_seconds, 2),
        "cpu_rtfx": round(summary.audio_seconds / summary.cpu_seconds, 1) if summary.cpu_seconds else None,
        "load_avg": round(os.getloadavg()[0], 2),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="bench", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, directories, globs or manifests")
        add_model_args(q)
        q.add_argument("--address", help="an existing Ray cluster; default: start Ray on this machine")
        q.add_argument("--in-process", action="store_true", help="the same stages in this process, without Ray")
        q.add_argument("--threads", type=positive_int, default=1, help="torch threads with --in-process (default 1)")
        q.add_argument("--decoders", type=positive_int, default=2, help="decoder actors per pipeline (default 2)")

    s = kinds.add_parser("streams", help="N live streams at 1x speed: latency percentiles")
    common(s)
    s.add_argument("--streams", type=positive_int, default=100)
    s.add_argument("--seconds", type=float, default=20.0)
    s.add_argument("--chunk-ms", type=positive_int, default=160)
    s.add_argument("--tick-ms", type=positive_int, default=40, help="how often the ingest sends a tick")
    s.add_argument("--window", type=positive_int, default=16, help="ticks in flight at most")
    s.add_argument("--warmup", type=float, default=2.0, help="seconds of results left out of the percentiles")
    s.add_argument("--budget-ms", type=float, default=300.0)
    s.add_argument("--pause", type=float, default=1.5, help="seconds of silence between the replayed utterances")
    s.set_defaults(func=bench_streams)

    o = kinds.add_parser("offline", help="files through batch (files read to JSON written): seconds of audio per second")
    common(o)
    o.add_argument("--workers", type=positive_int)
    o.add_argument("--streams", type=positive_int, default=64)
    o.add_argument("--chunk-seconds", type=float, default=8.0)
    o.set_defaults(func=bench_offline)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary = args.func(args)
    sys.stdout.flush()
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
