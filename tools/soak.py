"""Soak `rnnstream serve`: N abusive clients beside M honest ones for S seconds, against a run without abusers.

    python -m tools.soak [--abusers 20] [--honest 20] [--seconds 30]

Starts `rnnstream serve` (digits on /, handwriting on /pen, a token, the default child processes) on 127.0.0.1
twice, each time fresh: once with the honest clients alone, once with the abusers beside them. Honest clients
stream the example recording (examples/phone-number-8k.wav, with 1.5 s pauses, repeated for S seconds) at 1x in
100 ms messages with the token, read every answer, then eof. Abusers cycle through the inputs of issue 29
(100,000-deep JSON on / and /pen and inside a config, a phrase_list past its bound, text and frames past theirs,
non-ASCII tokens, 10,001 pen points, a pen time gap of 100,000 s, a client that never reads, one that vanishes
mid-stream, one idling with the largest phrase_list allowed, bad HTTP), reconnecting until S seconds are over.
(1013, the overload policy refusing a new stream while the recognizer lags, is a documented answer where a stream
opens.) Checks, printed as a table:
- texts: every honest client's finals equal the run without abusers;
- p95: the honest clients' partial latency (a message sent -> its answer) within 1.5x that run's;
- memory: the server's peak RSS (its process and children) within the run without abusers' peak plus the
  documented bound per connection (`stream.serve.server.connection_bound`) for every abuser;
- outcomes: each abuse got its documented answer; the server's log holds no traceback.
Loopback only, bounded in clients (at most 200 of each) and seconds (at most 600). Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "phone-number-8k.wav"
TOKEN = "soak-token"
DEEP = "[" * 100_000 + "]" * 100_000
HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\n")


class Server:
    """`rnnstream serve` in a process of its own; its stderr kept (tracebacks are counted); RSS sampled."""

    def __init__(self, clients: int):
        self.token_file = tempfile.NamedTemporaryFile("w", suffix=".token", delete=False)
        self.token_file.write(TOKEN)
        self.token_file.close()
        cmd = [sys.executable, "-m", "stream.cli", "serve", "--port", "0", "--model", "digits", "--token-file",
               self.token_file.name, "--idle-timeout", "10", "--max-clients", str(clients)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        self.log: list[str] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise SystemExit("soak: the server exited before serving")
            if m := re.search(r"ws://[\d.]+:(\d+)", line):
                self.url, self.port = m.group(0), int(m.group(1))
                break
        else:
            raise SystemExit("soak: the server did not start")
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        self.peak = self.rss()
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def pids(self) -> list[int]:
        """The server and every process under it (its pipeline children)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue  # it ended meanwhile
            found.append(pid)
        return found

    def rss(self) -> int:
        return sum(_proc(pid, "rss") for pid in self.pids())

    def cpu(self) -> float:
        """CPU seconds the server and its children have used so far."""
        return sum(_proc(pid, "cpu") for pid in self.pids())

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, self.rss())

    def close(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.unlink(self.token_file.name)


def _proc(pid: int, what: str) -> float:
    try:
        if what == "rss":
            return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, AttributeError, IndexError):
        return 0.0


# ---------------------------------------------------------------------------------------------
# honest clients


def tape(seconds: float) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(EXAMPLE, dtype="int16")
    one = np.concatenate([audio, np.zeros(int(1.5 * rate), np.int16)])
    return np.tile(one, int(np.ceil(seconds * rate / len(one))))[: int(seconds * rate)], rate


async def honest(url: str, audio: np.ndarray, rate: int, start: float, warmup: float) -> dict:
    from websockets.asyncio.client import connect

    await asyncio.sleep(max(0.0, start - time.monotonic()))
    sent: list[float] = []
    latencies: list[float] = []
    texts: list[str] = []
    n = rate // 10
    async with connect(url + f"/?token={TOKEN}", max_size=None, open_timeout=60, close_timeout=30) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": rate}}))
        t0 = time.monotonic()

        async def read() -> None:
            k = 0
            async for m in ws:
                a, now = json.loads(m), time.monotonic()
                if k < len(sent) and "partial" in a and sent[k] - t0 >= warmup:
                    latencies.append(now - sent[k])
                k += 1
                if a.get("text"):
                    texts.append(a["text"])

        reader = asyncio.create_task(read())
        for i in range(0, len(audio), n):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            sent.append(time.monotonic())
            await ws.send(audio[i : i + n].tobytes())
        await ws.send('{"eof" : 1}')
        await asyncio.wait_for(reader, 120)
    return {"texts": texts, "latencies": latencies, "code": ws.close_code}


# ---------------------------------------------------------------------------------------------
# abusers: each kind -> (what it does, the outcomes its documentation allows)


async def _ws(url: str, messages: list, headers: dict | None = None, wait: bool = True) -> str:
    """Send `messages`, read to the close; -> the close code as a string (or what went wrong)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    headers = {"Authorization": f"Bearer {TOKEN}"} if headers is None else headers
    try:
        ws = await connect(url, additional_headers=headers, max_size=None, open_timeout=30, close_timeout=10)
    except (OSError, TimeoutError) as e:
        return type(e).__name__
    try:
        for m in messages:
            await ws.send(m)
        if not wait:
            ws.transport.abort()  # gone without a close: the server must free its slot
            return "gone"
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    except (OSError, TimeoutError) as e:
        return type(e).__name__
    await ws.close()
    return str(ws.close_code)


def _http(port: int, path: str, method: str = "GET") -> str:
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method), timeout=30) as r:
            return str(r.status)
    except urllib.error.HTTPError as e:
        return str(e.code)
    except OSError as e:
        return type(e).__name__


def _raw(port: int, request: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        head = s.recv(64)
    return head.split(b" ")[1].decode() if head.count(b" ") else "nothing"


def _non_reader(port: int, seconds: float) -> str:
    """A client that never reads: small receive window, 10 ms messages at 1x, until the server cuts it (its
    answers may as well all fit in the kernel's socket buffers: ~17 bytes each)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.settimeout(30)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(HANDSHAKE + f"Authorization: Bearer {TOKEN}\r\nUpgrade: websocket\r\n\r\n".encode())
        sock.recv(4096)
        frame = b"\x82\xfe\x00\xa0" + b"\x00" * 4 + bytes(160)  # 10 ms at 8 kHz, masked with a zero key
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            sock.sendall(frame)
            time.sleep(0.01)
        return "still open"
    except OSError:
        return "cut"
    finally:
        sock.close()


def _points(n: int, gap: bool = False) -> str:
    if gap:  # issue 29 #1: one point 100,000 s later
        return json.dumps([{"x": 0, "y": 0, "t": 0}, {"x": 5, "y": 5, "t": 0.05}, {"x": 6, "y": 9, "t": 100000}])
    return json.dumps([{"x": i % 7, "y": i % 5} for i in range(n)])


def abuses(url: str, port: int) -> dict:
    """Each abuse's coroutine and the outcomes its documentation allows; payloads made once (the abusers' own CPU
    competes with the server's on this machine)."""
    config = lambda **c: json.dumps({"config": {"sample_rate": 8000, **c}})
    phrases = config(phrase_list=["x" * 49] * 1000)  # the largest phrase_list allowed (50,000 characters)
    speech, many, huge = tape(1.0)[0].tobytes(), config(phrase_list=["a"] * 1001), config(phrase_list=["seven"] * 100_000)
    deep_config, points, gap = '{"config": ' + "[" * 50_000 + "]" * 50_000 + "}", _points(10_001), _points(3, gap=True)
    frame, flood = bytes(2 << 20), [config()] + [bytes(2)] * 20_000 + ['{"eof" : 1}']
    return {
        "deep JSON on /": (lambda: _ws(url, [DEEP]), {"1007"}),
        "deep JSON on /pen": (lambda: _ws(url + "/pen", [DEEP]), {"1007"}),
        "deep JSON in a config": (lambda: _ws(url, [deep_config]), {"1007"}),
        "1,001 phrases": (lambda: _ws(url, [many]), {"1007"}),
        "100,000 phrases": (lambda: _ws(url, [huge]), {"1009"}),  # 900 KB
        "2 MiB frame": (lambda: _ws(url, [frame]), {"1009", "ConnectionResetError", "BrokenPipeError"}),
        "odd bytes": (lambda: _ws(url, [bytes(801)]), {"1007"}),
        "token %C3%A9": (lambda: _ws(url + "/?token=%C3%A9", [], headers={}), {"1008"}),
        "Latin-1 Bearer": (lambda: _ws(url, [], headers={"Authorization": "Bearer caf\xe9"}), {"1008"}),
        "10,001 pen points": (lambda: _ws(url + "/pen", [points]), {"1009"}),
        "pen gap 100,000 s": (lambda: _ws(url + "/pen", [gap, '{"eof" : 1}']), {"1000", "1013"}),
        "never reads": (lambda: asyncio.to_thread(_non_reader, port, 15.0), {"cut", "still open"}),
        "1-sample messages, full speed": (lambda: _ws(url, flood), {"1000", "1013"}),
        "vanishes mid-stream": (lambda: _ws(url, [config(), speech], wait=False), {"gone"}),
        "idle, 1,000 phrases": (lambda: _ws(url, [phrases]), {"1001"}),
        "POST /metrics": (lambda: asyncio.to_thread(_http, port, "/metrics", "POST"), {"405"}),
        "/metrics, no token": (lambda: asyncio.to_thread(_http, port, "/metrics"), {"401"}),
        "two Upgrade headers": (lambda: asyncio.to_thread(_raw, port, HANDSHAKE + b"Upgrade: websocket\r\n" * 2 + b"\r\n"),
                                {"400"}),
    }


async def abuser(kind: str, act, until: float, pause: float, out: Counter) -> None:
    while time.monotonic() < until:
        try:
            got = await act()
        except Exception as e:  # what this client met, counted (unexpected, so the check fails)
            got = f"client {type(e).__name__}"
        out[(kind, got)] += 1
        await asyncio.sleep(pause)


# ---------------------------------------------------------------------------------------------


async def _abuse(url: str, port: int, args) -> Counter:
    """The abusers (in a process of their own: their work must not slow the honest clients' own event loop)."""
    kinds = {k: v for k, v in abuses(url, port).items() if not args.only or any(o in k for o in args.only)}
    names, outcomes = list(kinds), Counter()
    until = time.monotonic() + args.seconds
    await asyncio.gather(*(abuser(names[i % len(names)], kinds[names[i % len(names)]][0], until, args.pause, outcomes)
                           for i in range(args.abusers)))
    return outcomes


async def _run(server: Server, args, abusive: bool) -> dict:
    audio, rate = tape(args.seconds)
    t0 = time.monotonic() + 1.0
    proc = None
    if abusive:
        cmd = [sys.executable, "-m", "tools.soak", "--abuse", server.url, "--abusers", str(args.abusers),
               "--seconds", str(args.seconds), "--pause", str(args.pause)] + [f"--only={o}" for o in args.only or []]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, cwd=REPO)
    honest_results = await asyncio.gather(*(honest(server.url, audio, rate, t0 + i / args.honest, args.warmup)
                                            for i in range(args.honest)))
    outcomes: Counter = Counter()
    abusers_cpu = 0.0
    if proc is not None:
        out, _ = await proc.communicate()
        got = json.loads(out.decode().splitlines()[-1])
        abusers_cpu = got.pop("cpu")
        outcomes = Counter({tuple(k.split("\t")): n for k, n in got.items()})
    expected = {k: ok for k, (_, ok) in abuses(server.url, server.port).items()}
    bad = {f"{k}: {got}": n for (k, got), n in outcomes.items() if got not in expected[k]}
    return {"honest": honest_results, "outcomes": outcomes, "unexpected": bad, "abusers_cpu": abusers_cpu}


def _measure(args, abusive: bool) -> dict:
    server = Server(args.honest + args.abusers + 10)
    try:
        idle, cpu = server.rss(), server.cpu()
        run = asyncio.run(_run(server, args, abusive))
        run.update(server_cpu=server.cpu() - cpu)
        time.sleep(1.0)
        run.update(idle_rss=idle, peak_rss=server.peak)
    finally:
        server.close()
    run["tracebacks"] = sum("Traceback" in line for line in server.log)
    lat = [x for h in run["honest"] for x in h["latencies"]]
    run["p95_ms"] = float(np.percentile(lat, 95) * 1000) if lat else float("nan")
    run["codes"] = Counter(h["code"] for h in run["honest"])
    return run


def main(argv: list[str] | None = None) -> int:
    from stream.serve.settings import ServeOptions, connection_bound

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--abusers", type=int, default=20, choices=range(0, 201), metavar="N")
    p.add_argument("--honest", type=int, default=20, choices=range(1, 201), metavar="M")
    p.add_argument("--seconds", type=float, default=30.0, help="how long the abusers keep at it (5-600; default 30)")
    p.add_argument("--pause", type=float, default=0.05, help="seconds each abuser waits between two abuses (default 0.05)")
    p.add_argument("--only", action="append", help="only the abuses whose name holds this (repeatable)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of each honest client left out of the p95")
    p.add_argument("--abuse", metavar="URL", help=argparse.SUPPRESS)  # the abusers' own process
    args = p.parse_args(argv)
    if not 5 <= args.seconds <= 600:
        p.error("--seconds must be 5-600")
    if args.abuse:
        url = args.abuse
        if not re.fullmatch(r"ws://127\.0\.0\.1:\d+", url):
            p.error("--abuse: loopback only")
        outcomes = asyncio.run(_abuse(url, int(url.rsplit(":", 1)[1]), args))
        print(json.dumps({"cpu": time.process_time(), **{f"{k}\t{got}": n for (k, got), n in outcomes.items()}}))
        return 0
    base = _measure(args, abusive=False)
    soak = _measure(args, abusive=True)
    bound = connection_bound(ServeOptions(), 8000) * args.abusers
    checks = {
        "texts as without abusers": [h["texts"] for h in soak["honest"]] == [h["texts"] for h in base["honest"]]
        and all(h["texts"] for h in base["honest"]),
        "honest closes all 1000": set(soak["codes"]) == {1000} and set(base["codes"]) == {1000},
        "partial p95 <= 1.5x": soak["p95_ms"] <= 1.5 * base["p95_ms"],
        "peak RSS <= base + bound": soak["peak_rss"] <= base["peak_rss"] + bound,
        "every abuse answered as documented": not soak["unexpected"],
        "no traceback in the log": soak["tracebacks"] == 0 and base["tracebacks"] == 0,
    }
    mb = 1 / 2**20
    print(f"soak: {args.abusers} abusers (a pause of {args.pause:g} s between abuses), {args.honest} honest clients, "
          f"{args.seconds:g} s, 127.0.0.1, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| run | partial p95 ms | idle RSS MiB | peak RSS MiB | server CPU s | abusers' CPU s | honest closes | "
          "tracebacks |\n|---|---|---|---|---|---|---|---|")
    for name, r in (("honest alone", base), ("with abusers", soak)):
        print(f"| {name} | {r['p95_ms']:.0f} | {r['idle_rss'] * mb:.0f} | {r['peak_rss'] * mb:.0f} | {r['server_cpu']:.0f} | "
              f"{r['abusers_cpu']:.0f} | {dict(r['codes'])} | {r['tracebacks']} |")
    print(f"bound: base peak + {args.abusers} x {connection_bound(ServeOptions(), 8000) * mb:.0f} MiB = "
          f"{(base['peak_rss'] + bound) * mb:.0f} MiB")
    print("| abuse | rounds | outcomes |\n|---|---|---|")
    kinds: dict[str, Counter] = {}
    for (kind, got), n in soak["outcomes"].items():
        kinds.setdefault(kind, Counter())[got] += n
    for kind, c in kinds.items():
        print(f"| {kind} | {sum(c.values())} | {', '.join(f'{g} x{n}' for g, n in c.items())} |")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    if soak["unexpected"]:
        print("unexpected:", json.dumps(soak["unexpected"]))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
