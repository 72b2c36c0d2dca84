"""The session API on Ray: `RayRecognizer` opens sessions whose input is recognised by a Ray pipeline, with the
same `accept` / `finish` as in-process sessions (`rnnstream listen --ray` uses it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.checkpoint import DEFAULT_MODEL, Checkpoint, load_checkpoint
from models.decoding import DecodeOptions
from models.errors import InputError
from models.frontend import make_extractor

from ..backend import EndpointConfig, Event
from ..ingest import Ingest, StreamExpired
from ..options import recommended_options
from ..pipeline import PipelineSpec
from .actors import RayPipeline
from .cluster import RayCluster, start_pipeline


class RayRecognizer:
    """Sessions through a Ray pipeline on this node; a `RecognizerLike`, like stream.session.Recognizer."""

    def __init__(self, checkpoint: Checkpoint, cluster: RayCluster, pipeline: RayPipeline, ingest: Ingest):
        self.cluster, self.pipeline, self.ingest = cluster, pipeline, ingest
        stack = checkpoint.model.cfg.stack
        extractor = make_extractor(checkpoint.frontend, checkpoint.features, stack)
        self.sample_rate = extractor.rate
        self.step_seconds = extractor.frame_seconds * stack

    @classmethod
    def connect(
        cls,
        model: str | Path = DEFAULT_MODEL,
        address: str | None = None,
        device: str | None = None,
        options: DecodeOptions | None = None,
        endpoint: EndpointConfig = EndpointConfig(),
        idle_timeout: float | None = None,
        window: int = 4,
        min_chunk: float = 0.1,
        overflow: str = "block",
        num_cpus: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> RayRecognizer:
        """Start (or join `address`) Ray and place one pipeline on this node; the model ships as bytes.
        `checkpoint`: `model` already loaded (its metadata is all this process needs)."""
        checkpoint = checkpoint or load_checkpoint(model)
        options = options if options is not None else recommended_options(checkpoint)
        spec = PipelineSpec(device=device, options=options, endpoint=endpoint, idle_timeout=idle_timeout)
        cluster, pipeline = start_pipeline(model, spec, address, num_cpus)
        ingest = Ingest(pipeline, min_chunk=min_chunk, window=window, overflow=overflow)
        return cls(checkpoint, cluster, pipeline, ingest)

    def session(self, sample_rate: int | None = None, channels: int | None = None) -> RaySession:
        return RaySession(self.ingest, sample_rate or self.sample_rate, channels)

    def stats(self) -> dict:
        return {**self.ingest.stats.to_dict(), "model": self.pipeline.stats()}

    def close(self) -> None:
        self.ingest.close()
        self.pipeline.close()
        self.cluster.close()

    def __enter__(self) -> RayRecognizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RaySession:
    """One stream through the Ray pipeline: `accept` chunks of any size, then `finish`; both return events.

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
