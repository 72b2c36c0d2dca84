"""Who gets in: the overload policy that refuses new streams while the pipeline lags, and the model's slots.

Invariants:
- With a latency budget, a stream is opened only while the pipeline's lag (its peak over the last second) is
  within it; a refusal raises `Overloaded` and is counted, and the streams already open are never touched.
- A stream sends nothing before the pipeline has granted it a model slot (`reserve`); those not granted ask
  again on the next tick, so a full model holds new streams back instead of failing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..messages import Key
from .errors import Overloaded
from .phase import Phase
from .stats import IngestStats
from .streams import Streams

PEAK_HOLD = 1.0  # seconds a lag peak is remembered: between two ticks nothing may be in flight, yet the pipeline
# is behind (1.1 s at 300 streams on 2 cores), so the lag read at that moment alone would admit too early


class Admission:
    def __init__(self, budget: float | None, stats: IngestStats):
        """`budget`: seconds of lag past which new streams are refused (None: never refused)."""
        self.budget, self.stats = budget, stats
        self._peak = (0.0, 0.0)  # (when, lag): the highest lag of the last PEAK_HOLD seconds

    def lag(self, arrivals: Iterable[float]) -> float:
        """Seconds the pipeline is behind, from when the oldest input not yet answered arrived (`arrivals`: in
        flight or buffered in a stream that has a slot), at its peak over the last second."""
        now = time.monotonic()
        oldest = min(arrivals, default=None)
        lag = now - oldest if oldest is not None else 0.0
        if lag >= self._peak[1] or now - self._peak[0] > PEAK_HOLD:
            self._peak = (now, lag)
        return self._peak[1]

    def admit(self, arrivals: Callable[[], Iterable[float]]) -> None:
        """Raise `Overloaded` (counted) if the pipeline is behind by more than the budget (`arrivals`: as for `lag`,
        read only when there is a budget: it visits every stream)."""
        if self.budget is None:
            return
        if (lag := self.lag(arrivals())) > self.budget:
            self.stats.refused += 1
            raise Overloaded(f"overloaded: the pipeline is {lag:.2f} s behind (budget {self.budget:g} s); try again later")

    @staticmethod
    def waiting(streams: Streams) -> list[Key]:
        """The streams that have a chunk to send but no slot yet: what `Pipeline.reserve` is asked for."""
        return [k for k, s in streams.items() if s.phase is Phase.WAITING_SLOT and streams.sendable(s, ignore_grant=True)]

    @staticmethod
    def grant(streams: Streams, granted: list[Key]) -> None:
        """The slots the pipeline granted: each stream's next chunk opens it."""
        for key in granted:
            streams[key].phase = Phase.GRANTED
