"""The engine: many streams through one pipeline, the core that the server's hub, the batch driver and the shared
sessions (`listen`'s, Ray's: stream.shared) wrap.

    engine = create_engine("digits", runtime="thread")   # stream.runtimes; or "process" (child processes), "ray"
    stream = engine.open(8000)                           # a stream; `options=` gives it its own decoding
    engine.push(stream, samples)                         # input of any size, from any thread
    engine.finish(stream)
    results = engine.poll(timeout=0.05)                  # {stream: StreamResult(events, status)} for the news

The shape of sherpa-onnx's OnlineRecognizer (create_stream / accept_waveform / decode_streams): decoding every
stream is one explicit call, `poll`, which sends one tick with each stream's ready input and delivers the ticks
the pipeline has finished. The engine owns its pipeline and the ingest in front of it (buffering and backpressure,
admission, the failover journal: stream.ingest). Invariant: a stream's events are those a Session gives for the
same input and options, whatever else runs in the engine and on whichever runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.checkpoint import Checkpoint
from models.decoding import DecodeOptions

from .backend import Event
from .ingest import Ingest, IngestOptions, StreamStatus
from .messages import Key
from .options import recommended_options
from .pipeline import Pipeline


@dataclass(frozen=True)
class StreamResult:
    """A stream's events since it was last polled, and where it stands (`status.over`: nothing more will come)."""

    events: list[Event]
    status: StreamStatus


class Engine:
    """Streams of one model through one pipeline (stream.runtimes.create_engine builds both for a runtime)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        pipeline: Pipeline,
        ingest: IngestOptions = IngestOptions(),
        on_close: Callable[[], None] = lambda: None,
        options: DecodeOptions | None = None,
    ):
        """An engine over `pipeline` (any runtime's), its ingest made as `ingest` says; `on_close` after the pipeline
        is closed (a Ray the engine started, say); `options`: the pipeline's decoding, what a stream opened without
        its own reads with (None: the checkpoint's recommendation)."""
        self.checkpoint = checkpoint
        self.options = options if options is not None else recommended_options(checkpoint)
        self.extractor = checkpoint.extractor()
        self.pipeline = pipeline
        self.ingest: Ingest = ingest.ingest(pipeline, self_timed=self.extractor.self_timed)
        self.sample_rate = self.extractor.rate
        self.step_seconds = self.extractor.frame_seconds * checkpoint.model.cfg.stack
        self._on_close = on_close
        self._polled: set[Key] = set()  # open streams a poll reports on
        self.delivered = 0  # ticks delivered so far (a caller that answers per tick counts them)

    # -- streams

    def open(self, sample_rate: int | None = None, channels: int | None = None,
             options: DecodeOptions | None = None) -> Key:
        """A new stream of input at `sample_rate` (None: the model's), decoded with `options` (None: the engine's).
        Raises `Overloaded` while the pipeline lags past the ingest's `admit_latency`."""
        key = self.ingest.open(sample_rate or self.sample_rate, channels, options)
        self._polled.add(key)
        return key

    def push(self, stream: Key, data: np.ndarray, mark: float | None = None) -> None:
        """Input for the stream: audio samples [n] / [n, channels] (int or float PCM), or pen points [n, values];
        `mark`: a time.monotonic() of its arrival, for latency figures."""
        self.ingest.push(stream, data, mark)

    def finish(self, stream: Key) -> None:
        """The stream's input is over: what is buffered is sent, and its last utterance closed."""
        self.ingest.finish(stream)

    def send(self) -> bool:
        """One tick with every stream's ready input, unless the window is full; -> whether one went out (`poll`
        sends too: a caller that paces its ticks itself, as the server's hub does, sends here and polls with
        send=False)."""
        return self.ingest.submit(block=False)

    def poll(self, timeout: float = 0.0, send: bool = True) -> dict[Key, StreamResult]:
        """Send a tick with every stream's ready input (unless the window is full, or not `send`), deliver the
        finished ticks (waiting up to `timeout` for the oldest), -> each stream with new events or now over. A
        stream reported over is forgotten. Reads only the streams those ticks carried (the ingest's news), never
        every open stream."""
        if send:
            self.send()
        self.delivered += self.ingest.collect(timeout=0.0)
        if timeout and self.ingest.inflight:
            self.ingest.wait(timeout)
            self.delivered += self.ingest.collect(timeout=0.0)
        out = {}
        for key, (events, status) in self.ingest.take_news(self._polled).items():  # (not a SharedSession's: its own)
            if events or status.over:
                out[key] = StreamResult(events, status)
            if status.over:
                self._polled.discard(key)
        return out

    @property
    def inflight(self) -> int:
        """Ticks sent and not yet delivered."""
        return self.ingest.inflight

    @property
    def has_room(self) -> bool:
        """Whether a tick can go out now (the window is not full)."""
        return self.ingest.has_room

    @property
    def dropped_seconds(self) -> float:
        """Input dropped so far past the ingest's bound (overflow="drop")."""
        return self.ingest.stats.dropped_seconds

    @staticmethod
    def wait_any(engines: list[Engine], timeout: float | None) -> None:
        """Until the oldest tick of one of the engines is done (whatever their runtimes), at most `timeout`."""
        Ingest.wait_any([e.ingest for e in engines], timeout)

    def status(self, stream: Key) -> StreamStatus | None:
        return self.ingest.status(stream)

    def stats(self) -> dict:
        return {**self.ingest.stats.to_dict(), "model": self.pipeline.stats()}

    def close(self) -> None:
        """Refuse new streams, end those not over with an error, close the pipeline."""
        self.ingest.close()
        self.pipeline.close()
        self._on_close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
