"""The recognizer: load a model once, open any number of independent streaming sessions.

A Session is one stream through a LocalPipeline of its own: the same stages, batcher and model call that step
many streams at once, with one stream. Everything else (files, the microphone, Ray, servers) is built from
these pieces, and `RecognizerLike` / `SessionLike` are what its callers rely on, in process or on Ray.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from models.checkpoint import DEFAULT_MODEL, Checkpoint, load_checkpoint
from models.decoding import DecodeOptions
from models.frontend import Extractor, FrontEnd

from .backend import BackEnd, EndpointConfig, Event
from .engine import Engine
from .ingest import IngestOptions
from .messages import Chunk
from .options import recommended_options
from .pipeline import LocalPipeline, PipelineSpec
from .shared import SharedRecognizer, exception


class SessionLike(Protocol):
    """One stream: `accept` input of any size, then `finish`; both return the new events."""

    def accept(self, data: np.ndarray) -> list[Event]: ...

    def finish(self) -> list[Event]: ...


class RecognizerLike(Protocol):
    """Opens sessions: the in-process `Recognizer` and `stream.distributed.RayRecognizer` alike."""

    extractor: Extractor  # the model's front end (what a file of its input holds, rates)
    sample_rate: int  # the input rate sessions get by default (samples or points per second)
    step_seconds: float

    def session(self, sample_rate: int | None = None, channels: int | None = None,
                options: DecodeOptions | None = None) -> SessionLike:
        """A stream at `sample_rate` (None: the model's) decoded with `options` (None: the recognizer's)."""
        ...

    def close(self) -> None: ...


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class Recognizer:
    def __init__(
        self,
        checkpoint: Checkpoint,
        options: DecodeOptions | None = None,
        endpoint: EndpointConfig = EndpointConfig(),
    ):
        """`options=None`: the decoding recommended by the checkpoint (see `recommended_options`)."""
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.tokenizer = checkpoint.tokenizer
        self.options = options if options is not None else recommended_options(checkpoint)
        self.endpoint = endpoint
        self.extractor = checkpoint.extractor()
        self.sample_rate = self.extractor.rate
        self.step_seconds = self.extractor.frame_seconds * self.model.cfg.stack

    @classmethod
    def load(
        cls,
        model: str | Path | bytes = DEFAULT_MODEL,
        device: str | None = None,
        options: DecodeOptions | None = None,
        endpoint: EndpointConfig = EndpointConfig(),
    ) -> Recognizer:
        """`model`: a bundled model's name, a checkpoint file or its bytes."""
        return cls(load_checkpoint(model, device or default_device()), options, endpoint)

    def with_options(self, **changes) -> Recognizer:
        """The same loaded model with other decoding options (e.g. beam=0 for greedy)."""
        return Recognizer(self.checkpoint, replace(self.options, **changes), self.endpoint)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def frontend(self, sample_rate: int | None = None, channels: int | None = None) -> FrontEnd:
        return self.extractor.open(sample_rate, channels)

    def backend(self, options: DecodeOptions | None = None) -> BackEnd:
        """A stream's decoding: with `options` (a stream's own), else the recognizer's."""
        return BackEnd(self.tokenizer, self.step_seconds, options or self.options, self.endpoint, self.extractor.tail_steps)

    def pipeline(self, spec: PipelineSpec = PipelineSpec()) -> LocalPipeline:
        """The stages for many streams in this process (the spec's batcher limits; its decoding is this one's)."""
        return LocalPipeline(self.extractor, self.model, self.backend, spec)

    def session(self, sample_rate: int | None = None, channels: int | None = None,
                options: DecodeOptions | None = None) -> Session:
        return Session(self, sample_rate or self.sample_rate, channels, options)

    def shared(self, spec: PipelineSpec = PipelineSpec(), ingest: IngestOptions = IngestOptions()) -> SharedRecognizer:
        """Sessions (from any threads) that share one pipeline in this process: one batched model call per tick
        for all of them, as on Ray. A Session has a pipeline of its own."""
        return SharedRecognizer(Engine(self.checkpoint, self.pipeline(spec), ingest, options=self.options))

    def close(self) -> None:
        """Nothing to release in process (RecognizerLike)."""

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Session:
    """One stream: `accept` chunks of any size, then `finish`; both return the new events. Bad input raises
    InputError and ends the session."""

    _KEY = 0

    def __init__(self, recognizer: Recognizer, sample_rate: int, channels: int | None = None,
                 options: DecodeOptions | None = None):
        self.pipeline = recognizer.pipeline(PipelineSpec(slots=1))  # its own, one slot: no lock to share
        self._ticks = 0
        self.closed = False
        opening = Chunk(np.zeros(0, np.float32), rate=sample_rate, channels=channels, options=options)
        self._step(opening)  # (a bad rate or options fail here)

    def accept(self, data: np.ndarray) -> list[Event]:
        """data: audio [n] or [n, channels] int or float PCM at the session's rate (or the front end's input)."""
        return self._step(Chunk(np.asarray(data)))

    def finish(self) -> list[Event]:
        """Flush the input still held back and close the pending utterance."""
        events = self._step(Chunk(np.zeros(0, np.float32), last=True))
        self.closed = True
        return events

    def _step(self, chunk: Chunk) -> list[Event]:
        if self.closed:
            raise RuntimeError("session is finished")
        update = self.pipeline.step(None, self._ticks, {self._KEY: chunk}).get(self._KEY)
        self._ticks += 1
        if update is None:
            return []
        if update.error:
            self.closed = True
            raise exception(update.error)
        return update.events
