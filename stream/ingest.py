"""Where input enters: each stream's data is coalesced into chunks of >= 100 ms (pen points: any number) and, once
per tick, the ready chunks of ALL streams go to the pipeline as one message.

At most `window` ticks are in flight, so a slow stage slows the producer (or, with overflow="drop",
input past a bound is dropped and counted, never silently). Results come back per tick, in order, and
are routed to their streams. Works with any `Pipeline` (Ray or in-process) alike.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from models.audio import to_float
from models.errors import InputError, one_line

from .backend import Event
from .messages import Chunk, Key, Update
from .pipeline import Pipeline
from .snapshot import StreamState


class StreamExpired(RuntimeError):
    """The stream sent nothing for longer than the idle timeout: the model freed its slot."""


class PipelineFailed(RuntimeError):
    """An actor of the pipeline died (its node went away) and it could not be restarted: the streams are lost."""


class Overloaded(RuntimeError):
    """The pipeline is behind by more than its latency budget: new streams are refused until it catches up (the
    streams already open go on, at the pipeline's pace)."""


class _Recovered(Exception):
    """The pipeline was restarted under a call: what the call was doing is void, the streams are being replayed."""


@dataclass(frozen=True)
class IngestOptions:
    """How a shared recognizer's ingest takes its streams' input (the builders' one place for these defaults)."""

    window: int = 4  # ticks in flight at most
    min_chunk: float = 0.1  # seconds a stream's chunk holds at least (its last one excepted)
    overflow: str = "block"  # past the window: "block" the producer, or "drop" input past max_buffer (counted)
    admit_latency: float | None = None  # the overload policy's budget: see Ingest

    def ingest(self, pipeline: Pipeline, self_timed: bool = False) -> Ingest:
        """`self_timed`: the input's rows carry their own times (pen points), so nothing is held back for `min_chunk`:
        ten points may be 10 ms of ink or the last 3 s of a lifted pen, whose line then never ends (the pen-up points
        that would let its time pass are the ones held)."""
        min_chunk = 0.0 if self_timed else self.min_chunk
        return Ingest(pipeline, min_chunk, window=self.window, overflow=self.overflow, admit_latency=self.admit_latency)


@dataclass
class IngestStats:
    ticks: int = 0
    chunks: int = 0
    audio_seconds: float = 0.0  # input seconds pushed
    max_inflight: int = 0  # ticks in the pipeline at once (never above the window)
    blocked: int = 0  # times a producer waited for the window: backpressure at work
    blocked_seconds: float = 0.0
    dropped_seconds: float = 0.0  # input dropped by the "drop" overflow policy (never silently)
    max_buffered_seconds: float = 0.0
    snapshots: int = 0  # stream states received (failover)
    snapshot_bytes: int = 0
    recoveries: int = 0  # pipelines restarted after a lost worker
    recovery_seconds: float = 0.0  # spent restarting them
    replayed_seconds: float = 0.0  # input sent again after a restart
    replayed_finals: int = 0  # finals given again by a replay, not delivered twice
    refused: int = 0  # new streams refused past the latency budget (Overloaded)

    def to_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class StreamStatus:
    """Where one stream stands, as its producer sees it."""

    finishing: bool  # finish() was called
    done: bool  # the pipeline said its last word (or it failed)
    inflight: int  # ticks carrying its chunks, not yet delivered
    ready: bool  # it has a chunk to send
    error: str | None = None
    expired: bool = False
    lost: bool = False  # the pipeline died before the stream was over

    @property
    def over(self) -> bool:
        """Done and nothing more to come: its events are all delivered."""
        return self.done and not self.inflight


@dataclass
class _Part:
    data: np.ndarray
    mark: float | None  # time.monotonic() of its arrival, for latency figures
    arrived: float = field(default_factory=time.monotonic)  # its mark, else its push: how far behind we are


@dataclass
class _Stream:
    rate: int
    channels: int | None
    parts: deque[_Part] = field(default_factory=deque)
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
    lost: bool = False
    # failover: the input sent since the last snapshot, by tick, and how many finals came before it
    sent: deque = field(default_factory=deque)  # (tick seq, data)
    snapshot: StreamState | None = None  # None: replay from the start
    snapshot_finals: int = 0
    since_snapshot: int = 0  # samples sent since one was last asked for
    restore: StreamState | None = None  # to send with the next opening chunk
    produced: int = 0  # finals the pipeline has given, counted from the start (replays included once)
    delivered: int = 0  # finals delivered to the producer
    replay: int = 0  # samples of input sent again, at the head of `parts`, still to go


@dataclass
class _Tick:
    handle: object
    keys: list
    marks: list[float]
    seq: int = 0
    oldest: float = 0.0  # time.monotonic() when its oldest input arrived at the ingest


class Ingest:
    """Buffers each stream's input; a tick sends every stream's ready chunk (>= min_chunk s; 0: any) as one message.

    At most `window` ticks are in flight. Past that, `submit(block=True)` waits for the oldest (the
    producer slows down to the pipeline's pace); with overflow="drop" the producer never waits and a
    stream's buffer beyond `max_buffer` seconds is dropped, counted in `stats.dropped_seconds`.
    Every method takes the ingest's lock, so many threads can feed their own streams.
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
        if overflow not in ("block", "drop"):
            raise ValueError("overflow is 'block' or 'drop'")
        self.pipeline = pipeline
        self.min_chunk, self.max_chunk, self.window = min_chunk, max(min_chunk, max_chunk), window
        self.overflow, self.max_buffer = overflow, max_buffer
        self.producer = uuid.uuid4().hex[:12]
        self.failover = getattr(pipeline, "restartable", False) if failover is None else failover
        self.snapshot_every, self.max_recoveries = snapshot_every, max_recoveries
        self.admit_latency = admit_latency
        self._phase = 0.0  # of the next stream's snapshots
        self._lag_peak = (0.0, 0.0)  # (when, lag): the highest lag of the last second
        self.stats = IngestStats()
        self.latencies: list[float] | None = [] if track_latency else None
        self._streams: dict[Key, _Stream] = {}
        self._inflight: deque[_Tick] = deque()
        self._failed: BaseException | None = None
        self._closed = False
        self._lock = threading.RLock()
        self._seq = 0
        self._count = 0

    # -- streams

    def open(self, rate: int, channels: int | None = None) -> Key:
        if rate <= 0:
            raise InputError(f"invalid sample rate {rate}")
        with self._lock:
            if self._closed:
                raise RuntimeError("ingest is closed")
            if self.admit_latency is not None and (lag := self.lag()) > self.admit_latency:  # the overload policy
                self.stats.refused += 1
                raise Overloaded(f"overloaded: the pipeline is {lag:.2f} s behind (budget {self.admit_latency:g} s); try again later")
            key = (self.producer, self._count)
            self._count += 1
            self._streams[key] = s = _Stream(rate, channels)
            s.since_snapshot = self._snapshot_phase(s)
            return key

    def push(self, key: Key, data: np.ndarray, mark: float | None = None) -> None:
        """Queue input; `mark` (a time.monotonic() of when it arrived) is used to measure latency."""
        data = np.asarray(data)
        with self._lock:
            s = self._streams[key]
            if s.finishing:
                raise RuntimeError("stream is finished")
            if s.parts and (data.shape[1:] != s.parts[0].data.shape[1:]):
                raise InputError(f"input shape changed mid-stream: {s.parts[0].data.shape[1:]} -> {data.shape[1:]}")
            if not len(data):
                return
            if s.parts and data.dtype != s.parts[-1].data.dtype:  # mixed PCM types: scale all to float
                s.parts = deque(_Part(to_float(p.data), p.mark, p.arrived) for p in s.parts)
                data = to_float(data)
            s.parts.append(_Part(data, mark, time.monotonic() if mark is None else mark))
            s.buffered += len(data)
            self.stats.audio_seconds += len(data) / s.rate
            if self.overflow == "drop" and not s.replay:  # (a replay is never dropped: it is exactly what was sent)
                self._drop_overflow(s)
            self.stats.max_buffered_seconds = max(self.stats.max_buffered_seconds, s.buffered / s.rate)

    def finish(self, key: Key) -> None:
        with self._lock:
            self._streams[key].finishing = True

    def status(self, key: Key) -> StreamStatus | None:
        """The stream's state (None: unknown, or over and taken)."""
        with self._lock:
            s = self._streams.get(key)
            if s is None:
                return None
            ready = self._sendable(s, ignore_grant=True)
            return StreamStatus(s.finishing, s.done, s.inflight, ready, s.error, s.expired, s.lost)

    def take(self, key: Key) -> tuple[list[Event], StreamStatus]:
        """The stream's events so far (handed over once) and its status; a stream that is over is forgotten."""
        with self._lock:
            s = self._streams[key]
            status = self.status(key)
            events, s.events = s.events, []
            if status.over:
                del self._streams[key]
            return events, status

    # -- ticks

    def lag(self) -> float:
        """Seconds the pipeline is behind: how long the oldest input not yet answered has waited, in flight or
        still buffered, at most a second ago (between two ticks nothing may be in flight, yet the pipeline is
        behind: 1.1 s at 300 streams on 2 cores)."""
        with self._lock:
            now = time.monotonic()
            oldest = [t.oldest for t in self._inflight]
            oldest += [s.parts[0].arrived for s in self._streams.values() if s.parts and s.granted]
            lag = now - min(oldest) if oldest else 0.0
            if lag >= self._lag_peak[1] or now - self._lag_peak[0] > 1.0:
                self._lag_peak = (now, lag)
            return self._lag_peak[1]

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def has_room(self) -> bool:
        """Whether a tick can go out without waiting for the window."""
        return len(self._inflight) < self.window

    @property
    def oldest(self) -> object | None:
        """The handle of the oldest tick in flight (for `Pipeline.wait` over many ingests), or None."""
        with self._lock:
            return self._inflight[0].handle if self._inflight else None

    def submit(self, block: bool = True) -> bool:
        """Send one tick with the ready chunk of every stream; False if nothing was sent."""
        with self._lock:
            try:
                return self._submit(block)
            except _Recovered:
                return True  # the streams wait to be replayed

    def _submit(self, block: bool) -> bool:
        with self._lock:
            self._check()
            if len(self._inflight) >= self.window:
                self.stats.blocked += 1
                if not block:
                    return False
                t0 = time.monotonic()
                while len(self._inflight) >= self.window:
                    self.collect(timeout=None)
                self.stats.blocked_seconds += time.monotonic() - t0
            self._reserve()
            chunks, marks, arrivals = {}, [], [time.monotonic()]
            for key, s in self._streams.items():
                if self._sendable(s):
                    if s.parts:
                        arrivals.append(s.parts[0].arrived)
                    chunks[key] = self._chunk(s, marks)
            if not chunks:
                return False
            handle = self._call(self.pipeline.submit, self.producer, self._seq, chunks)
            self._inflight.append(_Tick(handle, list(chunks), marks, self._seq, min(arrivals)))
            self._seq += 1
            self.stats.ticks += 1
            self.stats.chunks += len(chunks)
            self.stats.max_inflight = max(self.stats.max_inflight, len(self._inflight))
            return True

    def collect(self, timeout: float | None = 0.0) -> int:
        """Deliver finished ticks, oldest first, waiting up to `timeout` (None: for the oldest); -> count."""
        with self._lock:
            self._check()
            if not self._inflight:
                return 0
            try:
                done = self._call(self.pipeline.ready, [t.handle for t in self._inflight], timeout)
                for _ in range(done):
                    updates = self._call(self.pipeline.get, self._inflight[0].handle)
                    self._deliver(self._inflight.popleft(), updates)
            except _Recovered:
                return 0
            return done

    def wait(self, timeout: float = 0.05) -> None:
        """Without holding the lock (other threads' input can join the next ticks): until the oldest tick is done,
        at most `timeout`; with nothing in flight a short sleep (new streams wait for a model slot)."""
        oldest = self.oldest
        if oldest is None:
            time.sleep(min(timeout, 0.005))
        else:
            self.pipeline.ready([oldest], timeout)

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
                if any(self._sendable(s, ignore_grant=True) for s in self._streams.values()) and self.submit(block=True):
                    continue  # (a full window made submit wait: backpressure)
                if self._inflight:
                    self.collect(timeout=None)
                else:
                    time.sleep(0.01)  # new streams wait for a model slot

    def close(self) -> None:
        """Refuse new streams; streams not over end with an error (the pipeline is the caller's to close)."""
        with self._lock:
            self._closed = True
            for s in self._streams.values():
                if not s.done:
                    s.done, s.error = True, s.error or "ingest closed"

    # -- internals

    def _busy(self, key: Key) -> bool:
        s = self._streams.get(key)
        return s is not None and (s.inflight > 0 or self._sendable(s, ignore_grant=True))

    def _call(self, method, *args):
        """A pipeline call. A lost worker restarts the pipeline (failover: `_Recovered`); a failure that cannot be
        recovered fails every stream, once."""
        try:
            return method(*args)
        except Exception as e:
            if self._recover(e):
                raise _Recovered from e
            self._fail(e)
            raise PipelineFailed(f"pipeline failed: {one_line(e)}") from e

    def _recover(self, error: BaseException) -> bool:
        """A fresh pipeline, and every open stream set to reopen at its snapshot with its input since."""
        if not self.failover or self.stats.recoveries >= self.max_recoveries:
            return False
        t0 = time.monotonic()
        if not self.pipeline.restart(error):
            return False
        self._inflight.clear()
        self._seq = 0  # the new actors count this producer's ticks from 0
        for s in self._streams.values():
            if not s.done:
                self._rewind(s)
        self.stats.recoveries += 1
        self.stats.recovery_seconds += time.monotonic() - t0
        return True

    def _rewind(self, s: _Stream) -> None:
        replay = [data for _, data in s.sent]
        parts = [_Part(d, None) for d in replay] + list(s.parts)
        if len({p.data.dtype for p in parts}) > 1:  # PCM sent before a float push
            parts = [_Part(to_float(p.data), p.mark, p.arrived) for p in parts]
        s.parts, s.buffered = deque(parts), sum(len(p.data) for p in parts)
        s.opened = s.granted = s.sent_last = False
        s.inflight, s.since_snapshot = 0, self._snapshot_phase(s)
        s.restore, s.produced = s.snapshot, s.snapshot_finals
        s.sent.clear()
        s.replay = sum(len(d) for d in replay)
        self.stats.replayed_seconds += s.replay / s.rate

    def _reserve(self) -> None:
        waiting = [k for k, s in self._streams.items() if not s.granted and self._sendable(s, ignore_grant=True)]
        if waiting:
            for key in self._call(self.pipeline.reserve, waiting):
                self._streams[key].granted = True

    def _sendable(self, s: _Stream, ignore_grant: bool = False) -> bool:
        if s.done or s.sent_last or not (s.granted or ignore_grant):
            return False
        if s.finishing:
            return True
        return s.buffered > 0 and s.buffered >= math.ceil(self.min_chunk * s.rate)

    def _chunk(self, s: _Stream, marks: list) -> Chunk:
        take = min(s.buffered, int(self.max_chunk * s.rate))
        pieces, need = [], take
        while need:
            part = s.parts[0]
            if len(part.data) <= need:
                s.parts.popleft()
                pieces.append(part.data)
                need -= len(part.data)
                if part.mark is not None:
                    marks.append(part.mark)
            else:
                pieces.append(part.data[:need])
                part.data = part.data[need:]
                need = 0
        s.buffered -= take
        s.replay = max(0, s.replay - take)
        if not pieces:
            data = np.zeros(0, np.float32)
        else:
            data = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        last = s.finishing and not s.buffered
        chunk = Chunk(data, last, None if s.opened else s.rate, None if s.opened else s.channels)
        if self.failover:
            self._keep(s, chunk)
        s.opened, s.sent_last = True, last
        s.inflight += 1
        return chunk

    def _snapshot_phase(self, s: _Stream) -> int:
        """Streams opened together ask for their snapshots in different ticks, spread over the interval (golden
        ratio steps), so no tick carries every stream's snapshot (200 streams: 3 MB in one tick every 5 s)."""
        self._phase = (self._phase + 0.6180339887) % 1.0
        return -int(self._phase * self.snapshot_every * s.rate)

    def _keep(self, s: _Stream, chunk: Chunk) -> None:
        """Failover: keep what this chunk sends until a snapshot covers it, and ask for one every few seconds."""
        data = chunk.data.copy()  # the producer may reuse its buffer (100 ms of audio: a few microseconds)
        s.sent.append((self._seq, data))
        if chunk.rate is not None:
            chunk.restore, s.restore = s.restore, None
        s.since_snapshot += len(data)
        if not chunk.last and s.since_snapshot >= self.snapshot_every * s.rate:
            chunk.snapshot, s.since_snapshot = True, 0

    def _drop_overflow(self, s: _Stream) -> None:
        excess = s.buffered - int(self.max_buffer * s.rate)
        while excess > 0:
            part = s.parts[0]
            n = min(excess, len(part.data))
            part.data = part.data[n:]
            if not len(part.data):
                s.parts.popleft()
            s.buffered -= n
            excess -= n
            self.stats.dropped_seconds += n / s.rate

    def _deliver(self, tick: _Tick, updates: dict[Key, Update]) -> None:
        for key in tick.keys:
            if key in self._streams:
                self._streams[key].inflight -= 1
        for key, u in updates.items():
            s = self._streams.get(key)
            if s is None:
                continue
            s.events += self._new_events(s, u.events)
            if u.snapshot is not None:
                self._snapshotted(s, u.snapshot, tick.seq)
            if u.error and not s.error:
                s.error, s.expired = u.error, u.expired
            s.done = s.done or u.done
        if self.latencies is not None and tick.marks:
            now = time.monotonic()
            self.latencies += [now - m for m in tick.marks]

    def _new_events(self, s: _Stream, events: list[Event]) -> list[Event]:
        """All events, except after a replay those of utterances already delivered: no final twice."""
        if not self.failover:
            return events
        out = []
        for e in events:
            if e.type == "final":
                s.produced += 1
                if s.produced <= s.delivered:
                    self.stats.replayed_finals += 1
                    continue
                s.delivered += 1
            elif s.produced < s.delivered:  # a partial of an utterance delivered already
                continue
            out.append(e)
        return out

    def _snapshotted(self, s: _Stream, state: StreamState, seq: int) -> None:
        s.snapshot, s.snapshot_finals = state, s.produced
        while s.sent and s.sent[0][0] <= seq:
            s.sent.popleft()
        self.stats.snapshots += 1
        self.stats.snapshot_bytes += state.nbytes

    def _fail(self, e: BaseException) -> None:
        self._failed = e
        for s in self._streams.values():
            if not s.done:
                s.done, s.lost, s.error = True, True, f"pipeline failed: {one_line(e)}"

    def _check(self) -> None:
        if self._failed is not None:
            raise PipelineFailed(f"pipeline failed: {one_line(self._failed)}")
