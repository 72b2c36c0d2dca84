"""Load on `rnnstream serve`: N concurrent Vosk clients over WebSocket at 1x real time, on 127.0.0.1.

    python -m tools.bench_serve INPUTS... --clients N [--seconds S] [--ray] [--message-ms 100]
    python -m tools.bench_serve --pen --clients N [--seconds S] [--ray]      # writers on /pen (handwriting)

Starts `rnnstream serve` in a process of its own (its recognizer in a child process, in a thread with
`--pipeline thread`, or on Ray with --ray), then N clients in this one, each
replaying the tape of tools.bench_pipeline (real recordings as utterances with 1.5 s pauses) from its own
offset, in `--message-ms` messages at 1x speed with staggered starts, then eof. Measured at the client, per
answer (the Vosk protocol answers each message, in order):
- partial_ms: a message sent -> its partial answer received;
- result_ms: a message sent -> its answer received, for answers that are results (an utterance ended);
- final_after_speech_ms: the audio of an utterance's last word sent -> its result received; it includes the
  endpoint rule's trailing silence (1.2 s after speech), which is the protocol's, not the server's, delay;
- eof_final_ms: eof sent -> the last result received.
The first `--warmup` seconds are left out. Traffic goes to 127.0.0.1 only, bounded in clients and seconds.
Prints one JSON summary line last. `python -m tools.bench_pipeline streams` is the same streams without the
network, for the ratio. `--pen`: pen clients at `/pen` instead (the server's default handwriting model beside the
speech model), each replaying held-out UNIPEN words at 100 points a second (tools.bench_pen's tape) from its own
offset, `--message-ms` of points a message, sent at the ink's own pace; "after speech" is then the word's last
point sent -> its result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stream.cli import SERVE_PROCESSES, positive_int
from tools.bench_pipeline import _tape

REPO = Path(__file__).resolve().parents[1]


async def _echo(port: int) -> None:
    """--echo: a server that answers every message at once with an empty partial (eof: an empty result), no
    recognizer: what the network, the protocol and these clients cost alone on this machine."""
    from websockets.asyncio.server import serve

    async def handle(ws) -> None:
        async for m in ws:
            if isinstance(m, str) and "eof" in m:
                await ws.send('{"text": ""}')
                return
            if isinstance(m, bytes):
                await ws.send('{"partial": ""}')

    async with serve(handle, "127.0.0.1", port, compression=None, max_size=None) as server:
        print(f"echo serving ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", file=sys.stderr, flush=True)
        await asyncio.Future()


def _start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    if args.echo:
        cmd = [sys.executable, "-c", "import asyncio, tools.bench_serve as b; asyncio.run(b._echo(0))"]
    else:
        cmd = [sys.executable, "-m", "stream.cli", "serve", "--port", "0", "--model", args.model, "--idle-timeout", "0",
               "--max-clients", str(args.clients + 10), "--tick-ms", str(args.tick_ms), "--window", str(args.window)]
        if args.beam is not None:
            cmd += ["--beam", str(args.beam)]
        if args.ray:
            cmd += ["--ray"] + (["--address", args.address] if args.address else [])
        else:
            cmd += ["--pipeline", args.pipeline, "--processes", str(args.processes)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise SystemExit("bench_serve: the server exited before serving")
        if m := re.search(r"ws://[\d.]+:\d+", line):
            # Keep reading its stderr (a full pipe would stop the server), and show it.
            threading.Thread(target=lambda: [sys.stderr.write(x) for x in proc.stderr], daemon=True).start()
            return proc, m.group(0)
    proc.kill()
    raise SystemExit("bench_serve: the server did not start")


def _audio_messages(tape: np.ndarray, rate: int, offset: int, args) -> tuple[int, Callable]:
    """-> (messages, message i -> (seconds after the start it is due, payload)): PCM at 1x speed."""
    size = rate * args.message_ms // 1000

    def message(i: int) -> tuple[float, bytes]:
        j = (offset + i * size) % (len(tape) - size)
        return i * args.message_ms / 1000, tape[j : j + size].tobytes()

    return max(1, int(args.seconds * 1000 // args.message_ms)), message


def _pen_messages(tape: np.ndarray, offset: int, args) -> tuple[int, Callable]:
    """The same for points: `--message-ms` of points a message, due at the ink time of its last point."""
    from tools.bench_pen import RATE

    size = max(1, RATE * args.message_ms // 1000)
    rows = tape[offset : offset + int(args.seconds * RATE)].copy()
    rows[:, 2] -= rows[0, 2]

    def message(i: int) -> tuple[float, str]:
        part = rows[i * size : (i + 1) * size]
        return float(part[-1, 2]), json.dumps([{"x": x, "y": y, "t": round(t, 4), "pen": "down" if p > 0.5 else "up"}
                                               for x, y, t, p in part.tolist()])

    return -(-len(rows) // size), message


async def _client(url: str, messages: tuple[int, Callable], config: dict, start: float, args, out: dict) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    n, message = messages
    sent: list[float] = []
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    try:
        async with connect(url, max_size=None, open_timeout=60, close_timeout=30) as ws:
            await ws.send(json.dumps({"config": config}))
            t0 = time.monotonic()
            eof_at: list[float] = []

            async def read() -> None:
                k, last = 0, None
                async for m in ws:
                    now = time.monotonic()
                    a = json.loads(m)
                    if k < len(sent) and not eof_at:
                        kind = "partial" if "partial" in a else "result"
                        if sent[k] - out["t0"] >= args.warmup:
                            out[kind].append(now - sent[k])
                        k += 1
                    if a.get("result"):
                        end = t0 + a["result"][-1]["end"]
                        if end - out["t0"] >= args.warmup:
                            out["after_speech"].append(now - end)
                    if eof_at and "text" in a:
                        last = now
                if eof_at and last is not None:
                    out["eof"].append(last - eof_at[0])

            reader = asyncio.create_task(read())
            for i in range(n):
                due, payload = message(i)
                await asyncio.sleep(max(0.0, t0 + due - time.monotonic()))
                sent.append(time.monotonic())
                await ws.send(payload)
            eof_at.append(time.monotonic())
            await ws.send('{"eof" : 1}')
            await asyncio.wait_for(reader, 120)
            out["codes"].append(ws.close_code)
            out["messages"] += n
    except (ConnectionClosed, OSError, TimeoutError) as e:
        out["failed"].append(type(e).__name__)


def _pct(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    a = np.array(xs) * 1000
    return {"n": len(a), **{f"p{q}": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)},
            "max": round(float(a.max()), 1)}


def _scrape(url: str, echo: bool = False) -> dict:
    text = "" if echo else urllib.request.urlopen(url.replace("ws://", "http://") + "/metrics", timeout=30).read().decode()
    pick = {}
    for name in ("dropped_audio_seconds_total", "tick_streams_sum", "tick_streams_count", "real_time_factor",
                 "ticks_total", "audio_seconds_total"):
        m = re.search(rf"^rnnstream_serve_{name} (\S+)", text, re.M)
        pick[name] = float(m.group(1)) if m else None
    for le, n in re.findall(r'^rnnstream_serve_partial_latency_seconds_bucket\{le="([^"]+)"\} (\S+)', text, re.M):
        pick[f"partial_le_{le}"] = float(n)
    return pick


def _server_partials(before: dict, after: dict) -> dict:
    """The server's own part of the partials' latency (arrival of a message -> its answer queued), from its
    histogram: the upper bound of the bucket holding p50 / p95, so a client's figure can be split into the server's
    and the rest (the sockets, the event loops, this process)."""
    cum = [(float(k[len("partial_le_"):]), after[k] - before.get(k, 0.0)) for k in after if k.startswith("partial_le_")]
    cum.sort()
    total = cum[-1][1] if cum else 0.0
    if not total:
        return {}
    return {f"p{q}_le_ms": next((round(le * 1000) if le != float("inf") else None for le, n in cum if n >= total * q / 100), None)
            for q in (50, 95)}


def _clients(args) -> list[tuple[tuple[int, Callable], dict]]:
    """Each client's messages and config."""
    if args.pen:
        from tools.bench_pen import RATE, tape

        tapes = [tape(args.seconds + 120, seed) for seed in range(4)]
        room = [len(t) - int(args.seconds * RATE) for t in tapes]
        return [(_pen_messages(tapes[i % 4], i * 7919 % room[i % 4], args), {"words": True}) for i in range(args.clients)]
    tape, rate = _tape(args.inputs, pause=args.pause)
    size = rate * args.message_ms // 1000
    offsets = (np.arange(args.clients) * 7919 * size) % (len(tape) - size)
    return [(_audio_messages(tape, rate, int(o), args), {"sample_rate": rate}) for o in offsets]


async def _run(args, url: str) -> dict:
    clients = _clients(args)
    out = {"partial": [], "result": [], "after_speech": [], "eof": [], "codes": [], "failed": [], "messages": 0,
           "t0": time.monotonic() + 1.0}
    # Starts staggered over one message (as bench_pipeline), connections opened over the first second.
    starts = out["t0"] + np.arange(args.clients) / args.clients * max(1.0, args.message_ms / 1000)
    metrics_before = _scrape(url, args.echo)
    target = url + "/pen" if args.pen else url
    await asyncio.gather(*(_client(target, m, config, s, args, out) for (m, config), s in zip(clients, starts)))
    after = _scrape(url, args.echo)
    ticks = (after["tick_streams_count"] or 0) - (metrics_before["tick_streams_count"] or 0)
    batch = ((after["tick_streams_sum"] or 0) - (metrics_before["tick_streams_sum"] or 0)) / max(ticks, 1)
    return {
        "mode": "echo" if args.echo else "ray" if args.ray else f"pipeline {args.pipeline}"
                + (f" x{args.processes}" if args.pipeline == "process" and not args.ray else ""),
        "input": "pen" if args.pen else "audio",
        "clients": args.clients,
        "seconds": args.seconds,
        "message_ms": args.message_ms,
        "completed": len(out["codes"]),
        "normal_closes": sum(c == 1000 for c in out["codes"]),
        "failed": len(out["failed"]),
        "partial_ms": _pct(out["partial"]),
        "result_ms": _pct(out["result"]),
        "final_after_speech_ms": _pct(out["after_speech"]),
        "eof_final_ms": _pct(out["eof"]),
        "realtime_held": bool(out["partial"] and np.percentile(out["partial"], 95) <= args.budget_ms / 1000),
        "server_ticks": int(ticks),
        "streams_per_tick": round(batch, 1),
        "server_partial": _server_partials(metrics_before, after),
        "dropped_audio_seconds": after["dropped_audio_seconds_total"],
        "load_avg": round(os.getloadavg()[0], 2),
    }


def build_parser() -> argparse.ArgumentParser:
    from stream.cli import add_model_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="audio files, directories, globs or manifests")
    p.add_argument("--pen", action="store_true", help="pen clients on /pen (held-out UNIPEN words) instead of audio")
    p.add_argument("--clients", type=positive_int, default=100)
    p.add_argument("--seconds", type=float, default=20.0, help="audio each client sends (default 20)")
    p.add_argument("--message-ms", type=positive_int, default=100, help="audio per message (default 100)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds left out of the percentiles")
    p.add_argument("--budget-ms", type=float, default=300.0)
    p.add_argument("--pause", type=float, default=1.5)
    p.add_argument("--ray", action="store_true")
    p.add_argument("--pipeline", choices=("process", "thread"), default="process", help="without --ray: serve's --pipeline")
    p.add_argument("--echo", action="store_true", help="no recognizer: a server answering at once (the network's cost)")
    p.add_argument("--address")
    p.add_argument("--tick-ms", type=positive_int, default=40)
    p.add_argument("--window", type=positive_int, default=4, help="serve's --window: ticks in flight at most")
    p.add_argument("--processes", type=positive_int, default=SERVE_PROCESSES, help="with --pipeline process: serve's --processes")
    p.add_argument("--threads", type=positive_int, default=1, help="the recognizer's torch threads (OMP_NUM_THREADS; default 1)")
    add_model_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.inputs and not args.pen:
        parser.error("audio INPUTs are needed (or --pen)")
    proc, url = _start_server(args)
    try:
        summary = asyncio.run(_run(args, url))
    finally:
        proc.terminate()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
