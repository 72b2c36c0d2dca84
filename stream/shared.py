"""Sessions that share one engine: every open stream is a slot in one batched model call per tick.

A `SharedRecognizer` opens sessions on an `Engine` (stream.engine) over any `Pipeline`: the Ray pipeline
(`stream.distributed.session.RayRecognizer`), child processes (`stream.process.process_recognizer`) or a
LocalPipeline in this process (`Recognizer.shared`), for servers that take many streams at once. Sessions may be
fed from many threads.
"""

from __future__ import annotations

import numpy as np

from models.decoding import DecodeOptions
from models.errors import InputError

from .backend import Event
from .engine import Engine
from .errors import Kind, StreamError
from .ingest import Ingest, Overloaded, PipelineFailed, StreamExpired

# A session's edge (a SharedSession's and a Session's): each kind of stream error once, as the exception its caller
# catches.
RAISED: dict[Kind, type[Exception]] = {Kind.INPUT: InputError, Kind.EXPIRED: StreamExpired, Kind.LOST: PipelineFailed,
                                       Kind.CLOSED: RuntimeError, Kind.OVERLOADED: Overloaded, Kind.INTERNAL: RuntimeError}


def exception(error: StreamError) -> Exception:
    """The exception a session raises for a stream's error."""
    return RAISED[error.kind](error.message)


class SharedRecognizer:
    """A `RecognizerLike` whose sessions are streams of one `Engine`."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.extractor, self.pipeline, self.ingest = engine.extractor, engine.pipeline, engine.ingest
        self.sample_rate, self.step_seconds = engine.sample_rate, engine.step_seconds

    def session(self, sample_rate: int | None = None, channels: int | None = None,
                options: DecodeOptions | None = None) -> SharedSession:
        return SharedSession(self.ingest, sample_rate or self.sample_rate, channels, options)

    def stats(self) -> dict:
        return self.engine.stats()

    def close(self) -> None:
        self.engine.close()

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

    def __init__(self, ingest: Ingest, sample_rate: int, channels: int | None = None,
                 options: DecodeOptions | None = None):
        self.ingest = ingest
        self.key = ingest.open(sample_rate, channels, options)
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
            raise exception(status.error)
        return events
