"""The `Ingest`: every stream's buffer, admission and journal behind one lock, and the ticks that carry them.

Invariants:
- Every public method takes the ingest's lock (an RLock: they call each other), so many threads can feed their
  own streams; `wait` alone runs without it, so other threads' input can join the next tick meanwhile.
- At most `window` ticks are in flight; results are delivered per tick, in the order the ticks were sent.
- A pipeline call that fails either restarts the pipeline (failover: the call's work is void and every stream
  not DONE is replayed from its snapshot) or fails every stream, once, and raises `PipelineFailed` from then on.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from enum import Enum
from typing import Literal, TypeVar

import numpy as np

from models.decoding import DecodeOptions
from models.errors import InputError, one_line

from ..backend import Event
from ..errors import Kind, StreamError
from ..messages import Key, Update
from ..pipeline import Pipeline
from .admission import Admission
from .buffer import Limits
from .errors import PipelineFailed
from .journal import FailoverOptions, Journal
from .phase import Stream, StreamStatus
from .stats import IngestStats
from .streams import Streams
from .window import Tick, Window

T = TypeVar("T")


class Outcome(Enum):
    RECOVERED = "the pipeline was restarted under the call: its work is void, the streams are being replayed"


RECOVERED = Outcome.RECOVERED


@dataclass(frozen=True)
class IngestOptions:
    """How a shared recognizer's ingest takes its streams' input (the builders' one place for these defaults)."""

    window: int = 4  # ticks in flight at most
    min_chunk: float = 0.1  # seconds a stream's chunk holds at least (its last one excepted)
    max_chunk: float = 10.0  # seconds a stream's chunk holds at most (files: the batch driver's read size)
    overflow: str = "block"  # past the window: "block" the producer, or "drop" input past max_buffer (counted)
    admit_latency: float | None = None  # the overload policy's budget: see Ingest
    failover: bool | None = None  # replay streams after a lost worker; None: when the pipeline can restart

    def ingest(self, pipeline: Pipeline, self_timed: bool = False) -> Ingest:
        """`self_timed`: the input's rows carry their own times (pen points), so nothing is held back for `min_chunk`:
        ten points may be 10 ms of ink or the last 3 s of a lifted pen, whose line then never ends (the pen-up points
        that would let its time pass are the ones held)."""
        min_chunk = 0.0 if self_timed else self.min_chunk
        return Ingest(pipeline, min_chunk, self.max_chunk, self.window, self.overflow, failover=self.failover,
                      admit_latency=self.admit_latency)


class Ingest:
    """Buffers each stream's input; a tick sends every stream's ready chunk (>= min_chunk s; 0: any) as one message.

    At most `window` ticks are in flight. Past that, `submit(block=True)` waits for the oldest (the
    producer slows down to the pipeline's pace); with overflow="drop" the producer never waits and a
    stream's buffer beyond `max_buffer` seconds is dropped, counted in `stats.dropped_seconds`.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        min_chunk: float = IngestOptions.min_chunk,
        max_chunk: float = 10.0,
        window: int = IngestOptions.window,
        overflow: str = IngestOptions.overflow,
        max_buffer: float = 30.0,
        track_latency: bool = False,
        failover: bool | None = None,
        snapshot_every: float = 5.0,
        max_recoveries: int = 5,
        admit_latency: float | None = None,
    ):
        """`failover` (None: when the pipeline can restart, i.e. on Ray): keep each stream's input since its last
        snapshot (asked for every `snapshot_every` s of input) and, when a worker is lost, restart the pipeline
        and replay every open stream from its snapshot, at most `max_recoveries` times. `admit_latency`: the overload
        policy's budget, in seconds; while the pipeline lags more than that (`lag`), `open` refuses new streams."""
        self.limits = Limits(min_chunk, max(min_chunk, max_chunk), max_buffer, overflow)
        self.pipeline = pipeline
        self.min_chunk, self.max_chunk, self.window = min_chunk, self.limits.max_chunk, window
        self.overflow, self.max_buffer = overflow, max_buffer
        self.producer = uuid.uuid4().hex[:12]
        self.failover = getattr(pipeline, "restartable", False) if failover is None else failover
        self.snapshot_every, self.max_recoveries, self.admit_latency = snapshot_every, max_recoveries, admit_latency
        self.stats = IngestStats()
        self.latencies: list[float] | None = [] if track_latency else None
        self._journal = Journal(FailoverOptions(self.failover, snapshot_every, max_recoveries), self.stats)
        self._admission = Admission(admit_latency, self.stats)
        self._streams = Streams(self.limits, self._journal, self.stats)
        self._ticks = Window(window)
        self._failed: BaseException | None = None
        self._closed, self._lock, self._count = False, threading.RLock(), 0

    # -- streams

    def open(self, rate: int, channels: int | None = None, options: DecodeOptions | None = None) -> Key:
        """A new stream at `rate` with `channels` values a row (None: any), decoded with `options` (None: the
        pipeline's)."""
        if rate <= 0:
            raise InputError(f"invalid sample rate {rate}")
        with self._lock:
            if self._closed:
                raise RuntimeError("ingest is closed")
            self._admission.admit(self._arrivals)  # the overload policy
            key = (self.producer, self._count)
            self._count += 1
            self._streams[key] = Stream(rate, channels, self._journal.entry(rate), options)
            return key

    def push(self, key: Key, data: np.ndarray, mark: float | None = None) -> None:
        """Queue input; `mark` (a time.monotonic() of when it arrived) is used to measure latency."""
        data = np.asarray(data)
        with self._lock:
            self._streams.push(key, data, mark)

    def finish(self, key: Key) -> None:
        with self._lock:
            self._streams[key].buffer.ended = True

    def status(self, key: Key) -> StreamStatus | None:
        """The stream's state (None: unknown, or over and taken)."""
        with self._lock:
            s = self._streams.get(key)
            return None if s is None else s.status(self._streams.sendable(s, ignore_grant=True))

    def take(self, key: Key) -> tuple[list[Event], StreamStatus]:
        """The stream's events so far (handed over once) and its status; a stream that is over is forgotten."""
        with self._lock:
            s = self._streams[key]
            status = self.status(key)
            events, s.events = s.events, []
            if status.over:
                del self._streams[key]
            return events, status

    def take_news(self, wanted: set) -> dict[Key, tuple[list[Event], StreamStatus]]:
        """`take` of each stream in `wanted` given events or ended since the last call, under one lock (a poll)."""
        with self._lock:
            keys, self._streams.news = self._streams.news, set()
            return {key: self.take(key) for key in keys if key in wanted and key in self._streams}

    def close(self) -> None:
        """Refuse new streams, end those not over with an error, void the ticks in flight: every stream is over."""
        with self._lock:
            self._closed = True
            self._streams.end(StreamError(Kind.CLOSED, "ingest closed"))
            self._ticks.clear()
            self._streams.void()

    # -- ticks

    def lag(self) -> float:
        """Seconds the pipeline is behind: how long the oldest input not yet answered has waited, in flight or
        still buffered, at most a second ago (see admission.PEAK_HOLD)."""
        with self._lock:
            return self._admission.lag(self._arrivals())

    def _arrivals(self) -> list[float]:
        return self._ticks.arrivals() + self._streams.arrivals()

    @property
    def inflight(self) -> int:
        return len(self._ticks)

    @property
    def has_room(self) -> bool:
        """Whether a tick can go out without waiting for the window."""
        return not self._ticks.full

    @property
    def oldest(self) -> Future[dict[Key, Update]] | None:
        """The Future of the oldest tick in flight, or None."""
        with self._lock:
            tick = self._ticks.oldest
            return None if tick is None else tick.future

    @staticmethod
    def wait_any(ingests: list[Ingest], timeout: float | None) -> None:
        """Until the oldest tick of one of the ingests is done (whatever their pipelines), at most `timeout`."""
        Window.wait_any([f for i in ingests if (f := i.oldest) is not None], timeout)

    def submit(self, block: bool = True) -> bool:
        """Send one tick with the ready chunk of every stream; False if nothing was sent (True after a failover
        under the call: the streams wait to be replayed)."""
        with self._lock:
            self._check()
            if self._ticks.full:
                self.stats.blocked += 1
                if not block:
                    return False
                t0 = time.monotonic()
                while self._ticks.full:
                    self.collect(timeout=None)
                self.stats.blocked_seconds += time.monotonic() - t0
            waiting = Admission.waiting(self._streams)
            granted = self._call(self.pipeline.reserve, waiting) if waiting else []
            if granted is RECOVERED:
                return True
            Admission.grant(self._streams, granted)
            chunks, marks, oldest = self._streams.cut(self._ticks.seq)
            if not chunks:
                return False
            future = self._call(self.pipeline.submit, self.producer, self._ticks.seq, chunks)
            if future is RECOVERED:
                return True
            self._ticks.add(future, list(chunks), marks, oldest)
            self.stats.ticks += 1
            self.stats.chunks += len(chunks)
            self.stats.max_inflight = max(self.stats.max_inflight, len(self._ticks))
            return True

    def collect(self, timeout: float | None = 0.0) -> int:
        """Deliver finished ticks, oldest first, waiting up to `timeout` (None: for the oldest); -> count."""
        with self._lock:
            self._check()
            if not self._ticks:
                return 0
            done = self._ticks.wait(timeout)
            for _ in range(done):
                updates = self._call(self._ticks.oldest.future.result)  # (a lost worker's error: failover)
                if updates is RECOVERED:
                    return 0
                self._deliver(self._ticks.pop(), updates)
            return done

    def wait(self, timeout: float = 0.05) -> None:
        """Without holding the lock (other threads' input can join the next ticks): until the oldest tick is done,
        at most `timeout`; with nothing in flight a short sleep (new streams wait for a model slot)."""
        oldest = self.oldest
        if oldest is None:
            time.sleep(min(timeout, 0.005))
        else:
            Window.wait_any([oldest], timeout)

    def pump(self, key: Key, block: bool) -> tuple[list[Event], StreamStatus]:
        """Send what is ready and deliver what is done; with `block`, until the stream has nothing queued or in
        flight. -> `take(key)`."""
        while True:
            with self._lock:
                while self.status(key).ready and self.submit(block=False):
                    pass
                self.collect(timeout=0)
                status = self.status(key)
                if not (block and (status.inflight or status.ready)):
                    return self.take(key)
            self.wait()

    def drain(self, key: Key | None = None) -> None:
        """Send and collect until the stream (or every stream) has nothing queued or in flight."""
        with self._lock:
            while any(self._busy(k) for k in ([key] if key is not None else list(self._streams))):
                if any(self._streams.sendable(s, ignore_grant=True) for s in self._streams.values()) and self.submit(block=True):
                    continue  # (a full window made submit wait: backpressure)
                if self._ticks:
                    self.collect(timeout=None)
                else:
                    time.sleep(0.01)  # new streams wait for a model slot

    # -- internals

    def _busy(self, key: Key) -> bool:
        s = self._streams.get(key)
        return s is not None and (s.inflight > 0 or self._streams.sendable(s, ignore_grant=True))

    def _deliver(self, tick: Tick, updates: dict[Key, Update]) -> None:
        self._streams.deliver(tick, updates)
        if self.latencies is not None and tick.marks:
            now = time.monotonic()
            self.latencies += [now - m for m in tick.marks]

    def _call(self, method: Callable[..., T], *args) -> T | Literal[Outcome.RECOVERED]:
        """A pipeline call. A lost worker restarts the pipeline (failover): -> RECOVERED, and what the call was doing
        is void. A failure that cannot be recovered fails every stream, once, and raises PipelineFailed."""
        try:
            return method(*args)
        except Exception as e:
            if self._recover(e):
                return RECOVERED
            self._fail(e)
            raise PipelineFailed(f"pipeline failed: {one_line(e)}") from e

    def _recover(self, error: BaseException) -> bool:
        """A fresh pipeline, and every stream not DONE set to reopen at its snapshot with its input since."""
        if not self._journal.may_recover():
            return False
        t0 = time.monotonic()
        if not self.pipeline.restart(error):
            return False
        self._ticks.clear()  # (the new actors count this producer's ticks from 0)
        self._streams.rewind()
        self.stats.recoveries += 1
        self.stats.recovery_seconds += time.monotonic() - t0
        return True

    def _fail(self, e: BaseException) -> None:
        self._failed = e
        self._streams.end(StreamError(Kind.LOST, f"pipeline failed: {one_line(e)}"), override=True)

    def _check(self) -> None:
        if self._failed is not None:
            raise PipelineFailed(f"pipeline failed: {one_line(self._failed)}")
