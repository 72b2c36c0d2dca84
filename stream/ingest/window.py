"""The ticks an ingest has in flight, oldest first, each a Future of its updates: the one place that waits on them.

Invariants: ticks are delivered in the order they were sent (a producer's events stay in order), so a tick is
done only once every tick before it is (`done` counts from the oldest); `seq` numbers the ticks sent to the
current pipeline from 0, so after a restart (`clear`) the fresh pipeline counts from 0 too.
"""

from __future__ import annotations

from collections import deque
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass

from ..messages import Key, Update


@dataclass
class Tick:
    future: Future[dict[Key, Update]]  # what the pipeline's submit returned
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

    def add(self, future: Future[dict[Key, Update]], keys: list[Key], marks: list[float], oldest: float) -> Tick:
        tick = Tick(future, keys, marks, self.seq, oldest)
        self._ticks.append(tick)
        self.seq += 1
        return tick

    def pop(self) -> Tick:
        return self._ticks.popleft()

    def wait(self, timeout: float | None) -> int:
        """Until the oldest tick is done, at most `timeout` (None: as long as it takes); -> how many ticks are done,
        counted from the oldest (a later tick done before an older one waits its turn)."""
        if self._ticks:
            futures.wait([self._ticks[0].future], timeout)
        n = 0
        while n < len(self._ticks) and self._ticks[n].future.done():
            n += 1
        return n

    def arrivals(self) -> list[float]:
        return [t.oldest for t in self._ticks]

    @staticmethod
    def wait_any(oldest: list[Future], timeout: float | None) -> None:
        """Until one of these ticks (of any ingests, any pipelines) is done, at most `timeout`."""
        if oldest:
            futures.wait(oldest, timeout, return_when=futures.FIRST_COMPLETED)

    def clear(self) -> None:
        """Forget every tick (their pipeline is gone) and number the next ones from 0."""
        self._ticks.clear()
        self.seq = 0
