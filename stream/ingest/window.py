"""The ticks an ingest has in flight, oldest first: at most `size` of them, numbered as the pipeline sees them.

Invariants: ticks are delivered in the order they were sent (a producer's events stay in order); `seq` numbers
the ticks sent to the current pipeline from 0, so after a restart (`clear`) the fresh pipeline counts from 0 too.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..messages import Key


@dataclass
class Tick:
    handle: object  # what the pipeline's submit returned
    keys: list[Key]  # the streams it carries a chunk of
    marks: list[float]  # arrival marks of the input it carries whole (latency figures)
    seq: int
    oldest: float  # time.monotonic() when its oldest input arrived at the ingest


class Window:
    def __init__(self, size: int):
        self.size = size
        self.seq = 0  # of the next tick
        self._ticks: deque[Tick] = deque()

    def __len__(self) -> int:
        return len(self._ticks)

    @property
    def full(self) -> bool:
        return len(self._ticks) >= self.size

    @property
    def oldest(self) -> Tick | None:
        return self._ticks[0] if self._ticks else None

    def add(self, handle: object, keys: list[Key], marks: list[float], oldest: float) -> Tick:
        tick = Tick(handle, keys, marks, self.seq, oldest)
        self._ticks.append(tick)
        self.seq += 1
        return tick

    def pop(self) -> Tick:
        return self._ticks.popleft()

    def handles(self) -> list:
        return [t.handle for t in self._ticks]

    def arrivals(self) -> list[float]:
        return [t.oldest for t in self._ticks]

    def clear(self) -> None:
        """Forget every tick (their pipeline is gone) and number the next ones from 0."""
        self._ticks.clear()
        self.seq = 0
