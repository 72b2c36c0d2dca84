"""Every stream of an ingest by key, and what a tick does to them: cut their chunks, deliver their updates.

Invariants (the ingest's lock held around every call): a stream's `inflight` counts exactly the ticks in flight
that carry a chunk of it; a stream is sent a chunk only while its phase is live and it holds a slot, and the
chunk that opens it (its first since it was granted) is the only one that carries its rate, channels and the
state it reopens at; an update is delivered to a stream once, through the journal (no final twice); `news` holds
every stream a delivery or an end may have changed since its producer last looked (what a poll reads, not every
stream).
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import StreamError
from ..messages import Chunk, Key, Update
from .buffer import Limits
from .journal import Journal
from .phase import Phase, Stream
from .stats import IngestStats
from .window import Tick


class Streams(dict[Key, Stream]):
    def __init__(self, limits: Limits, journal: Journal, stats: IngestStats):
        super().__init__()
        self.limits, self.journal, self.stats = limits, journal, stats
        self.news: set[Key] = set()  # streams with events, or a status, their producer has not seen

    def __delitem__(self, key: Key) -> None:
        super().__delitem__(key)
        self.news.discard(key)

    def push(self, key: Key, data: np.ndarray, mark: float | None) -> None:
        s = self[key]
        if not s.buffer.push(data, mark):
            return
        self.stats.audio_seconds += len(data) / s.rate
        if self.limits.overflow == "drop":
            self.stats.dropped_seconds += s.buffer.drop_over(int(self.limits.max_buffer * s.rate)) / s.rate
        self.stats.max_buffered_seconds = max(self.stats.max_buffered_seconds, s.buffer.buffered / s.rate)

    def sendable(self, s: Stream, ignore_grant: bool = False) -> bool:
        """Whether it has a chunk to go (`ignore_grant`: were it granted a slot)."""
        if not s.phase.live or (s.phase is Phase.WAITING_SLOT and not ignore_grant):
            return False
        return s.buffer.ready(self.limits.min_chunk * s.rate)

    def arrivals(self) -> list[float]:
        """When the oldest input buffered in each stream holding a slot arrived (what the lag is read from)."""
        return [s.buffer.oldest for s in self.values() if s.buffer.parts and s.phase.holds_slot]

    def cut(self, seq: int) -> tuple[dict[Key, Chunk], list[float], float]:
        """Tick `seq`'s chunks: one of every stream that has one to send. -> (chunks, the marks of the input
        they carry whole, when the oldest input they carry arrived)."""
        chunks, marks, arrivals = {}, [], [time.monotonic()]
        for key, s in self.items():
            if self.sendable(s):
                if s.buffer.parts:
                    arrivals.append(s.buffer.oldest)
                chunks[key] = self._chunk(s, seq, marks)
        return chunks, marks, min(arrivals)

    def _chunk(self, s: Stream, seq: int, marks: list[float]) -> Chunk:
        data = s.buffer.cut(int(self.limits.max_chunk * s.rate), marks)
        last = s.buffer.ended and not s.buffer.buffered
        opening = s.phase is Phase.GRANTED
        chunk = Chunk(data, last, s.rate if opening else None, s.channels if opening else None,
                      options=s.options if opening else None)
        self.journal.keep(s.journal, s.rate, seq, chunk)
        s.phase = Phase.LAST_SENT if last else Phase.OPEN
        s.inflight += 1
        return chunk

    def deliver(self, tick: Tick, updates: dict[Key, Update]) -> None:
        for key in tick.keys:
            if key in self:
                self[key].inflight -= 1
                self.news.add(key)
        for key, u in updates.items():
            s = self.get(key)
            if s is None:
                continue
            self.news.add(key)
            s.events += self.journal.new_events(s.journal, u.events)
            if u.snapshot is not None:
                self.journal.snapshotted(s.journal, u.snapshot, tick.seq)
            if u.error:
                s.fail(u.error)
            if u.done:
                s.phase = Phase.DONE

    def rewind(self) -> None:
        """Failover: every stream not DONE waits for a slot of the new pipeline, its input since its snapshot first."""
        for s in self.values():
            if s.phase is not Phase.DONE:
                s.buffer.rewind(self.journal.rewind(s.journal, s.rate))
                s.phase, s.inflight = Phase.WAITING_SLOT, 0
                self.stats.replayed_seconds += s.buffer.replay / s.rate
        self.void()

    def void(self) -> None:
        """The ticks in flight are void (their pipeline is gone, or the ingest closed): no stream waits for them. A
        DONE stream that did (its error came in one tick while the next carried its chunk) is over now: news."""
        for key, s in self.items():
            if s.inflight:
                s.inflight = 0
                self.news.add(key)

    def end(self, error: StreamError, override: bool = False) -> None:
        """Every stream not DONE is ended by `error` (the first reason a stream had stays, unless `override`)."""
        for key, s in self.items():
            if s.phase is not Phase.DONE:
                s.phase = Phase.DONE
                s.fail(error, override)
                self.news.add(key)
