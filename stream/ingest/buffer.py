"""One stream's input between its producer and the pipeline: what is pushed, cut into chunks in arrival order.

Invariants: `buffered` is always the sum of the parts' lengths; the parts share one array layout (rows of the
same trailing shape) and one dtype (PCM mixed with float is scaled to float, all of it); once `ended` (the
producer called finish) nothing more is pushed; input being replayed after a failover (`replay` samples at the
head) is never dropped, since it is exactly what the pipeline had already been sent.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from models.audio import to_float
from models.errors import InputError


@dataclass(frozen=True)
class Limits:
    """How much of a stream one chunk carries and how much may wait (seconds of input)."""

    min_chunk: float = 0.1  # a chunk holds at least this (its last one excepted); 0: any
    max_chunk: float = 10.0
    max_buffer: float = 30.0  # with overflow="drop": input past this is dropped, counted
    overflow: str = "block"  # past the window: "block" the producer, or "drop" input past max_buffer

    def __post_init__(self) -> None:
        if self.overflow not in ("block", "drop"):
            raise ValueError("overflow is 'block' or 'drop'")


@dataclass
class Part:
    data: np.ndarray
    mark: float | None  # time.monotonic() of its arrival, for latency figures
    arrived: float = field(default_factory=time.monotonic)  # its mark, else its push: how far behind we are


@dataclass
class Buffer:
    """A stream's pending input as parts, oldest first."""

    parts: deque[Part] = field(default_factory=deque)
    buffered: int = 0  # samples (rows) in `parts`
    ended: bool = False  # the producer said its input is over (finish)
    replay: int = 0  # samples at the head sent once already, before a failover, still to go again

    @property
    def oldest(self) -> float | None:
        """When the oldest input still here arrived (None: nothing here)."""
        return self.parts[0].arrived if self.parts else None

    def push(self, data: np.ndarray, mark: float | None) -> bool:
        """Queue `data` (checked against what is here); -> False if it was empty."""
        if self.ended:
            raise RuntimeError("stream is finished")
        if self.parts and (data.shape[1:] != self.parts[0].data.shape[1:]):
            raise InputError(f"input shape changed mid-stream: {self.parts[0].data.shape[1:]} -> {data.shape[1:]}")
        if not len(data):
            return False
        if self.parts and data.dtype != self.parts[-1].data.dtype:  # mixed PCM types: scale all to float
            self.parts = deque(Part(to_float(p.data), p.mark, p.arrived) for p in self.parts)
            data = to_float(data)
        self.parts.append(Part(data, mark, time.monotonic() if mark is None else mark))
        self.buffered += len(data)
        return True

    def ready(self, min_samples: float) -> bool:
        """Whether a chunk can go: the producer is done (the last chunk may be short or empty), or enough is here."""
        return self.ended or (self.buffered > 0 and self.buffered >= math.ceil(min_samples))

    def cut(self, most: int, marks: list[float]) -> np.ndarray:
        """The oldest `most` samples at most, as one array; the marks of the parts taken whole go to `marks`."""
        take = min(self.buffered, most)
        pieces, need = [], take
        while need:
            part = self.parts[0]
            if len(part.data) <= need:
                self.parts.popleft()
                pieces.append(part.data)
                need -= len(part.data)
                if part.mark is not None:
                    marks.append(part.mark)
            else:
                pieces.append(part.data[:need])
                part.data = part.data[need:]
                need = 0
        self.buffered -= take
        self.replay = max(0, self.replay - take)
        if not pieces:
            return np.zeros(0, np.float32)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def drop_over(self, most: int) -> int:
        """Drop the oldest input past `most` samples (never a replay); -> how many samples were dropped."""
        if self.replay:
            return 0
        excess = dropped = self.buffered - most
        while excess > 0:
            part = self.parts[0]
            n = min(excess, len(part.data))
            part.data = part.data[n:]
            if not len(part.data):
                self.parts.popleft()
            self.buffered -= n
            excess -= n
        return max(dropped, 0)

    def rewind(self, sent: list[np.ndarray]) -> None:
        """Put input already sent back at the head (failover: the new pipeline is sent it again)."""
        parts = [Part(d, None) for d in sent] + list(self.parts)
        if len({p.data.dtype for p in parts}) > 1:  # PCM sent before a float push
            parts = [Part(to_float(p.data), p.mark, p.arrived) for p in parts]
        self.parts, self.buffered = deque(parts), sum(len(p.data) for p in parts)
        self.replay = sum(len(d) for d in sent)
