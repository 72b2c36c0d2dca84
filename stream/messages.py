"""What travels between the pipeline's stages: one message per tick, each covering many streams.

In this process the stages hand each other tensors by stream. Where a message leaves the process (to a Ray actor,
to a child process), the arrays of many streams are packed into one buffer (one thing to serialise, not one per
stream): a tick's input as `Chunks`, and `Frames` packs its features itself when it is pickled. Streams are named by
a `Key`: (producer id, number).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import torch

from models.decoding import DecodeOptions

from .backend import Event
from .errors import StreamError
from .snapshot import StreamState

Key = Hashable


@dataclass
class Chunk:
    """One stream's input in one tick; `rate` is set on the first chunk only (it opens the stream)."""

    data: np.ndarray  # audio samples [n] / [n, channels], or pen points [n, values]
    last: bool = False
    rate: int | None = None
    channels: int | None = None
    snapshot: bool = False  # send the stream's StreamState after this chunk back with its events
    restore: StreamState | None = None  # with `rate`: the stream opens where this state stood (failover)
    options: DecodeOptions | None = None  # with `rate`: the stream's own decoding (None: the pipeline's)


@dataclass
class Chunks:
    """A tick's chunks for the wire: streams with the same array layout share one array."""

    keys: list
    lengths: list[int]
    group: list[int]  # index into data
    data: list[np.ndarray]
    last: list  # streams whose last chunk this is
    opens: dict  # stream -> (rate, channels) on its first chunk
    snapshots: list = field(default_factory=list)  # streams whose state is asked for after this tick
    restores: dict = field(default_factory=dict)  # stream -> StreamState it reopens at
    options: dict = field(default_factory=dict)  # stream -> its own DecodeOptions, on its first chunk

    @classmethod
    def pack(cls, chunks: dict[Key, Chunk]) -> Chunks:
        layouts: dict[tuple, int] = {}
        parts: list[list[np.ndarray]] = []
        packed = cls(list(chunks), [], [], [], [], {})
        for key, c in chunks.items():
            g = layouts.setdefault((c.data.dtype.str, c.data.shape[1:]), len(layouts))
            if g == len(parts):
                parts.append([])
            parts[g].append(c.data)
            packed.lengths.append(len(c.data))
            packed.group.append(g)
            if c.last:
                packed.last.append(key)
            if c.rate is not None:
                packed.opens[key] = (c.rate, c.channels)
            if c.snapshot:
                packed.snapshots.append(key)
            if c.restore is not None:
                packed.restores[key] = c.restore
            if c.options is not None:
                packed.options[key] = c.options
        packed.data = [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]
        return packed

    def unpack(self) -> dict[Key, Chunk]:
        offsets = [0] * len(self.data)
        last, snapshots, out = set(self.last), set(self.snapshots), {}
        for key, n, g in zip(self.keys, self.lengths, self.group):
            rate, channels = self.opens.get(key, (None, None))
            data = self.data[g][offsets[g] : offsets[g] + n]
            out[key] = Chunk(data, key in last, rate, channels, key in snapshots, self.restores.get(key),
                             self.options.get(key))
            offsets[g] += n
        return out


@dataclass
class Packed:
    """Many streams' [n_i, dim] tensors as one array."""

    keys: list
    lengths: list[int]
    data: np.ndarray

    @classmethod
    def pack(cls, tensors: dict, dim: int) -> Packed:
        keys = list(tensors)
        data = torch.cat([tensors[k] for k in keys]).numpy() if keys else np.zeros((0, dim), np.float32)
        return cls(keys, [tensors[k].shape[0] for k in keys], data)  # (len() of a tensor: four calls)

    def unpack(self) -> dict:
        if not self.keys:
            return {}
        data = torch.from_numpy(np.require(self.data, requirements="W"))  # Ray hands out read-only views
        return dict(zip(self.keys, data.split(self.lengths)))


@dataclass
class Frames:
    """features -> model."""

    features: dict[Key, torch.Tensor]  # stream -> its model-ready frames [steps * stack, dim]
    opened: list = field(default_factory=list)
    closed: list = field(default_factory=list)  # their last chunk: end after this step
    errors: dict = field(default_factory=dict)  # stream -> its StreamError; the stream is dropped
    snapshots: dict = field(default_factory=dict)  # stream -> its front end's state after this tick
    restores: dict = field(default_factory=dict)  # stream -> the StreamState it reopens at
    options: dict = field(default_factory=dict)  # stream -> its own DecodeOptions (opened in this tick)

    def __getstate__(self) -> dict:
        """To another process (features actor -> model actor): every stream's frames as one array."""
        return {**self.__dict__, "features": Packed.pack(self.features, 0)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, features=state["features"].unpack())


@dataclass
class Probs:
    """model -> decoder."""

    log_probs: Packed
    closed: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    expired: dict = field(default_factory=dict)  # streams freed by the idle timeout -> why
    snapshots: dict = field(default_factory=dict)  # stream -> (front end's, model's state) after this tick
    restores: dict = field(default_factory=dict)  # stream -> the BackEndState its decoder reopens at
    options: dict = field(default_factory=dict)  # stream -> its own DecodeOptions (opened in this tick)


@dataclass
class Update:
    """decoder -> ingest: one stream's new events, and whether it is over."""

    events: list[Event] = field(default_factory=list)
    done: bool = False
    error: StreamError | None = None
    snapshot: StreamState | None = None  # asked for with the tick's chunk: the stream's state after it
