"""Pipeline benchmarks: concurrent real-time streams and offline throughput, on Ray or in one process.

    python -m tools.bench_pipeline streams DIR [--streams N] [--seconds S] [--in-process | --processes P] [--rate R]
        [--failover on|off] [--kill model|decoder --kill-at S] [--ramp S --admit-latency S]
    python -m tools.bench_pipeline offline INPUTS... [--in-process]

`streams` replays real audio as N live streams, each fed at 1x speed in 160 ms chunks with
staggered starts, and measures each chunk's latency: from the moment its last sample "arrived" to
the moment the pipeline's events for it are back at the ingest (tick wait included). `--kill` kills an actor
mid-run (failover: the time from the kill to each stream's next event); `--ramp` opens the streams over that many
seconds, refused past `--admit-latency` (the overload policy). `offline`
times `rnnstream batch` from files read to JSON written. `--in-process` runs the very same stages in this process,
so the cost (or gain) of Ray is a measured ratio; `--processes P` runs them in P child processes (stream.process, what
`rnnstream serve` uses), each with a share of the streams. Each prints one JSON summary line last.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
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
from stream.ingest import Ingest, Overloaded
from stream.pipeline import PipelineSpec
from stream.session import Recognizer


def _tape(
    inputs: list[str], max_files: int = 400, pause: float = 1.5, seed: int = 0, rate: int | None = None
) -> tuple[np.ndarray, int]:
    """What every stream replays: the inputs' audio (most common rate, mono; resampled to `rate` if given) as
    utterances of 3-8 clips with short gaps, separated by `pause` seconds of silence, so endpointing closes each
    utterance as in dictation or a call (a stream that never pauses keeps one 20 s utterance open: see
    BENCHMARKS.md). A stream at the model's rate takes failover snapshots; a resampled one cannot."""
    import soundfile as sf

    paths = expand_inputs(inputs).paths[:max_files]
    clips: dict[int, list[np.ndarray]] = {}
    for p in paths:
        try:
            audio, sr = sf.read(p, dtype="float32", always_2d=True)
        except Exception:
            continue
        clips.setdefault(sr, []).append(audio.mean(axis=1))
    if not clips:
        raise SystemExit("rnnstream: error: bench needs readable audio inputs")
    sr = max(clips, key=lambda r: len(clips[r]))
    rng = np.random.default_rng(seed)
    parts, i, pool = [], 0, clips[sr]
    while i < len(pool):
        for clip in pool[i : i + rng.integers(3, 9)]:
            parts += [clip, np.zeros(int(rng.uniform(0.1, 0.4) * sr), np.float32)]
            i += 1
        parts.append(np.zeros(int(pause * sr), np.float32))
    tape = np.concatenate(parts)
    if rate is not None and rate != sr:
        import soxr

        tape = soxr.resample(tape, sr, rate).astype(np.float32)
    return (np.clip(tape, -1, 1) * 32767).astype(np.int16), rate or sr


def _spec(args: argparse.Namespace) -> tuple[Checkpoint, PipelineSpec]:
    """The model, loaded once (on the CPU: the driver reads its config, Ray ships the file), and the stages' spec."""
    checkpoint, options = checkpoint_and_options(args)
    # (`offline` has no --kill: a standby is for the streams benchmark's killed actor only)
    standby = getattr(args, "kill", None) is not None
    spec = PipelineSpec(device=args.compute_device, options=options, decoders=args.decoders, standby=standby)
    return checkpoint, spec


def _pipeline(args: argparse.Namespace):
    """(pipeline, close) for Ray on this node or for one process."""
    import torch

    checkpoint, spec = _spec(args)
    if getattr(args, "processes", None):
        from stream.process import ProcessPipeline

        pipeline = ProcessPipeline(checkpoint, spec, args.threads, args.processes)
        return pipeline, pipeline.close
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


def _mode(args: argparse.Namespace) -> str:
    return f"processes x{args.processes}" if getattr(args, "processes", None) else "in-process" if args.in_process else "ray"


def _roles(args: argparse.Namespace) -> list[str]:
    if getattr(args, "processes", None):
        return ["driver", *(f"child{i}" for i in range(args.processes))]
    if args.in_process:
        return ["process"]
    roles = ["features", "model", *(f"decoder{i}" for i in range(args.decoders))]
    return ["driver", *roles, *(f"standby {r}" for r in roles if args.kill)]


def _rss_mb(pids: list[int]) -> float:
    import ray  # noqa: F401  (Ray ships psutil and puts it on the path: first)

    # isort: split
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def _kill(pipeline, what: str) -> None:
    if what == "child":  # kill -9 of a pipeline process (--processes)
        os.kill(pipeline.pids()[-1], signal.SIGKILL)
        return
    import ray

    ray.kill(pipeline.model if what == "model" else pipeline.decoders[-1])


class _Feed:
    """The streams' schedule: stream i opens at its start (staggered over one chunk, or `ramp` seconds) and then
    sends a chunk every chunk; a stream refused at its opening (Overloaded) is counted and never sent."""

    def __init__(self, ingest: Ingest, n: int, t0: float, chunk_s: float, ramp: float, chunks: int):
        self.ingest, self.n, self.chunks = ingest, n, chunks
        self.keys: list = [None] * n
        self.sent = np.zeros(n, int)
        self.due = t0 + (ramp * np.arange(n) / n if ramp else chunk_s * np.arange(n) / n) + chunk_s
        self.chunk_s = chunk_s
        self.refused = 0

    def push(self, now: float, audio) -> None:
        for i in np.nonzero((self.due <= now) & (self.sent < self.chunks))[0]:
            if self.keys[i] is None:
                try:
                    self.keys[i] = self.ingest.open(audio.rate)
                except Overloaded:
                    self.refused += 1
                    self.sent[i] = self.chunks
                    continue
            self.ingest.push(self.keys[i], audio.chunk(i, self.sent[i]), mark=self.due[i])
            self.sent[i] += 1
            self.due[i] += self.chunk_s
            if self.sent[i] == self.chunks:
                self.ingest.finish(self.keys[i])

    @property
    def feeding(self) -> bool:
        return bool((self.sent < self.chunks).any())


class _Tape:
    def __init__(self, tape: np.ndarray, rate: int, n: int, size: int, chunks: int):
        self.rate, self.size = rate, size
        self.offsets = (np.arange(n) * 7919 * size) % len(tape)  # every stream starts somewhere else on the tape
        self.tape = np.concatenate([tape, tape[: size * (chunks + 1)]])

    def chunk(self, i: int, k: int) -> np.ndarray:
        start = self.offsets[i] + k * self.size
        return self.tape[start : start + self.size]


def _since_kill(ingest: Ingest, keys: list, killed: float, after: dict) -> None:
    """Each stream's first event after the kill: the time failover took it."""
    for i, key in enumerate(keys):
        if key is not None and i not in after and ingest.status(key) is not None and ingest.take(key)[0]:
            after[i] = time.monotonic() - killed


def bench_streams(args: argparse.Namespace) -> dict:
    tape, rate = _tape(args.inputs, pause=args.pause, rate=args.rate)
    n, chunk_s, tick_s = args.streams, args.chunk_ms / 1000, args.tick_ms / 1000
    chunks_per_stream = max(1, round(args.seconds / chunk_s))
    audio = _Tape(tape, rate, n, round(chunk_s * rate), chunks_per_stream)

    pipeline, close = _pipeline(args)
    if args.kill and not getattr(args, "processes", None):
        pipeline.warm()
    pids = [os.getpid(), *pipeline.pids()]
    cpu = _cpu(pids)
    ingest = Ingest(
        pipeline, min_chunk=min(0.1, chunk_s), max_chunk=max(chunk_s, 0.1), window=args.window, track_latency=True,
        failover=args.failover == "on", admit_latency=args.admit_latency,
    )
    t0 = time.monotonic() + 0.5
    feed = _Feed(ingest, n, t0, chunk_s, args.ramp, chunks_per_stream)
    cpu0 = time.process_time()
    killed, after, peak_mb, next_rss = None, {}, _rss_mb(pids), t0
    try:
        next_tick = t0
        while feed.feeding or ingest.inflight:
            now = time.monotonic()
            feed.push(now, audio)
            if args.kill and killed is None and now >= t0 + args.kill_at:
                for key in feed.keys:  # what came before the kill is not what failover brought
                    if key is not None and ingest.status(key) is not None:
                        ingest.take(key)
                killed = time.monotonic()
                _kill(pipeline, args.kill)
            ingest.submit(block=True)
            next_tick += tick_s
            while True:  # deliver results until the next tick is due
                left = next_tick - time.monotonic()
                if left <= 0 or not ingest.inflight:
                    break
                ingest.collect(timeout=left)
            if killed is not None and len(after) < n:
                _since_kill(ingest, feed.keys, killed, after)
            if now >= next_rss:
                peak_mb, next_rss = max(peak_mb, _rss_mb([os.getpid(), *pipeline.pids()])), now + 1.0
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
    kept = n - feed.refused
    out = {
        "mode": _mode(args),
        "streams": n,
        "rate": rate,
        "seconds": args.seconds,
        "chunk_ms": args.chunk_ms,
        "tick_ms": args.tick_ms,
        "failover": ingest.failover,
        "p50_ms": round(p50, 1),
        "p95_ms": round(p95, 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(float(warm.max()) * 1000, 1),
        "latency_share": _histogram(warm * 1000),
        "realtime_held": bool(p95 <= args.budget_ms),
        "refused": feed.refused,
        "audio_seconds": round(kept * chunks_per_stream * chunk_s, 1),
        "wall_seconds": round(wall, 2),
        "rtfx": round(kept * chunks_per_stream * chunk_s / wall, 1),
        "lstm_calls": stats.get("lstm_calls"),
        "ticks": ingest.stats.ticks,
        "blocked": ingest.stats.blocked,
        "dropped_seconds": ingest.stats.dropped_seconds,
        "snapshots": ingest.stats.snapshots,
        "snapshot_bytes_mean": round(ingest.stats.snapshot_bytes / max(ingest.stats.snapshots, 1)),
        "peak_rss_mb": round(peak_mb),
        "driver_cpu_seconds": round(time.process_time() - cpu0, 2),
        "cpu_seconds": round(cpu.sum(), 2),  # driver and actors: what the work costs, whatever else runs
        "cpu_rtfx": round(kept * chunks_per_stream * chunk_s / cpu.sum(), 1),
        "cpu_by_process": dict(zip(_roles(args), np.round(cpu, 2).tolist())),
        "load_avg": round(os.getloadavg()[0], 2),
    }
    if args.kill:  # (the killed processes' CPU time is gone with them)
        for k in ("cpu_seconds", "cpu_rtfx", "cpu_by_process"):
            out.pop(k)
        gaps = np.array(list(after.values()) or [np.nan])
        out["failover_next_event_s"] = {"p50": round(float(np.percentile(gaps, 50)), 2),
                                        "p95": round(float(np.percentile(gaps, 95)), 2), "streams": len(after)}
        out["recoveries"], out["replayed_seconds"] = ingest.stats.recoveries, round(ingest.stats.replayed_seconds, 1)
    return out


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
    s.add_argument("--processes", type=positive_int, help="the stages in this many child processes (serve's default "
                   "pipeline, stream.process), not Ray; each has a share of the streams")
    s.add_argument("--seconds", type=float, default=20.0)
    s.add_argument("--chunk-ms", type=positive_int, default=160)
    s.add_argument("--tick-ms", type=positive_int, default=40, help="how often the ingest sends a tick")
    s.add_argument("--window", type=positive_int, default=16, help="ticks in flight at most")
    s.add_argument("--warmup", type=float, default=2.0, help="seconds of results left out of the percentiles")
    s.add_argument("--budget-ms", type=float, default=300.0)
    s.add_argument("--pause", type=float, default=1.5, help="seconds of silence between the replayed utterances")
    s.add_argument("--rate", type=positive_int, help="resample the tape to this rate (16000: streams take snapshots)")
    s.add_argument("--failover", choices=["on", "off"], default="on", help="keep what replays streams (default on)")
    s.add_argument("--kill", choices=["model", "decoder", "child"],
                   help="ray.kill this actor at --kill-at (a warm standby takes over); child: kill -9 a --processes child")
    s.add_argument("--kill-at", type=float, default=10.0, help="seconds after the start (default 10)")
    s.add_argument("--ramp", type=float, default=0.0, help="open the streams over this many seconds (default: one chunk)")
    s.add_argument("--admit-latency", type=float, help="refuse new streams while the pipeline lags more (seconds)")
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
