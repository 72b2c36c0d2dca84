"""`rnnstream serve` over real sockets: Vosk clients streaming FSDD connected digits at 1x speed and in one
burst get the finals `transcribe_file` gives for the same audio, in process and on Ray; every bad input closes
its own connection with an error while other clients stream beside it and finish correctly. Pen clients (the
protocol's pen extension) writing held-out UNIPEN words get the finals `transcribe_file` gives for the same ink,
at `/pen` beside the speech model and on every path of a server of the handwriting model alone.

Select with `pytest -m serve`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import FSDD, REPO

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from stream.ingest import IngestOptions  # noqa: E402
from stream.serve.server import ServeOptions, Server  # noqa: E402
from stream.transcribe import transcribe_file  # noqa: E402

pytestmark = pytest.mark.serve
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DROP = IngestOptions(overflow="drop")  # as `rnnstream serve`: the hub never waits for a tick


# ---------------------------------------------------------------------------------------------
# a server in a thread, clients in the test's event loop


class Running:
    """A Server on its own event loop in a thread, on a free port of 127.0.0.1."""

    def __init__(self, shared, pen=None, **options):
        self.server = Server(shared, ServeOptions(port=0, **options), pen)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        assert started.wait(60)
        self.port = self.server.port
        self.url = f"ws://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def handwriting():
    from stream.session import Recognizer

    return Recognizer.load("handwriting", device="cpu")


@pytest.fixture(scope="module")
def served(recognizer, handwriting):
    """The digits model on every path in two pipeline processes (each with a share of the streams), the handwriting
    model at /pen in one: what `rnnstream serve` runs by default on this 2-core machine (the tests that build a
    server of their own below take the thread path)."""
    from stream.pipeline import PipelineSpec
    from stream.process import process_recognizer

    shared = process_recognizer(recognizer.checkpoint, PipelineSpec(options=recognizer.options), processes=2, ingest=DROP)
    pen = process_recognizer(handwriting.checkpoint, PipelineSpec(options=handwriting.options), ingest=DROP)
    running = Running(shared, pen=pen, token=TOKEN)
    yield running
    running.close()
    shared.close()
    pen.close()


def _utterance(name: str, takes, digits: str, pause: float = 0.25) -> np.ndarray:
    """One FSDD speaker's clips joined with pauses, 8 kHz int16, with 1.5 s of silence between two halves so the
    endpoint closes an utterance mid-stream."""
    parts = []
    for i, (d, t) in enumerate(zip(digits, takes)):
        audio, _ = sf.read(FSDD / f"{d}_{name}_{t}.wav", dtype="int16")
        gap = 1.5 if i == len(digits) // 2 - 1 else pause
        parts += [audio, np.zeros(int(8000 * gap), np.int16)]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> list[tuple[Path, np.ndarray]]:
    out = tmp_path_factory.mktemp("serve")
    spec = [("george", range(20, 26), "907134"), ("lucas", range(3, 8), "52816"), ("jackson", range(10, 14), "4620")]
    rec = []
    for name, takes, digits in spec:
        audio = _utterance(name, takes, digits)
        path = out / f"{name}.wav"
        sf.write(path, audio, 8000, subtype="PCM_16")
        rec.append((path, audio))
    return rec


def _reader(ws, answers: list[dict]) -> asyncio.Task:
    """Every answer of the server, JSON-decoded into `answers`, until it closes."""

    async def read() -> None:
        try:
            async for m in ws:
                answers.append(json.loads(m))
        except ConnectionClosed:
            pass

    return asyncio.create_task(read())


async def stream(url, audio: np.ndarray, rate: int = 8000, realtime: bool = True, ms: int = 100, headers=AUTH,
                 config: bool = True) -> tuple[list[dict], int | None, int]:
    """A Vosk client: config, `ms` messages (at 1x speed, or all at once), eof; -> (answers, close code, sent)."""
    answers: list[dict] = []
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        if config:
            await ws.send(json.dumps({"config": {"sample_rate": rate, "words": True}}))

        reader = _reader(ws, answers)
        n, t0, sent = rate * ms // 1000, time.monotonic(), 0
        for i in range(0, len(audio), n):
            await ws.send(audio[i : i + n].astype("<i2").tobytes())
            sent += 1
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (i + n) / rate - time.monotonic()))
        await ws.send('{"eof" : 1}')
        await asyncio.wait_for(reader, 60)
    return answers, ws.close_code, sent + 1


def finals(answers: list[dict]) -> list[dict]:
    return [a for a in answers if a.get("text")]


def expected(recognizer, path: Path) -> list[tuple]:
    t = transcribe_file(recognizer, path)
    return [(s.text, [(w.word, round(w.start, 3), round(w.end, 3)) for w in s.words]) for s in t.segments]


def got(answers: list[dict]) -> list[tuple]:
    return [(a["text"], [(w["word"], w["start"], w["end"]) for w in a["result"]]) for a in finals(answers)]


def check_vosk(answers: list[dict], code: int | None, sent: int) -> None:
    """Vosk's answers: one per message (an eof with more results than messages left may add some), partial or
    result, the last one a result, then a normal close."""
    assert code == 1000
    assert all(set(a) in ({"partial"}, {"result", "text"}, {"text"}) for a in answers), answers
    assert sent <= len(answers) <= sent + 2
    assert "text" in answers[-1]


# ---------------------------------------------------------------------------------------------
# tests


def test_realtime_and_burst_clients_get_the_transcribe_finals(served, recognizer, recordings):
    """Six clients at once, three at 1x speed and three in one burst, share the server's ticks."""
    want = [expected(recognizer, p) for p, _ in recordings]
    assert all(want), want

    async def main():
        jobs = [stream(served.url, a, realtime=rt) for rt in (True, False) for _, a in recordings]
        return await asyncio.gather(*jobs)

    results = asyncio.run(main())
    for (answers, code, sent), w in zip(results, want + want):
        check_vosk(answers, code, sent)
        assert got(answers) == w
    assert len(want[0]) == 2  # the 1.5 s pause ended an utterance mid-stream: a result before eof


def test_page_metrics_and_vosk_defaults(served, recordings):
    page = urllib.request.urlopen(f"http://127.0.0.1:{served.port}/", timeout=10).read().decode()
    assert "<button" in page and 'src="app.js"' in page and '<canvas id="pad"' in page and 'src="pen.js"' in page
    assert not re.search(r"""src=["']?(https?:)?//""", page)  # no external scripts: works offline
    for js in ("app.js", "pcm-worklet.js", "pen.js"):
        body = urllib.request.urlopen(f"http://127.0.0.1:{served.port}/{js}", timeout=10).read().decode()
        assert "http://" not in body and "https://" not in body
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{served.port}/nothing", timeout=10)
    assert e.value.code == 404

    async def main():
        # No config: the Vosk server's default 8 kHz; the token as a query parameter (what browsers send).
        return await stream(served.url + f"/?token={TOKEN}", recordings[2][1], realtime=False, headers=None, config=False)

    answers, code, sent = asyncio.run(main())
    check_vosk(answers, code, sent)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics?token={TOKEN}", timeout=10).read().decode()
    for name in ("open_streams", "partial_latency_seconds_bucket", "final_latency_seconds_count", "real_time_factor",
                 "dropped_audio_seconds_total", "refused_clients_total", "tick_streams_bucket"):
        assert f"rnnstream_serve_{name}" in metrics, name
    assert re.search(r"^rnnstream_serve_clients_total [1-9]", metrics, re.M)


async def _bad(url: str, kind: str) -> tuple[list, int | None, str | None]:
    """One misbehaving client; -> (messages it got, close code, close reason)."""
    got: list = []
    headers = {"Authorization": "Bearer wrong"} if kind == "token" else AUTH
    ws = await connect(url, additional_headers=headers, max_size=None, close_timeout=5)
    try:
        try:
            if kind == "json":
                await ws.send("{not json")
            elif kind == "odd":
                await ws.send(b"\x00" * 801)
            elif kind == "no_rate":
                await ws.send(json.dumps({"config": {"words": True}}))
            elif kind == "absurd_rate":
                await ws.send(json.dumps({"config": {"sample_rate": 1e9}}))
            elif kind == "huge":
                await ws.send(b"\x00" * (100 << 20))
            elif kind == "text":
                await ws.send(b"\x00\x01" * 800)
                await ws.send(json.dumps({"text": "hello"}))
            elif kind == "after_eof":
                await ws.send(b"\x00\x01" * 800)
                await ws.send('{"eof" : 1}')
                await ws.send(b"\x00\x01" * 800)
            async for m in ws:
                got.append(json.loads(m))
        except ConnectionClosed:
            pass
    finally:
        try:
            await ws.close()
        except Exception:  # the server cut a 100 MB send short: asyncio may have torn the transport down already
            pass
    return got, ws.close_code, ws.close_reason


async def _gone(url: str, audio: np.ndarray) -> None:
    """A client that disconnects mid-utterance: 1.2 s of speech, then the TCP connection dropped."""
    ws = await connect(url, additional_headers=AUTH)
    await ws.send(json.dumps({"config": {"sample_rate": 8000}}))
    for i in range(0, 9600, 800):
        await ws.send(audio[i : i + 800].tobytes())
        await asyncio.sleep(0.1)
    ws.transport.abort()


async def _stalled(url: str, audio: np.ndarray) -> None:
    """A client that reads nothing: 30 s of audio in one burst, then silence, then gone."""
    ws = await connect(url, additional_headers=AUTH)
    await ws.send(json.dumps({"config": {"sample_rate": 8000}}))
    tape = np.tile(audio, 1 + 240_000 // len(audio))[:240_000]
    for i in range(0, len(tape), 800):
        await ws.send(tape[i : i + 800].tobytes())
    await asyncio.sleep(3)
    ws.transport.abort()


BAD = {  # kind -> (close code, words of the error)
    "json": (1007, "invalid JSON"),
    "odd": (1007, "odd number of bytes"),
    "no_rate": (1007, "without sample_rate"),
    "absurd_rate": (1007, "absurd sample_rate"),
    "huge": (1009, None),
    "text": (1003, "text where audio was expected"),
    "after_eof": (1003, "input after eof"),
    "token": (1008, "invalid token"),
}


def test_bad_input_closes_only_its_connection(served, recognizer, recordings):
    want = [expected(recognizer, p) for p, _ in recordings]

    async def main():
        good = [asyncio.create_task(stream(served.url, a)) for _, a in recordings]
        await asyncio.sleep(0.5)  # they are streaming when the trouble starts
        bad = await asyncio.gather(
            *(_bad(served.url, k) for k in BAD), _gone(served.url, recordings[0][1]), _stalled(served.url, recordings[1][1])
        )
        return bad, await asyncio.gather(*good)

    bad, good = asyncio.run(main())
    for kind, (messages, code, reason) in zip(BAD, bad):
        want_code, words = BAD[kind]
        assert code == want_code, (kind, code, reason, messages)
        if words:
            errors = [m["error"] for m in messages if "error" in m]
            assert errors and words in errors[-1], (kind, messages)
            assert words in reason
    for (answers, code, sent), w in zip(good, want):
        check_vosk(answers, code, sent)
        assert got(answers) == w
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics?token={TOKEN}", timeout=10).read().decode()
    assert re.search(r'^rnnstream_serve_refused_clients_total\{reason="token"\} [1-9]', metrics, re.M)
    assert re.search(r'^rnnstream_serve_errors_total\{reason="input"\} [1-9]', metrics, re.M)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and served.server.connections:
        time.sleep(0.1)
    assert not served.server.connections  # the ones that went away mid-utterance too


def test_full_server_refuses_and_idle_streams_end_with_their_final(recognizer, recordings):
    shared = recognizer.shared(ingest=DROP)
    running = Running(shared, max_clients=1, idle_timeout=1.0)
    try:

        async def main():
            ws = await connect(running.url)
            await ws.send(json.dumps({"config": {"sample_rate": 8000}}))
            speech = recordings[1][1][:16000]  # two seconds, then silence from the client: idle
            for i in range(0, len(speech), 800):
                await ws.send(speech[i : i + 800].tobytes())
            refused = await _bad(running.url, "none")
            answers = []
            async for m in ws:
                answers.append(json.loads(m))
            return refused, answers, ws.close_code, ws.close_reason

        (r_msgs, r_code, r_reason), answers, code, reason = asyncio.run(main())
        assert r_code == 1013 and "server full" in r_reason and "server full" in r_msgs[-1]["error"]
        assert code == 1001 and "idle" in reason
        assert finals(answers) and finals(answers)[-1]["text"]
    finally:
        running.close()
        shared.close()


def test_sigterm_flushes_every_open_stream_and_exits_0(recordings):
    """The CLI: `rnnstream serve --port 0`; SIGTERM while two clients are mid-utterance: each gets its final
    result and a 1001 close, the process exits 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "serve", "--port", "0", "--model", "digits"],
        stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "serving" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise AssertionError("serve exited early")
        url = re.search(r"ws://[\d.]+:\d+", line).group(0)

        async def client(audio):
            answers = []
            async with connect(url) as ws:
                await ws.send(json.dumps({"config": {"sample_rate": 8000}}))
                for i in range(0, 8000 * 3, 800):  # three seconds, then wait: the server ends it
                    await ws.send(audio[i : i + 800].tobytes())
                    await asyncio.sleep(0.02)
                try:
                    async for m in ws:
                        answers.append(json.loads(m))
                except ConnectionClosed:
                    pass
            return answers, ws.close_code

        async def main():
            jobs = [asyncio.create_task(client(a)) for _, a in recordings[:2]]
            await asyncio.sleep(2.0)
            proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*jobs)

        for answers, code in asyncio.run(main()):
            assert code == 1001
            assert "text" in answers[-1] and answers[-1]["text"], answers[-3:]
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def test_ray_server_gives_the_same_finals(recognizer, recordings, handwriting, ink_files):
    """On Ray: Vosk clients on / and pen clients on /pen, each model a Ray pipeline of its own in one Ray."""
    pytest.importorskip("ray")
    from stream.distributed.session import RayRecognizer

    want = [expected(recognizer, p) for p, _ in recordings]
    want_ink = [expected(handwriting, p) for p, _ in ink_files]
    # (No standby actors: they take over only from a lost worker, test_failover's subject, and cost ~10 s each.)
    shared = RayRecognizer.connect("digits", device="cpu", num_cpus=2, ingest=DROP, standby=False)
    pen = RayRecognizer.connect("handwriting", device="cpu", ingest=DROP, standby=False)  # joins the Ray the first started
    running = Running(shared, pen=pen)
    try:

        async def main():
            jobs = [stream(running.url, a, realtime=rt, headers=None) for rt in (True, False) for _, a in recordings]
            pens = [pen_stream(running.url + "/pen", pts, headers=None) for _, pts in ink_files]
            return await asyncio.gather(*jobs), await asyncio.gather(*pens)

        audio, pens = asyncio.run(main())
        for (answers, code, sent), w in zip(audio + pens, want + want + want_ink):
            check_vosk(answers, code, sent)
            assert got(answers) == w
    finally:
        running.close()
        pen.close()  # first: the digits recognizer shuts down the Ray it started
        shared.close()


# ---------------------------------------------------------------------------------------------
# pen input


@pytest.fixture(scope="module")
def ink_files(tmp_path_factory) -> list[tuple[Path, np.ndarray]]:
    """Held-out writers' UNIPEN words as InkML files, and the points `rnnstream transcribe` reads from each."""
    pytest.importorskip("tools.unipen")
    from models.ink import read_ink, write_inkml
    from tools import unipen

    out = tmp_path_factory.mktemp("ink")
    held = unipen.split_writers(0)
    files = []
    for k, i in enumerate(unipen.indices("7", held, train=False)[:4]):
        points, label, _ = unipen.sample("7", int(i))
        path = write_inkml(out / f"word{k}.inkml", points, truth=label)
        files.append((path, read_ink(path).points))
    return files


def _json_points(points: np.ndarray) -> list[dict]:
    return [{"x": x, "y": y, "t": None if np.isnan(t) else t, "pen": "down" if pen > 0.5 else "up"}
            for x, y, t, pen in points.tolist()]


async def pen_stream(url, points: np.ndarray, realtime: bool = True, headers=AUTH,
                     config: dict | None = None) -> tuple[list[dict], int | None, int]:
    """A pen client: a config (`{"words": true}` and `config`), the points in messages of 1 (a bare point), 7 and
    13 (lists), at the ink's own pace or all at once, eof; -> (answers, close code, messages sent)."""
    rows, answers = _json_points(points), []
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"config": {"words": True, **(config or {})}}))

        reader = _reader(ws, answers)
        i, k, sent, t0 = 0, 0, 0, time.monotonic()
        while i < len(rows):
            n = (1, 7, 13)[k % 3]
            batch = rows[i : i + n]
            await ws.send(json.dumps(batch[0] if n == 1 else batch))
            i, k, sent = i + n, k + 1, sent + 1
            if realtime:
                await asyncio.sleep(max(0.0, t0 + batch[-1]["t"] - points[0, 2] - time.monotonic()))
        await ws.send('{"eof" : 1}')
        await asyncio.wait_for(reader, 60)
    return answers, ws.close_code, sent + 1


def test_pen_clients_get_the_transcribe_finals(served, handwriting, ink_files, recognizer, recordings):
    """Pen clients at /pen (at the ink's pace and in one burst) get what `rnnstream transcribe` reads in the same
    ink, answered as Vosk answers audio, while Vosk clients on / stream digits beside them."""
    want = [expected(handwriting, p) for p, _ in ink_files]
    assert sum(bool(w) for w in want) >= 3, want  # the model reads something in most of these words
    speech = [expected(recognizer, p) for p, _ in recordings[:2]]

    async def main():
        pens = [pen_stream(served.url + "/pen", pts, realtime=rt) for rt in (True, False) for _, pts in ink_files]
        audio = [stream(served.url, a, realtime=False) for _, a in recordings[:2]]
        return await asyncio.gather(*pens), await asyncio.gather(*audio)

    pens, audio = asyncio.run(main())
    for (answers, code, sent), w in zip(pens, want + want):
        check_vosk(answers, code, sent)
        assert got(answers) == w
    assert any(a.get("partial") for answers, _, _ in pens for a in answers)  # read as it is written
    for (answers, code, sent), w in zip(audio, speech):
        check_vosk(answers, code, sent)
        assert got(answers) == w
    models = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{served.port}/models?token={TOKEN}", timeout=10).read())
    assert models == {"audio": "/", "pen": "/pen"}


def test_a_pen_client_chooses_its_language_model_and_charset(served, handwriting, ink_files):
    """A pen config's "lm" and "charset" are that client's decoding (as `transcribe --lm/--charset` reads the same
    ink), beside a client with the server's; an LM that is not a model name (a path on the server) is refused."""
    from stream.options import resolve_options
    from stream.session import Recognizer

    path, points = ink_files[0]
    url = served.url + "/pen"

    def alone(**choices) -> list[tuple]:
        checkpoint = handwriting.checkpoint
        return expected(Recognizer(checkpoint, resolve_options(checkpoint, **choices)), path)

    async def main():
        return await asyncio.gather(pen_stream(url, points, False), pen_stream(url, points, False, config={"lm": "none"}),
                                    pen_stream(url, points, False, config={"charset": "upper"}),
                                    _bad_pen(url, [json.dumps({"config": {"lm": "/etc/passwd"}}), '{"x": 1, "y": 2}']))

    (plain, _, _), (no_lm, _, _), (upper, _, _), (refused, code, _) = asyncio.run(main())
    assert got(plain) == expected(handwriting, path)
    assert got(no_lm) == alone(lm="none") and got(upper) == alone(charset="upper")
    assert got(upper) and all(c.isupper() for text, _ in got(upper) for c in text.replace(" ", ""))
    assert code == 1007 and "a client may choose" in refused[-1]["error"]


BAD_PEN = {  # kind -> (messages, close code, words of the error)
    "audio": ([b"\x00\x01" * 800], 1003, "binary data sent to a pen model"),
    "fields": ([json.dumps({"x": 1, "z": 2})], 1007, "a point needs x and y"),
    "pen": ([json.dumps([{"x": 1, "y": 2}, {"x": 2, "y": 2, "pen": "lifted"}])], 1007, "point 2 of the message"),
    "types": ([json.dumps({"x": "1", "y": 2})], 1007, "must be numbers"),
    "json": (["[{\"x\": 1,"], 1007, "invalid JSON"),
    "rate": ([json.dumps({"config": {"sample_rate": -5}})], 1007, "absurd sample_rate"),
    # NaN is the pen front end's to refuse, in the pipeline: the stream ends with its error
    "nan": ([json.dumps([{"x": j, "y": 0, "t": j / 100} for j in range(20)]), '{"x": NaN, "y": 1, "t": 0.5}',
             json.dumps([{"x": 1, "y": j, "t": 0.6 + j / 100} for j in range(40)])], 1007, "NaN"),
}


async def _bad_pen(url: str, messages: list) -> tuple[list, int | None, str | None]:
    got: list = []
    async with connect(url, additional_headers=AUTH, close_timeout=5) as ws:
        try:
            for m in messages:
                await ws.send(m)
            async for m in ws:
                got.append(json.loads(m))
        except ConnectionClosed:
            pass
    return got, ws.close_code, ws.close_reason


def test_bad_pen_input_closes_only_its_connection(handwriting, ink_files):
    """A server of the handwriting model alone (`rnnstream serve --model handwriting`): points on any path, and
    each bad pen input gets an error and the close of its own connection while pen clients write beside it."""
    want = [expected(handwriting, p) for p, _ in ink_files]
    shared = handwriting.shared(ingest=DROP)
    running = Running(shared, token=TOKEN)
    try:

        async def main():
            good = [asyncio.create_task(pen_stream(running.url + path, pts)) for (_, pts), path in zip(ink_files, ("", "/x", "/pen", ""))]
            await asyncio.sleep(0.5)  # they are writing when the trouble starts
            bad = await asyncio.gather(*(_bad_pen(running.url, m) for m, _, _ in BAD_PEN.values()))
            return bad, await asyncio.gather(*good)

        bad, good = asyncio.run(main())
        for kind, (messages, code, reason) in zip(BAD_PEN, bad):
            _, want_code, words = BAD_PEN[kind]
            assert code == want_code, (kind, code, reason, messages)
            errors = [m["error"] for m in messages if "error" in m]
            assert errors and words in errors[-1] and words in reason, (kind, messages)
        for (answers, code, sent), w in zip(good, want):
            check_vosk(answers, code, sent)
            assert got(answers) == w
        models = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{running.port}/models?token={TOKEN}", timeout=10).read())
        assert models == {"audio": None, "pen": "/"}
    finally:
        running.close()
        shared.close()


def test_a_phrase_list_restricts_its_own_stream_only(served, recognizer, recordings):
    """Vosk's phrase_list: the client's stream reads only those words (as a session with those options reads it
    alone), while a client beside it reads with the server's decoding; a word the model cannot spell is refused."""
    from stream.options import phrase_options

    path, audio = recordings[0]
    phrases = ["one two three", "oh"]

    async def client(config: dict) -> tuple[list[dict], int | None]:
        answers: list[dict] = []
        async with connect(served.url, additional_headers=AUTH, max_size=None) as ws:
            await ws.send(json.dumps({"config": {"sample_rate": 8000, **config}}))
            reader = _reader(ws, answers)
            for i in range(0, len(audio), 4000):
                await ws.send(audio[i : i + 4000].astype("<i2").tobytes())
            await ws.send('{"eof" : 1}')
            await asyncio.wait_for(reader, 60)
        return answers, ws.close_code

    async def main():
        return await asyncio.gather(client({"phrase_list": phrases}), client({}), client({"phrase_list": ["call 4g"]}))

    (restricted, code), (plain, _), (refused, refused_code) = asyncio.run(main())
    assert code == 1000 and got(plain) == expected(recognizer, path)
    own = recognizer.with_options(**vars(phrase_options(recognizer.options, recognizer.tokenizer, tuple(phrases))))
    assert got(restricted) == expected(own, path) and got(restricted) != got(plain)
    assert {w for _, words in got(restricted) for w, _, _ in words} <= {"one", "two", "three", "oh"}
    assert refused_code == 1007 and "'4g' cannot be spelled" in refused[-1]["error"]
