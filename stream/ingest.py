"""Where audio enters: each stream's frames are coalesced into chunks of >= 100 ms and, once per tick,
the ready chunks of ALL streams go to the pipeline as one message.

At most `window` ticks are in flight, so a slow stage slows the producer (or, with overflow="drop",
audio past a bound is dropped and counted, never silently). Results come back per tick, in order, and
are routed to their streams. Works with a RayPipeline or a LocalPipeline alike.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from models.audio import AudioError, to_float

from .pipeline import Event
from .stages import Chunk, Key, Update, _reason


class StreamExpired(RuntimeError):
    """The stream sent nothing for longer than the idle timeout: the model freed its slot."""


class PipelineFailed(RuntimeError):
    """An actor of the pipeline died (its node went away): the streams in it are lost."""


# ---------------------------------------------------------------------------------------------
# Ingest: where audio enters. Coalesces, ticks, bounds what is in flight, routes events back.


@dataclass
class IngestStats:
    ticks: int = 0
    chunks: int = 0
    audio_seconds: float = 0.0
    max_inflight: int = 0  # ticks in the pipeline at once (never above the window)
    blocked: int = 0  # times a producer waited for the window: backpressure at work
    blocked_seconds: float = 0.0
    dropped_seconds: float = 0.0  # audio dropped by the "drop" overflow policy (never silently)
    max_buffered_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class _Stream:
    rate: int
    channels: int | None
    parts: deque = field(default_factory=deque)  # [samples, mark]
    buffered: int = 0
    opened: bool = False
    granted: bool = False  # the model promised a slot
    finishing: bool = False
    sent_last: bool = False
    inflight: int = 0
    events: list = field(default_factory=list)
    done: bool = False
    error: str | None = None
    expired: bool = False
    lost: bool = False  # the pipeline died before the stream was over


@dataclass
class _Tick:
    handle: object
    keys: list
    marks: list[float]


class Ingest:
    """Buffers each stream's audio; a tick sends every stream's ready chunk (>= min_chunk s) as one message.

    At most `window` ticks are in flight. Past that, `submit(block=True)` waits for the oldest (the
    producer slows down to the pipeline's pace); with overflow="drop" the producer never waits and a
    stream's buffer beyond `max_buffer` seconds is dropped, counted in `stats.dropped_seconds`.
    """

    def __init__(
        self,
        pipeline,
        min_chunk: float = 0.1,
        max_chunk: float = 10.0,
        window: int = 4,
        overflow: str = "block",
        max_buffer: float = 30.0,
        track_latency: bool = False,
    ):
        if overflow not in ("block", "drop"):
            raise ValueError("overflow is 'block' or 'drop'")
        self.pipeline = pipeline
        self.min_chunk, self.max_chunk, self.window = min_chunk, max(min_chunk, max_chunk), window
        self.overflow, self.max_buffer = overflow, max_buffer
        self.producer = uuid.uuid4().hex[:12]
        self.streams: dict[Key, _Stream] = {}
        self.inflight: deque[_Tick] = deque()
        self.stats = IngestStats()
        self.latencies: list[float] | None = [] if track_latency else None
        self.failed: BaseException | None = None
        self.lock = threading.RLock()
        self._seq = 0
        self._count = 0

    # -- streams

    def open(self, rate: int, channels: int | None = None) -> Key:
        if rate <= 0:
            raise AudioError(f"invalid sample rate {rate}")
        with self.lock:
            key = (self.producer, self._count)
            self._count += 1
            self.streams[key] = _Stream(rate, channels)
            return key

    def push(self, key: Key, samples: np.ndarray, mark: float | None = None) -> None:
        """Queue audio; `mark` (a time.monotonic() of when it arrived) is used to measure latency."""
        samples = np.asarray(samples)
        with self.lock:
            s = self.streams[key]
            if s.finishing:
                raise RuntimeError("stream is finished")
            if s.parts and (samples.shape[1:] != s.parts[0][0].shape[1:]):
                raise AudioError(f"audio shape changed mid-stream: {s.parts[0][0].shape[1:]} -> {samples.shape[1:]}")
            if not len(samples):
                return
            if s.parts and samples.dtype != s.parts[-1][0].dtype:  # mixed PCM types: scale all to float
                s.parts = deque([to_float(p[0]), p[1]] for p in s.parts)
                samples = to_float(samples)
            s.parts.append([samples, mark])
            s.buffered += len(samples)
            self.stats.audio_seconds += len(samples) / s.rate
            if self.overflow == "drop":
                self._drop_overflow(s)
            self.stats.max_buffered_seconds = max(self.stats.max_buffered_seconds, s.buffered / s.rate)

    def finish(self, key: Key) -> None:
        with self.lock:
            self.streams[key].finishing = True

    def ready(self, key: Key) -> bool:
        """Whether the stream has a chunk to send."""
        s = self.streams.get(key)
        return s is not None and self._sendable(s, ignore_grant=True)

    def busy(self, key: Key) -> bool:
        s = self.streams.get(key)
        return s is not None and (s.inflight > 0 or self._sendable(s, ignore_grant=True))

    def take(self, key: Key) -> tuple[list[Event], _Stream]:
        """The stream's events so far (handed over once) and its state; a finished stream is forgotten."""
        with self.lock:
            s = self.streams[key]
            events, s.events = s.events, []
            if s.done and not s.inflight:
                del self.streams[key]
            return events, s

    # -- ticks

    def submit(self, block: bool = True) -> bool:
        """Send one tick with the ready chunk of every stream; False if nothing was sent."""
        with self.lock:
            self._check()
            if len(self.inflight) >= self.window:
                self.stats.blocked += 1
                if not block:
                    return False
                t0 = time.monotonic()
                while len(self.inflight) >= self.window:
                    self.collect(timeout=None)
                self.stats.blocked_seconds += time.monotonic() - t0
            self._reserve()
            chunks, marks = {}, []
            for key, s in self.streams.items():
                if self._sendable(s):
                    chunks[key] = self._chunk(s, marks)
            if not chunks:
                return False
            try:
                handle = self.pipeline.submit(self.producer, self._seq, chunks)
            except Exception as e:
                self._fail(e)
                raise PipelineFailed(f"pipeline failed: {_reason(e)}") from e
            self._seq += 1
            self.inflight.append(_Tick(handle, list(chunks), marks))
            self.stats.ticks += 1
            self.stats.chunks += len(chunks)
            self.stats.max_inflight = max(self.stats.max_inflight, len(self.inflight))
            return True

    def collect(self, timeout: float | None = 0.0) -> int:
        """Deliver finished ticks, oldest first, waiting up to `timeout` (None: for the oldest); -> count."""
        with self.lock:
            self._check()
            if not self.inflight:
                return 0
            done = self.pipeline.ready([t.handle for t in self.inflight], timeout)
            for _ in range(done):
                tick = self.inflight.popleft()
                try:
                    updates = self.pipeline.get(tick.handle)
                except Exception as e:
                    self._fail(e)
                    raise PipelineFailed(f"pipeline failed: {_reason(e)}") from e
                self._deliver(tick, updates)
            return done

    def drain(self, key: Key | None = None) -> None:
        """Send and collect until the stream (or every stream) has nothing queued or in flight."""
        with self.lock:
            while any(self.busy(k) for k in ([key] if key is not None else list(self.streams))):
                if any(self._sendable(s, ignore_grant=True) for s in self.streams.values()) and self.submit(block=True):
                    continue  # (a full window made submit wait: backpressure)
                if self.inflight:
                    self.collect(timeout=None)
                else:
                    time.sleep(0.01)  # new streams wait for a model slot

    def _reserve(self) -> None:
        waiting = [k for k, s in self.streams.items() if not s.granted and self._sendable(s, ignore_grant=True)]
        if waiting:
            try:
                granted = self.pipeline.reserve(waiting)
            except Exception as e:
                self._fail(e)
                raise PipelineFailed(f"pipeline failed: {_reason(e)}") from e
            for key in granted:
                self.streams[key].granted = True

    def _sendable(self, s: _Stream, ignore_grant: bool = False) -> bool:
        if s.done or s.sent_last or not (s.granted or ignore_grant):
            return False
        if s.finishing:
            return True
        return s.buffered >= math.ceil(self.min_chunk * s.rate)

    def _chunk(self, s: _Stream, marks: list) -> Chunk:
        take = min(s.buffered, int(self.max_chunk * s.rate))
        pieces, need = [], take
        while need:
            part = s.parts[0]
            if len(part[0]) <= need:
                s.parts.popleft()
                pieces.append(part[0])
                need -= len(part[0])
                if part[1] is not None:
                    marks.append(part[1])
            else:
                pieces.append(part[0][:need])
                part[0] = part[0][need:]
                need = 0
        s.buffered -= take
        if not pieces:
            samples = np.zeros(0, np.float32)
        else:
            samples = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        last = s.finishing and not s.buffered
        chunk = Chunk(samples, last, None if s.opened else s.rate, None if s.opened else s.channels)
        s.opened, s.sent_last = True, last
        s.inflight += 1
        return chunk

    def _drop_overflow(self, s: _Stream) -> None:
        excess = s.buffered - int(self.max_buffer * s.rate)
        while excess > 0:
            part = s.parts[0]
            n = min(excess, len(part[0]))
            part[0] = part[0][n:]
            if not len(part[0]):
                s.parts.popleft()
            s.buffered -= n
            excess -= n
            self.stats.dropped_seconds += n / s.rate

    def _deliver(self, tick: _Tick, updates: dict[Key, Update]) -> None:
        for key in tick.keys:
            if key in self.streams:
                self.streams[key].inflight -= 1
        for key, u in updates.items():
            s = self.streams.get(key)
            if s is None:
                continue
            s.events += u.events
            if u.error and not s.error:
                s.error, s.expired = u.error, u.expired
            s.done = s.done or u.done
        if self.latencies is not None and tick.marks:
            now = time.monotonic()
            self.latencies += [now - m for m in tick.marks]

    def _fail(self, e: BaseException) -> None:
        self.failed = e
        for s in self.streams.values():
            if not s.done:
                s.done, s.lost, s.error = True, True, f"pipeline failed: {_reason(e)}"

    def _check(self) -> None:
        if self.failed is not None:
            raise PipelineFailed(f"pipeline failed: {_reason(self.failed)}")
