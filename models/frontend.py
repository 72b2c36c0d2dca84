"""The front-end interface: a modality's raw input (audio samples, pen points) -> model frames, streaming-exact.

A front end has two parts. Its `Extractor` (one per model, shared by every stream) holds the configuration the
checkpoint saves and does the work worth batching across streams. A `FrontEnd` (one per stream) carries that
stream's state from chunk to chunk. Invariant of every front end: any split of a stream's input into chunks gives
the same frames as the whole input at once (the property tests check it).

A tick runs, for the chunks of many streams: `FrontEnd.cut` per stream (cheap: conversion, buffering,
framing), one `Extractor.transform` over all their cuts, then `FrontEnd.steps` per stream (the whole model steps
now ready: a multiple of the model's `stack` frames). `extract` is those three; `extract_all`, what a tick calls,
lets an extractor do the cuts of many streams at once (`extract_many`: the audio front end's steady streams). The
checkpoint names its front end (`FRONT_ENDS`) and stores its config; nothing downstream of the frames knows the
modality.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

# name -> "module:Extractor class"; imported when a checkpoint names it.
FRONT_ENDS = {"logmel": "models.features:LogMelExtractor", "pen": "models.pen:PenExtractor"}
DEFAULT_FRONT_END = "logmel"  # checkpoints from before front ends had names are log-mel audio models


class FrontEnd(Protocol):
    """One stream's carried state."""

    def cut(self, data: np.ndarray, last: bool = False) -> torch.Tensor:
        """The stream's next input -> raw frames for `Extractor.transform`; `last` ends the stream."""
        ...

    def steps(self, frames: torch.Tensor) -> torch.Tensor:
        """Transformed frames -> the model steps now complete, [steps * stack, dim]; the rest waits."""
        ...

    def snapshot(self) -> Any | None:
        """The carried state as a value (picklable, small), or None where a library's state cannot be saved
        (soxr's resampler): such a stream is rebuilt by replaying its input from the start."""
        ...

    def restore(self, state: Any) -> None:
        """Continue exactly where the stream that gave `state` stood (on a fresh front end of the same stream)."""
        ...


class Extractor(Protocol):
    """What every stream of a model shares."""

    config: Any  # a frozen dataclass with to_dict(): saved in the checkpoint
    dim: int  # values per frame (the model's input_dim)
    tokens: list[str]  # a new model's default tokens (training)
    feature_floor: float  # the frame value of silence (digital silence, a resting pen): the model's running mean skips it
    rate: int  # the input's default rate: samples (audio) or points (pen) per second
    frame_seconds: float  # input seconds per frame
    tail_steps: int  # model steps a stream's end adds after its input (the back end keeps times inside the input)
    medium: str  # what its input is called in reports ("audio", "ink")
    self_timed: bool  # each input row carries its own time (pen points); False: rows come `rate` a second (samples)
    suffixes: frozenset[str]  # the file suffixes it reads (lower case, with the dot)

    def open(self, rate: int | None = None, channels: int | None = None) -> FrontEnd:
        """A new stream at `rate` (None: `self.rate`) with `channels` values per sample (None: any)."""
        ...

    def transform(self, cuts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Many streams' cuts at once -> their frames, in order."""
        ...

    def info(self, path: str | Path) -> tuple[int, int | None, float]:
        """A file's (rate, channels, duration in seconds); InputError naming the file if it is not usable."""
        ...

    def blocks(self, path: str | Path, size: int) -> Iterator[np.ndarray]:
        """The file's input in blocks of at most `size` samples (or points), ready for `FrontEnd.cut`."""
        ...


def extractor_class(name: str) -> type:
    if name not in FRONT_ENDS:
        raise ValueError(f"unknown front end {name!r} (known: {', '.join(sorted(FRONT_ENDS))})")
    module, cls = FRONT_ENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_extractor(name: str, config: Any, stack: int) -> Extractor:
    """The named front end for a model that steps `stack` frames at a time; `config` its dataclass or a dict."""
    cls = extractor_class(name)
    if isinstance(config, dict):
        config = cls.Config(**config)
    return cls(config, stack)


def whole_steps(pending: torch.Tensor, frames: torch.Tensor, stack: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames carried from the last chunk and this chunk's -> (the whole model steps now ready, [steps * stack,
    dim], and the frames short of a step, carried to the next chunk): what every FrontEnd.steps does."""
    pending = torch.cat([pending, frames]) if pending.shape[0] else frames
    n = pending.shape[0]
    ready = n // stack * stack
    return pending if ready == n else pending[:ready], pending[ready:]


def whole_steps_many(pendings: list[torch.Tensor], frames: torch.Tensor, sizes: list[int],
                     stack: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """`whole_steps` for many streams at once: each one's carried frames `pendings[i]` and its `sizes[i]` new frames
    (the rows of `frames`, stream after stream) -> (each one's ready steps, each one's frames carried on). The same
    rows as stream by stream, gathered in two index calls: a stream's own cat and slices cost ~12 us a tick."""
    n = len(pendings)
    carried = np.fromiter((p.shape[0] for p in pendings), np.int64, n)
    new = np.asarray(sizes, np.int64)
    total = carried + new
    ready = total // stack * stack
    held = [p for p, c in zip(pendings, carried) if c]
    source = torch.cat([*held, frames]) if held else frames  # the carried frames first, then the new ones
    stream = np.repeat(np.arange(n), total)
    j = np.arange(int(total.sum())) - np.repeat(np.cumsum(total) - total, total)  # a row's place in its stream
    first_new = int(carried.sum()) + np.cumsum(new) - new - carried  # (+ j: where a new row of the stream is)
    rows = np.where(j < carried[stream], (np.cumsum(carried) - carried)[stream] + j, first_new[stream] + j)
    ready_row = j < ready[stream]
    out = source[torch.from_numpy(rows[ready_row]).to(frames.device)].split(ready.tolist())
    kept = source[torch.from_numpy(rows[~ready_row]).to(frames.device)].split((total - ready).tolist())
    return list(out), list(kept)


@torch.no_grad()
def extract(extractor: Extractor, fronts: list[FrontEnd], cuts: list[torch.Tensor]) -> list[torch.Tensor]:
    """The shared transform over many streams' cuts, then each stream's whole steps."""
    if not fronts:
        return []
    return [front.steps(frames) for front, frames in zip(fronts, extractor.transform(cuts))]


def extract_all(extractor: Extractor, fronts: list[FrontEnd], inputs: list[np.ndarray],
                lasts: list[bool]) -> list[torch.Tensor | Exception]:
    """A tick's streams: each one's next input -> its whole model steps now ready, or the exception its input
    raised (its own: the others go on). The extractor's `extract_many` where it has one (the audio front end frames
    its steady streams as one array), else `cut` stream by stream and `extract`."""
    many = getattr(extractor, "extract_many", None)
    if many is not None:
        return many(fronts, inputs, lasts)
    cuts = cut_each(fronts, inputs, lasts)
    ok = [i for i, c in enumerate(cuts) if not isinstance(c, Exception)]
    for i, frames in zip(ok, extract(extractor, [fronts[i] for i in ok], [cuts[i] for i in ok])):
        cuts[i] = frames
    return cuts


def cut_rest_and_step(fronts: list[FrontEnd], inputs: list[np.ndarray], lasts: list[bool],
                      out: list[torch.Tensor | Exception | None], done: list[int], parts: list[torch.Tensor],
                      sizes: list[int], transform: Callable[[torch.Tensor], torch.Tensor],
                      stack: int) -> list[torch.Tensor | Exception]:
    """The end an `extract_many` shares: the streams `done` (cut together already: `parts`, `sizes[k]` rows for
    `done[k]`) and those failed (an exception in `out`) aside, the rest are cut one by one; every cut goes through
    `transform` as one call, then each stream's whole steps, written into `out` (its carried frames kept)."""
    taken = set(done)
    rest = [i for i in range(len(fronts)) if i not in taken and out[i] is None]
    chosen, parts, sizes = list(done), list(parts), list(sizes)
    for i, cut in zip(rest, cut_each([fronts[i] for i in rest], [inputs[i] for i in rest], [lasts[i] for i in rest])):
        if isinstance(cut, Exception):
            out[i] = cut
        else:
            chosen.append(i)
            parts.append(cut)
            sizes.append(cut.shape[0])
    if chosen:
        frames = transform(parts[0] if len(parts) == 1 else torch.cat(parts))
        ready, kept = whole_steps_many([fronts[i]._pending for i in chosen], frames, sizes, stack)
        for i, steps, carried in zip(chosen, ready, kept):
            out[i], fronts[i]._pending = steps, carried
    return out  # type: ignore[return-value]


def cut_each(fronts: list[FrontEnd], inputs: list[np.ndarray], lasts: list[bool]) -> list[torch.Tensor | Exception]:
    """Each stream's `cut`, or the exception it raised."""
    out: list[torch.Tensor | Exception] = []
    for front, data, last in zip(fronts, inputs, lasts):
        try:
            out.append(front.cut(data, last))
        except Exception as e:  # one stream's bad input must not fail the others
            out.append(e)
    return out
