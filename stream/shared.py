"""Sessions that share one pipeline: every open stream is a slot in one batched model call per tick.

A `SharedRecognizer` opens sessions on an `Ingest` in front of any `Pipeline`: the Ray pipeline
(`stream.distributed.session.RayRecognizer`) or a LocalPipeline in this process (`Recognizer.shared`), for
servers that take many streams at once. Sessions may be fed from many threads.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.checkpoint import Checkpoint
from models.errors import InputError

from .backend import Event
from .ingest import Ingest, IngestOptions, StreamExpired
from .pipeline import Pipeline


class SharedRecognizer:
    """A `RecognizerLike` whose sessions share `pipeline` through `ingest`."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        pipeline: Pipeline,
        ingest: IngestOptions = IngestOptions(),
        on_close: Callable[[], None] = lambda: None,
    ):
        """Sessions of `pipeline` through an Ingest made as `ingest` says; `on_close` after the pipeline is closed."""
        self.extractor = checkpoint.extractor()
        self.pipeline, self.ingest = pipeline, ingest.ingest(pipeline, self_timed=self.extractor.self_timed)
        self._on_close = on_close
        self.sample_rate = self.extractor.rate
        self.step_seconds = self.extractor.frame_seconds * checkpoint.model.cfg.stack

    def session(self, sample_rate: int | None = None, channels: int | None = None) -> SharedSession:
        return SharedSession(self.ingest, sample_rate or self.sample_rate, channels)

    def stats(self) -> dict:
        return {**self.ingest.stats.to_dict(), "model": self.pipeline.stats()}

    def close(self) -> None:
        self.ingest.close()
        self.pipeline.close()
        self._on_close()

    def __enter__(self) -> SharedRecognizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SharedSession:
    """One stream on a shared ingest: `accept` chunks of any size, then `finish`; both return events.

    With overflow="block" (default) a call returns once the pipeline has answered for the input it
    sent, so the events are those a Session would return. With overflow="drop" it never waits: events
    arrive on later calls and `finish` returns the rest.
    """

    def __init__(self, ingest: Ingest, sample_rate: int, channels: int | None = None):
        self.ingest = ingest
        self.key = ingest.open(sample_rate, channels)
        self.closed = False

    def accept(self, data: np.ndarray) -> list[Event]:
        if self.closed:
            raise RuntimeError("session is finished")
        self.ingest.push(self.key, data)
        return self._pump(block=self.ingest.overflow == "block")

    def finish(self) -> list[Event]:
        if self.closed:
            raise RuntimeError("session is finished")
        self.ingest.finish(self.key)
        events = self._pump(block=True)
        self.closed = True
        return events

    def _pump(self, block: bool) -> list[Event]:
        events, status = self.ingest.pump(self.key, block)
        if status.error:
            self.closed = True
            raise (StreamExpired if status.expired else InputError)(status.error)
        return events
