"""A stream's state as a value: what failover restores on a fresh pipeline, on any actor and any node.

Invariant: a stream restored from the `StreamState` taken after its tick N, then fed its input after tick N,
gives exactly the events the stream gave without the failure. Each stage adds its part as the tick goes by
(the front end's carried input, the model's slot of h, c and the running mean, the decoder's utterance so far),
so the three parts are of the same point of the stream. Where a library's state cannot be saved the part says how
to rebuild it: the beam decoder by replaying its utterance (stream.backend.BackEndState); soxr's resampler not at
all, so a resampled stream takes no snapshot and is replayed from its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.model import State

from .backend import BackEndState


@dataclass(frozen=True)
class StreamState:
    front: Any  # FrontEnd.snapshot()
    model: State  # the stream's slot: numpy arrays [.., 1, ..]
    back: BackEndState

    @property
    def nbytes(self) -> int:
        """Its size in memory (the pickled size is within a few hundred bytes of it)."""
        front = sum(getattr(v, "nbytes", 8) for v in self.front.values()) if isinstance(self.front, dict) else 0
        return front + sum(a.nbytes for a in self.model) + self.back.nbytes
