"""`rnnstream serve`: the Vosk WebSocket protocol over one shared recognizer, the page and /metrics on one port.

Built on `websockets` (asyncio): a maintained, dependency-free implementation of RFC 6455 whose handshake hook
(`process_request`) answers plain HTTP on the same port, so Vosk clients (ws://HOST:2700, path /), the page at
`/` and Prometheus at `/metrics` share it; it enforces `max_size` before reading a frame and applies TCP
backpressure per connection (`max_queue`). Invariants:
- The event loop never waits for the model: recognition runs in the Hub's thread (stream.serve.hub).
- One connection's trouble is its own: bad input is answered `{"error"}` and a close code on that connection
  only; a client that reads nothing has a bounded queue of answers and is disconnected past it; audio past a
  connection's bound is dropped and counted, never silently.
- A slow reader is a client whose unsent answers stay over `max_unread` for `slow_after` seconds (or pass
  `max_unread_bytes` at all), not one that got many answers at once: a tick answers every message that arrived
  during it in one batch (hundreds for a client sending 1 ms messages), which a reading client drains in ms.
- Every handler has a last resort: an error nobody foresaw becomes the documented close (1007 for a message the
  parser choked on, 1011 otherwise; HTTP 500) and one log line, never a traceback.
- SIGTERM (or `shutdown`): stop accepting, end every open stream as at eof (its final result is sent), close
  them with 1001, return.
- A second model, for pen input (`pen`), is served at the path `/pen` (stream.serve.pen): its connections are
  sessions of its own SharedRecognizer through a Hub of its own; every other path is the main model, so a Vosk
  client on any path sees nothing of it. A pen main model (`serve --model handwriting`) takes points on every path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.asyncio.server import Server as WSServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from models.decoding import DecodeOptions
from models.errors import one_line

from ..options import client_options
from ..shared import SharedRecognizer
from . import protocol
from .http import Site, token_ok
from .hub import Close, Hub, Stream
from .metrics import Metrics
from .pen import InkClock, parse_pen
from .protocol import Config, Eof, ProtocolError
from .settings import READ_AHEAD, ServeOptions

log = logging.getLogger(__name__)

SWITCH_INTERVAL = 0.0001
PEN_PATH = "/pen"  # where a second, pen model is served beside a speech model


@dataclass(eq=False)
class Route:
    """One model the server serves: its recognizer, its hub (once started) and what its clients send."""

    recognizer: SharedRecognizer
    pen: bool  # points as JSON text (stream.serve.pen), else the Vosk protocol's PCM
    hub: Hub | None = None

    @classmethod
    def of(cls, recognizer: SharedRecognizer) -> Route:
        return cls(recognizer, recognizer.extractor.medium == "ink")


class Server:
    """The WebSocket server over `recognizer` (a SharedRecognizer: in process or on Ray), and `pen`, a second
    (pen) model's at `/pen`, if given."""

    def __init__(self, recognizer: SharedRecognizer, options: ServeOptions = ServeOptions(), pen: SharedRecognizer | None = None):
        self.options = options
        self.main = Route.of(recognizer)
        self.pen = Route.of(pen) if pen is not None else None
        if self.pen is not None and (self.main.pen or not self.pen.pen):
            raise ValueError("the second model is for pen input beside a speech model")
        self.metrics = Metrics()
        self.connections: set[Connection] = set()
        self.stopping = False
        self._ws: WSServer | None = None
        self._site = Site(options.token, lambda: json.dumps(self.models()).encode(), self.metrics.text)

    @property
    def routes(self) -> list[Route]:
        return [self.main] + ([self.pen] if self.pen is not None else [])

    def models(self) -> dict:
        """Where the page finds each kind of input (`/models`): a path, or None when not served."""
        if self.main.pen:
            return {"audio": None, "pen": "/"}
        return {"audio": "/", "pen": PEN_PATH if self.pen is not None else None}

    def route(self, path: str) -> Route:
        if self.pen is not None and urlsplit(path).path.rstrip("/") == PEN_PATH:
            return self.pen
        return self.main

    @property
    def port(self) -> int:
        return self._ws.sockets[0].getsockname()[1]

    async def start(self) -> None:
        # The hub thread gives up the GIL at every torch call and the loop, always busy under load, keeps it for a
        # whole switch interval (5 ms by default) before handing back: hundreds of such waits per tick made a
        # tick take seconds at 500 clients (BENCHMARKS.md, issue 16). 0.5 ms bounds that wait.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        for route in self.routes:
            route.hub = Hub(route.recognizer.engine, asyncio.get_running_loop(), self.metrics, self.options.tick)
            route.hub.start()
        self._ws = await serve(
            self._handle, self.options.host, self.options.port,
            process_request=self._site, max_size=self.options.max_message,
            ping_interval=20, ping_timeout=20, close_timeout=5, max_queue=READ_AHEAD,
            # No permessage-deflate: PCM barely compresses, and inflating it was the loop's largest cost (a
            # third of its CPU at 200 clients, py-spy). Clients that offer it fall back to plain frames.
            compression=None,
        )

    async def serve_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.shutdown()

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, send every open stream's final result, close them (1001), stop the hub."""
        self.stopping = True
        self._ws.close(close_connections=False)  # new handshakes get HTTP 503
        now = time.monotonic()
        for c in list(self.connections):
            c.end(now, Close(protocol.GOING_AWAY, "server shutting down"))
        try:
            await asyncio.wait_for(self._ws.wait_closed(), timeout)
        except TimeoutError:
            log.warning("shutdown: %d connections still open after %.0f s", len(self.connections), timeout)
        for route in self.routes:
            route.hub.stop()

    # -- connections

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            await self._connection(ws)
        except Exception as e:  # the last resort: websockets would log a traceback and close 1011 itself
            log.warning("connection %s: unexpected %s: %s", ws.id, type(e).__name__, one_line(e))
            try:
                await _close(ws, Close(protocol.INTERNAL, "internal error"))
            except Exception:  # the socket is gone: nothing left to tell
                pass

    async def _connection(self, ws: ServerConnection) -> None:
        refusal = self._refusal(ws)
        if refusal is not None:
            reason, close = refusal
            self.metrics.refused.labels(reason=reason).inc()
            try:
                await ws.send(protocol.error(close.reason))
            except ConnectionClosed:
                return
            await _close(ws, close)
            return
        conn = Connection(self, ws, self.route(ws.request.path))
        self.connections.add(conn)
        self.metrics.clients.inc()
        self.metrics.open_streams.inc()
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            self.metrics.open_streams.dec()

    def _refusal(self, ws: ServerConnection) -> tuple[str, Close] | None:
        if self.stopping:
            return "shutting_down", Close(protocol.GOING_AWAY, "server shutting down")
        if not token_ok(ws.request, self.options.token):
            return "token", Close(protocol.POLICY, "invalid token")
        if len(self.connections) >= self.options.max_clients:
            return "full", Close(protocol.TRY_LATER, f"server full ({self.options.max_clients} clients)")
        return None


class Connection:
    """One client: messages in (parsed on the loop, handed to the hub), answers out (a sender task)."""

    def __init__(self, server: Server, ws: ServerConnection, route: Route):
        self.server, self.ws, self.hub, self.metrics = server, ws, route.hub, server.metrics
        self.options = server.options
        self.parse = parse_pen if route.pen else protocol.parse
        self.route = route
        # Without a config: the Vosk server's rate for audio; for points without times, the pen model's.
        self.config = Config(route.recognizer.sample_rate if route.pen else self.options.sample_rate)
        self.stream: Stream | None = None
        self.stream_options: DecodeOptions | None = None  # the config's own decoding (None: the server's)
        self.ended = False  # eof sent to the hub: nothing more is accepted
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.unsent = self.unsent_bytes = 0  # answers in the outbox (and in ws.send), and their characters
        self.over_since: float | None = None  # when `unsent` went over max_unread, while it stays over
        self.slow = self.closed = False
        self.allowance, self.last = server.options.message_rate, time.monotonic()  # the message rate's bucket
        self.closing: asyncio.Future | None = None  # the close of a client cut off for reading too slowly

    async def run(self) -> None:
        sender = asyncio.create_task(self._send())
        try:
            await self._receive()
        finally:
            if self.stream is not None and not self.ended:
                self.hub.abort(self.stream)  # the client went away mid-utterance: free its slot
            self.ended = self.closed = True  # (a slow-reader timer still pending finds it closed, not slow)
            self.outbox.put_nowait(None)  # the socket is closed: what is still queued can never go out
            await sender

    async def _receive(self) -> None:
        idle = self.options.idle_timeout
        while True:
            try:
                async with asyncio.timeout(idle if not self.ended else None):
                    message = await self.ws.recv()
            except TimeoutError:
                self.metrics.disconnected.labels(reason="idle").inc()
                self.end(time.monotonic(), Close(protocol.GOING_AWAY, f"idle for {idle:g} s"))
                continue
            except ConnectionClosed:
                return
            mark = time.monotonic()
            self.allowance = min(self.options.message_rate, self.allowance + (mark - self.last) * self.options.message_rate) - 1
            self.last = mark
            if self.allowance < 0:
                await asyncio.sleep(-self.allowance / self.options.message_rate)
            try:
                self._message(message, mark)
            except ProtocolError as e:
                self._fail(str(e), e.code)
                return
            except Exception as e:  # the last resort: this connection ends, documented, the server goes on
                log.warning("connection %s: unexpected %s: %s", self.ws.id, type(e).__name__, one_line(e))
                self._fail("internal error", protocol.INTERNAL)
                return

    def _message(self, message: str | bytes, mark: float) -> None:
        if self.ended:
            if self.stream is not None and self.stream.closed:
                return  # the stream is over (idle, shutdown): late input is moot
            raise ProtocolError("input after eof", protocol.UNSUPPORTED)
        try:
            m = self.parse(message, self.config, self.stream is not None)
        except ProtocolError:
            raise
        except Exception as e:  # what the parser did not foresee is still this client's bad message: 1007
            log.warning("connection %s: a message the parser did not foresee: %s: %s", self.ws.id, type(e).__name__, one_line(e))
            raise ProtocolError(f"unreadable message ({type(e).__name__})", protocol.INVALID) from None
        if isinstance(m, Config):
            self.config = m  # answered with nothing, as by the Vosk server
            self.stream_options = self._options(m)
            return
        if isinstance(m, Eof):
            self.end(mark, Close(protocol.NORMAL, ""))
            return
        s = self._open()
        if s.queued_seconds > self.options.max_queued:  # the hub is behind: drop this message's audio, counted
            self.metrics.dropped.inc(len(m) / s.rate)
            m = m[:0]
        self.metrics.heard(len(m) / s.rate)
        self.hub.audio(s, m, mark)

    def _open(self) -> Stream:
        if self.stream is None:
            self.stream = Stream(self.config.sample_rate, self.config.words, self._deliver, self.stream_options)
            if self.route.pen:  # ink weighs its time, not its points (stream.serve.pen.InkClock)
                gap = self.route.recognizer.extractor.config.max_gap_seconds
                self.stream.weigh = InkClock(self.config.sample_rate, gap).weigh
        return self.stream

    def _options(self, config: Config) -> DecodeOptions | None:
        """The config's own decoding: its phrase list, charset or LM (stream.options.client_options)."""
        engine = self.route.recognizer.engine
        try:
            return client_options(engine.checkpoint, engine.options, config.phrase_list, config.charset, config.lm)
        except ValueError as e:
            raise ProtocolError(one_line(e), protocol.INVALID) from None

    def end(self, mark: float, close: Close) -> None:
        """The stream ends here (client eof, idle, shutdown): its last result, then `close`."""
        if self.ended:
            return
        self.ended = True
        self.hub.eof(self._open(), mark, close)

    def _fail(self, message: str, code: int) -> None:
        self.metrics.errors.labels(reason="input").inc()
        if self.stream is not None and not self.ended:
            self.hub.abort(self.stream)
        self.ended = True
        answer = protocol.error(message)
        self.outbox.put_nowait(answer)
        self.unsent, self.unsent_bytes = self.unsent + 1, self.unsent_bytes + len(answer)  # as _send counts it out
        self.outbox.put_nowait(Close(code, message))

    def _deliver(self, answers: list[str], close: Close | None) -> None:
        """From the hub, on the loop: queue the answers; a client that reads nothing is cut off, not waited for."""
        if self.slow:
            return
        for a in answers:
            self.outbox.put_nowait(a)
            self.unsent_bytes += len(a)
        self.unsent += len(answers)
        if close is not None:
            self.outbox.put_nowait(close)
        self._check_reader()

    def _check_reader(self) -> None:
        """The slow-reader rule: unsent answers over max_unread for slow_after seconds, or over max_unread_bytes."""
        if self.slow or self.closed:
            return
        o, now = self.options, time.monotonic()
        if self.unsent <= o.max_unread and self.unsent_bytes <= o.max_unread_bytes:
            self.over_since = None
            return
        if self.unsent_bytes <= o.max_unread_bytes:
            if self.over_since is None:
                self.over_since = now
                asyncio.get_running_loop().call_later(o.slow_after, self._check_reader)
            if now - self.over_since < o.slow_after:
                return
        self.slow = True
        self.metrics.dropped_answers.inc(self.unsent)
        self.metrics.disconnected.labels(reason="slow").inc()
        if self.stream is not None and not self.ended:
            self.hub.abort(self.stream)
        self.ended = True
        while not self.outbox.empty():  # what it will never read is freed now
            self.outbox.get_nowait()
        # held on the connection: a task nobody references may be collected before it runs
        self.closing = asyncio.ensure_future(_close(self.ws, Close(protocol.POLICY, "client reads too slowly")))

    async def _send(self) -> None:
        while True:
            item = await self.outbox.get()
            if item is None:
                return
            if isinstance(item, Close):
                await _close(self.ws, item)
                return
            try:
                await self.ws.send(item)
            except ConnectionClosed:
                return
            except Exception as e:  # the last resort: the connection is unusable, say so once
                log.warning("connection %s: sending failed: %s: %s", self.ws.id, type(e).__name__, one_line(e))
                return
            self.unsent -= 1
            self.unsent_bytes -= len(item)
            if self.over_since is not None and self.unsent <= self.options.max_unread:
                self.over_since = None  # it reads: the clock starts again the next time it falls behind


async def _close(ws: ServerConnection, close: Close) -> None:
    # A close reason is at most 123 bytes (RFC 6455 5.5: control frames carry 125).
    await ws.close(close.code, close.reason.encode()[:123].decode(errors="ignore"))


async def run(recognizer: SharedRecognizer, options: ServeOptions, on_ready=None, pen: SharedRecognizer | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then shut down cleanly (the caller closes the recognizers)."""
    server = Server(recognizer, options, pen)
    await server.start()
    if on_ready is not None:
        on_ready(server)
    await server.serve_until_signal()
