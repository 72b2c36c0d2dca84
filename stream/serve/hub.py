"""The one thread that drives every connection's stream through ONE Engine (stream.engine), a tick at a time.

Invariants:
- Only this thread touches the engine. With a LocalPipeline the tick's model call runs inside `send`, under
  the ingest's lock (tens of ms at hundreds of streams): on the event loop that would stall every socket. The
  loop hands commands over a queue and gets answers back in one `call_soon_threadsafe` batch per iteration.
- Each connection is a stream of the engine; its input joins the next tick with every other stream's, so all
  open streams are slots of one batched LSTM call per tick. The hub pushes every stream's messages first and
  then sends one tick for all of them (`Engine.send`, paced by the hub's tick), and reads what the ticks brought
  with `Engine.poll(send=False)`: only the streams they carried.
- Every client message gets exactly one answer, in order: once the first tick submitted after it arrived is
  back (its audio is then through the model, or held back by the ingest as too short to send alone), or at
  once when no tick is in flight. An eof is answered when its stream is over, with its last result.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.decoding import DecodeOptions
from models.errors import InputError, one_line

from ..backend import Event
from ..engine import Engine, StreamResult
from ..errors import Kind
from ..ingest import Overloaded
from ..messages import Key
from . import protocol
from .metrics import Metrics

log = logging.getLogger(__name__)


# The server's edge: each kind of stream error once, as its close code.
CLOSES = {Kind.INPUT: protocol.INVALID, Kind.EXPIRED: protocol.GOING_AWAY, Kind.LOST: protocol.GOING_AWAY,
          Kind.CLOSED: protocol.GOING_AWAY, Kind.OVERLOADED: protocol.TRY_LATER, Kind.INTERNAL: protocol.INTERNAL}


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


@dataclass(eq=False)
class Stream:
    """One connection's stream. The loop sets `rate`, `words`, `deliver` and `sent`; the rest is the hub's."""

    rate: int
    words: bool
    deliver: Callable[[list[str], Close | None], None]  # called on the loop
    options: DecodeOptions | None = None  # its own decoding (a phrase list, a charset, an LM), None: the server's
    sent: int = 0  # samples handed to the hub (loop side), as `weigh` counts them
    pushed: int = 0  # samples the hub pushed into the engine
    # What a message costs, in samples: its length for audio; for ink its ink time (stream.serve.pen.InkClock),
    # since a few points far apart in time make many frames, and the queue bound is in input seconds.
    weigh: Callable[[np.ndarray], int] = len
    key: Key | None = None  # its stream in the engine, once its first audio came
    pending: list = field(default_factory=list)  # arrival marks of messages not covered by a submitted tick
    finals: deque = field(default_factory=deque)  # final events not yet sent
    partial: str = ""
    eof: float | None = None  # arrival of the eof (or of the server's decision to end the stream)
    eof_close: Close = Close(protocol.NORMAL, "")
    aborted: bool = False  # the client went away: finish the stream, answer nothing
    over: bool = False  # the engine said its last word
    closed: bool = False  # its close was decided: nothing more goes out

    @property
    def queued_seconds(self) -> float:
        return (self.sent - self.pushed) / self.rate


class Hub:
    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, metrics: Metrics, tick: float = 0.04):
        self.engine, self.loop, self.metrics = engine, loop, metrics
        self.tick = tick
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: set[Stream] = set()
        self._keys: dict[Key, Stream] = {}  # the engine's streams not yet over
        self._ticks: deque[tuple[float, list]] = deque()  # per submitted tick: (when, [(stream, marks)])
        self._out: dict[Stream, tuple[list[str], Close | None]] = {}
        self._stop = threading.Event()
        self._last_submit = 0.0
        self._busy_until = 0.0
        self._dropped = 0.0
        self._thread = threading.Thread(target=self._run, name="rnnstream-hub", daemon=True)

    # -- the loop's side (any thread)

    def start(self) -> None:
        self._thread.start()

    def audio(self, s: Stream, data: np.ndarray, mark: float) -> None:
        weight = s.weigh(data)
        s.sent += weight
        self._commands.put(("audio", s, (data, weight), mark))

    def eof(self, s: Stream, mark: float, close: Close = Close(protocol.NORMAL, "")) -> None:
        self._commands.put(("eof", s, close, mark))

    def abort(self, s: Stream) -> None:
        self._commands.put(("abort", s, None, None))

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._commands.put(("wake", None, None, None))
        self._thread.join(timeout)

    # -- the hub thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._iteration()
            except Exception as e:  # a failed pipeline fails its streams, never the thread silently
                log.exception("hub iteration failed")
                for s in list(self._streams):
                    self._fail(s, f"recognizer failed: {one_line(e)}", protocol.GOING_AWAY)
                    self._streams.discard(s)
                    self._keys.pop(s.key, None)
                self._flush()
                time.sleep(0.1)

    def _iteration(self) -> None:
        busy = bool(self._streams) or self.engine.inflight
        self._drain(timeout=None if not busy else 0.0)
        idle = False
        if self.engine.has_room and time.monotonic() >= self._last_submit + self.tick:
            idle = not self._submit()
        self._collect(timeout=0.0)
        if idle and not self.engine.inflight:
            for s in self._streams:  # no tick to wait for (nothing sendable, none in flight): answer now
                self._answer(s, s.pending)
                s.pending = []
        self._finish_streams()
        self._flush()
        # Wait for the next tick: new input (or, on Ray, the ticks in flight) may arrive meanwhile.
        left = self._last_submit + self.tick - time.monotonic()
        if self.engine.inflight:
            self._collect(timeout=max(left, 0.002))
        elif self._streams:  # nothing was sendable: wait for input, at most a tick (never spin)
            self._drain(timeout=left if left > 0 else self.tick)

    def _drain(self, timeout: float | None) -> None:
        """Apply queued commands; wait up to `timeout` (None: 0.5 s) for the first. A stream's audio messages
        queued together go to the engine as one part (its marks all pending): 1 ms messages were 1,000 parts a
        second of 16 bytes, each ~300 bytes of objects held while the pipeline is behind (up to 30 s of them)."""
        try:
            cmd = self._commands.get(timeout=0.5 if timeout is None else timeout) if timeout != 0.0 else self._commands.get_nowait()
        except queue.Empty:
            return
        audio: dict[Stream, list[tuple[tuple[np.ndarray, int], float]]] = {}
        while True:
            kind, s, arg, mark = cmd
            if kind == "audio":
                audio.setdefault(s, []).append((arg, mark))
            else:
                if s in audio:  # its audio first: commands of one stream keep their order
                    self._audio(s, audio.pop(s))
                self._apply(kind, s, arg, mark)
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
        for s, parts in audio.items():
            self._audio(s, parts)

    def _audio(self, s: Stream, parts: list[tuple[tuple[np.ndarray, int], float]]) -> None:
        if s.closed or s.aborted or s.eof is not None:  # after eof the loop refuses input
            return
        self._streams.add(s)
        data = parts[0][0][0] if len(parts) == 1 else np.concatenate([d for (d, _), _ in parts])
        s.pushed += sum(w for (_, w), _ in parts)
        if not self._open(s):
            return
        self.engine.push(s.key, data, parts[0][1])
        s.pending += [mark for _, mark in parts]

    def _apply(self, kind: str, s: Stream | None, arg, mark: float | None) -> None:
        if s is None or s.closed or (s.aborted and kind != "abort"):
            return
        if kind == "abort":
            s.aborted = True
            if s.key is not None and s.eof is None:
                self.engine.finish(s.key)  # flush its input so its model slot is freed
            elif s.key is None:
                s.over = True
            self._streams.add(s)
            return
        if s.eof is not None:  # after eof the loop refuses input; a late shutdown eof changes nothing
            return
        self._streams.add(s)
        if kind == "eof":
            s.eof, s.eof_close = mark, arg
            if s.key is None:
                s.over = True  # eof before any audio: nothing to recognise
            else:
                self.engine.finish(s.key)

    def _open(self, s: Stream) -> bool:
        if s.key is None:
            try:
                s.key = self.engine.open(s.rate, options=s.options)
                self._keys[s.key] = s
            except Overloaded as e:  # the overload policy: new streams wait, the open ones keep their latency
                self.metrics.refused.labels(reason="overloaded").inc()
                self._fail(s, one_line(e), protocol.TRY_LATER)
                return False
            except (InputError, RuntimeError) as e:
                self._fail(s, one_line(e), protocol.INVALID)
                return False
        return True

    def _submit(self) -> bool:
        t0 = time.monotonic()
        if not self.engine.send():
            return False
        covered = [(s, s.pending) for s in self._streams if s.pending]
        for s, _ in covered:
            s.pending = []
        self._ticks.append((t0, covered))
        self._last_submit = t0
        self.metrics.ticks.inc()
        self.metrics.tick_streams.observe(len(covered))
        return True

    def _collect(self, timeout: float) -> None:
        before = self.engine.delivered
        for key, result in self.engine.poll(timeout, send=False).items():
            s = self._keys.pop(key, None) if result.status.over else self._keys.get(key)
            if s is not None:  # (None: a stream the hub already gave up, after a failed iteration)
                self._take(s, result)
        done = self.engine.delivered - before
        now = time.monotonic()
        for _ in range(done):
            t0, covered = self._ticks.popleft()
            self.metrics.busy(now - max(t0, self._busy_until))
            self._busy_until = now
            for s, marks in covered:
                self._answer(s, marks)
        dropped = self.engine.dropped_seconds
        if dropped > self._dropped:
            self.metrics.dropped.inc(dropped - self._dropped)
            self._dropped = dropped

    def _take(self, s: Stream, result: StreamResult) -> None:
        events, status = result.events, result.status
        for e in events:
            self._event(s, e)
        if status.error:
            s.over = True
            if not s.aborted:
                self._fail(s, status.error.message, CLOSES[status.error.kind])
        elif status.over:
            s.over = True

    def _event(self, s: Stream, e: Event) -> None:
        if e.type == "final":
            s.finals.append(e)
            s.partial = ""
        else:
            s.partial = e.text

    def _answer(self, s: Stream, marks: list[float]) -> None:
        """One answer per message: the oldest final not yet sent, else the current partial."""
        if s.closed or s.aborted or not marks:
            return
        now = time.monotonic()
        out = self._out.setdefault(s, ([], None))[0]
        partial = None  # one JSON for every partial of the batch (a client of 1 ms messages has ~40 a tick)
        for mark in marks:
            if s.finals:
                out.append(protocol.result(s.finals.popleft(), s.words))
                self.metrics.final_latency.observe(now - mark)
            else:
                partial = partial or protocol.partial(s.partial)
                out.append(partial)
                self.metrics.partial_latency.observe(now - mark)

    def _finish_streams(self) -> None:
        for s in [s for s in self._streams if s.over]:
            self._streams.discard(s)
            if s.closed or s.aborted:
                continue
            self._answer(s, s.pending)
            s.pending = []
            if s.eof is None:  # over without an eof: the pipeline ended it (already failed above)
                continue
            out = self._out.setdefault(s, ([], None))[0]
            while len(s.finals) > 1:  # more finals than messages left: none is lost
                out.append(protocol.result(s.finals.popleft(), s.words))
            out.append(protocol.result(s.finals.popleft() if s.finals else None, s.words))
            self.metrics.final_latency.observe(time.monotonic() - s.eof)
            self._out[s] = (out, s.eof_close)
            s.closed = True

    def _fail(self, s: Stream, message: str, code: int) -> None:
        if s.closed:
            return
        out = self._out.setdefault(s, ([], None))[0]
        out.append(protocol.error(message))
        self._out[s] = (out, Close(code, message))
        s.closed = True
        if s.key is not None and not s.over and s.eof is None:
            s.aborted = True
            self.engine.finish(s.key)  # its slot is freed once the flush is through
            self._streams.add(s)
        self.metrics.errors.labels(reason="stream").inc()

    def _flush(self) -> None:
        if self._out:
            out, self._out = self._out, {}
            self.loop.call_soon_threadsafe(_deliver, out)


def _deliver(out: dict[Stream, tuple[list[str], Close | None]]) -> None:
    for s, (answers, close) in out.items():
        try:
            s.deliver(answers, close)
        except Exception as e:  # the last resort: one stream's trouble, one line, the others still delivered
            log.warning("delivering answers failed: %s: %s", type(e).__name__, one_line(e))
