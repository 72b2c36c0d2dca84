"""Per-chunk cost of the in-process recognizer: one stream, and many streams batched, on this CPU.

    python -m tools.bench_chunk [--model digits] [--streams 256] [--threads 1]

Prints a JSON line last with the figures BENCHMARKS.md reports: per-chunk time (features, model,
decoding) for one stream and for N streams stepped in one batched call (this thread's CPU time: on a host shared
with trainings and tests, wall time measured the neighbours; `--clock wall` for that), the model's FLOPs per second of
audio, and this machine's measured fp32 matmul GFLOP/s, so the distance from the arithmetic limit shows. Also the
function calls (Python functions and builtins, as cProfile counts them) each stage makes per tick, with one stream and
with N, and so per stream: a count the load on the host cannot move, and what "O(1) Python per tick" is about.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import time

import numpy as np
import torch

from stream.messages import Chunk
from stream.pipeline import PipelineSpec
from stream.session import Recognizer
from tools.digits_data import connected_utterance, fsdd_clips

CHUNK_MS = 160


def matmul_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def _audio(n: int, rate: int) -> list[np.ndarray]:
    """n real connected-digit utterances (FSDD voices), at least 10 s each."""
    clips = fsdd_clips()
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        parts, total = [], 0
        while total < 10 * rate:
            x, _ = connected_utterance(clips, rng, rate, 8, 16)
            parts.append(x)
            total += len(x)
        out.append(np.concatenate(parts))
    return out


def _percentiles(times: list[float]) -> dict:
    ms = np.array(times) * 1000
    return {"median_ms": round(float(np.median(ms)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def ticks(recognizer: Recognizer, audios: list[np.ndarray], rate: int, clock=time.thread_time) -> dict:
    """Every stream's next 160 ms chunk per tick through the stages of a LocalPipeline (what a Session does with
    one stream), each stage timed: features (one log-mel call), model (one batched LSTM call), decoding."""
    size = rate * CHUNK_MS // 1000
    n = len(audios)
    pipeline = recognizer.pipeline(PipelineSpec(slots=n))
    feat_t, model_t, dec_t = [], [], []
    count = min(len(a) for a in audios) // size
    for tick in range(count):
        chunks = {k: Chunk(a[tick * size : (tick + 1) * size], rate=rate if tick == 0 else None) for k, a in enumerate(audios)}
        t0 = clock()
        frames = pipeline.features.process(chunks)
        t1 = clock()
        request = pipeline.model.submit(frames)
        pipeline.model.tick()
        probs = pipeline.model.result(request)
        t2 = clock()
        pipeline.decoder.process(probs)
        t3 = clock()
        feat_t.append(t1 - t0)
        model_t.append(t2 - t1)
        dec_t.append(t3 - t2)
    total = [a + b + c for a, b, c in zip(feat_t, model_t, dec_t)]
    return {
        "streams": n,
        "tick": _percentiles(total),
        "features": _percentiles(feat_t),
        "model": _percentiles(model_t),
        "decoding": _percentiles(dec_t),
        "ticks": count,
        "realtime_streams_per_core": round(n * CHUNK_MS / 1000 / float(np.median(total)), 1),
    }


def calls(recognizer: Recognizer, audios: list[np.ndarray], rate: int, count: int = 20) -> dict:
    """Function calls per tick of each stage (mean over `count` ticks after the first), as cProfile counts them."""
    size = rate * CHUNK_MS // 1000
    pipeline = recognizer.pipeline(PipelineSpec(slots=len(audios)))
    stages = {"features": cProfile.Profile(), "model": cProfile.Profile(), "decoding": cProfile.Profile()}
    for tick in range(count + 1):
        chunks = {k: Chunk(a[tick * size : (tick + 1) * size], rate=rate if tick == 0 else None) for k, a in enumerate(audios)}
        counted = stages if tick else {name: contextlib.nullcontext() for name in stages}  # (the first opens the streams)
        with counted["features"]:
            frames = pipeline.features.process(chunks)
        with counted["model"]:
            request = pipeline.model.submit(frames)
            pipeline.model.tick()
            probs = pipeline.model.result(request)
        with counted["decoding"]:
            pipeline.decoder.process(probs)
    return {name: round(pstats.Stats(prof).total_calls / count) for name, prof in stages.items()}


def _decoding(recognizer: Recognizer) -> str:
    options = recognizer.options
    if not options.beam:
        return "greedy"
    return f"beam {options.beam}" + (" + lexicon" if options.lexicon or options.words else "")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits")
    p.add_argument("--streams", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--beam", type=int, help="0: greedy (default: the model's recommended decoding)")
    p.add_argument("--clock", choices=["thread", "wall"], default="thread", help="what a stage's time is (default: "
                   "this thread's CPU time)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    recognizer = Recognizer.load(args.model, device="cpu")
    if args.beam is not None:
        recognizer = recognizer.with_options(beam=args.beam)
    rate = recognizer.sample_rate
    audios = _audio(args.streams, rate)
    steps_per_second = 1 / recognizer.step_seconds
    model_flops = recognizer.model.flops_per_step() * steps_per_second
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    single = ticks(recognizer, audios[:1], rate, clock)
    many = ticks(recognizer, audios, rate, clock)
    one_calls, many_calls = calls(recognizer, audios[:1], rate), calls(recognizer, audios, rate)
    per_stream = {k: round((many_calls[k] - one_calls[k]) / max(args.streams - 1, 1), 1) for k in one_calls}
    peak = matmul_gflops()
    steps_per_tick = CHUNK_MS / 1000 * steps_per_second
    achieved = args.streams * steps_per_tick * recognizer.model.flops_per_step() / (many["model"]["median_ms"] / 1000) / 1e9
    result = {
        "model": args.model,
        "threads": args.threads,
        "clock": args.clock,
        "decoding": _decoding(recognizer),
        "chunk_ms": CHUNK_MS,
        "model_mflops_per_audio_second": round(model_flops / 1e6, 2),
        "matmul_gflops": round(peak, 1),
        "one_stream": single,
        "batched": many,
        "batched_model_gflops": round(achieved, 1),
        "batched_model_fraction_of_matmul_peak": round(achieved / peak, 3),
        "calls_per_tick": {"one_stream": one_calls, "batched": many_calls, "per_stream": per_stream},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
