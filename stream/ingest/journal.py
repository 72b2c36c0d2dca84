"""Failover's record of each stream: the input sent since its last snapshot, and which finals were delivered.

Invariants:
- A stream's `Entry.sent` holds exactly the chunks sent after the tick of its last snapshot (all of them before
  the first), so the snapshot plus `sent` replayed gives the new pipeline the stream's whole state.
- No final is delivered twice: `produced` counts the finals the pipeline has given from the stream's start
  (rewound to the snapshot's count on a replay), `delivered` those handed to the producer; a final is passed on
  only when `produced` goes past `delivered`, and so are the partials after it.
- With failover off (`enabled` False) nothing is kept and every event passes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..backend import Event
from ..messages import Chunk
from ..snapshot import StreamState
from .stats import IngestStats

GOLDEN = 0.6180339887  # the step that spreads streams' snapshot points most evenly over the interval


@dataclass(frozen=True)
class FailoverOptions:
    enabled: bool = False
    snapshot_every: float = 5.0  # seconds of a stream's input between two snapshots
    max_recoveries: int = 5  # pipeline restarts at most; past that the streams are lost


@dataclass
class Entry:
    """What failover keeps of one stream."""

    sent: deque = field(default_factory=deque)  # (tick seq, data) since the last snapshot
    snapshot: StreamState | None = None  # None: replay from the start
    snapshot_finals: int = 0  # finals produced before the snapshot
    since_snapshot: int = 0  # samples sent since one was last asked for
    restore: StreamState | None = None  # to send with the next opening chunk
    produced: int = 0  # finals the pipeline has given, counted from the start (replays included once)
    delivered: int = 0  # finals delivered to the producer


class Journal:
    """Every stream's Entry is kept through here (the snapshot schedule is the journal's, across streams)."""

    def __init__(self, options: FailoverOptions, stats: IngestStats):
        self.options, self.stats = options, stats
        self._spread = 0.0  # of the next stream's snapshot points, in intervals

    @property
    def enabled(self) -> bool:
        return self.options.enabled

    def may_recover(self) -> bool:
        return self.options.enabled and self.stats.recoveries < self.options.max_recoveries

    def entry(self, rate: int) -> Entry:
        return Entry(since_snapshot=self._offset(rate))

    def _offset(self, rate: int) -> int:
        """Streams opened together ask for their snapshots in different ticks, spread over the interval (golden
        ratio steps), so no tick carries every stream's snapshot (200 streams: 3 MB in one tick every 5 s)."""
        self._spread = (self._spread + GOLDEN) % 1.0
        return -int(self._spread * self.options.snapshot_every * rate)

    def keep(self, e: Entry, rate: int, seq: int, chunk: Chunk) -> None:
        """Keep what this chunk sends until a snapshot covers it, and ask for one every few seconds."""
        if not self.options.enabled:
            return
        data = chunk.data.copy()  # the producer may reuse its buffer (100 ms of audio: a few microseconds)
        e.sent.append((seq, data))
        if chunk.rate is not None:
            chunk.restore, e.restore = e.restore, None
        e.since_snapshot += len(data)
        if not chunk.last and e.since_snapshot >= self.options.snapshot_every * rate:
            chunk.snapshot, e.since_snapshot = True, 0

    def snapshotted(self, e: Entry, state: StreamState, seq: int) -> None:
        """The stream's state after tick `seq`: what was sent up to it is covered."""
        e.snapshot, e.snapshot_finals = state, e.produced
        while e.sent and e.sent[0][0] <= seq:
            e.sent.popleft()
        self.stats.snapshots += 1
        self.stats.snapshot_bytes += state.nbytes

    def rewind(self, e: Entry, rate: int) -> list[np.ndarray]:
        """After a restart: the stream reopens at its snapshot; -> the input to send again after it."""
        replay = [data for _, data in e.sent]
        e.sent.clear()
        e.since_snapshot = self._offset(rate)
        e.restore, e.produced = e.snapshot, e.snapshot_finals
        return replay

    def new_events(self, e: Entry, events: list[Event]) -> list[Event]:
        """All events, except after a replay those of utterances already delivered: no final twice."""
        if not self.options.enabled:
            return events
        out = []
        for ev in events:
            if ev.type == "final":
                e.produced += 1
                if e.produced <= e.delivered:
                    self.stats.replayed_finals += 1
                    continue
                e.delivered += 1
            elif e.produced < e.delivered:  # a partial of an utterance delivered already
                continue
            out.append(ev)
        return out
