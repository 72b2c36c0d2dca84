"""A stream's life in the ingest as one value, and `StreamStatus`, the view of it its producer gets.

Invariant: a stream's phase only moves forward, WAITING_SLOT -> GRANTED -> OPEN -> LAST_SENT -> DONE (a stream
whose first chunk is its last goes from GRANTED straight to LAST_SENT, and any phase may end in DONE), except
that a failover rewinds every stream not DONE to WAITING_SLOT: the new pipeline knows none of them. DONE is
final. How a stream ended, when not in the normal way, is its `error` (stream.errors.StreamError: a kind and why).

Whether the producer has finished its input is not a phase: it is its buffer's `ended`, since a producer may
finish at any point of the life above (before its stream has a slot, say), and the ingest goes on sending what
is buffered until the last chunk is out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from models.decoding import DecodeOptions

from ..errors import Kind, StreamError
from .buffer import Buffer
from .journal import Entry


class Phase(Enum):
    WAITING_SLOT = "waiting for a model slot"  # input buffers until the pipeline grants one (`reserve`)
    GRANTED = "granted a slot"  # its next chunk opens it: that chunk carries the rate, channels, restore
    OPEN = "open"  # chunks flow
    LAST_SENT = "last chunk sent"  # the pipeline's last word for it is still to come
    DONE = "done"  # nothing more comes from the pipeline (its last word, an error, a close or a lost pipeline)

    @property
    def live(self) -> bool:
        """Whether chunks may still be sent."""
        return self in (Phase.WAITING_SLOT, Phase.GRANTED, Phase.OPEN)

    @property
    def holds_slot(self) -> bool:
        return self in (Phase.GRANTED, Phase.OPEN, Phase.LAST_SENT)


@dataclass(frozen=True)
class StreamStatus:
    """Where one stream stands, as its producer sees it."""

    finishing: bool  # finish() was called
    done: bool  # the pipeline said its last word (or it failed)
    inflight: int  # ticks carrying its chunks, not yet delivered
    ready: bool  # it has a chunk to send
    error: StreamError | None = None  # what ended it, when not its own last word

    @property
    def expired(self) -> bool:
        return self.error is not None and self.error.kind is Kind.EXPIRED

    @property
    def lost(self) -> bool:
        """The pipeline died before the stream was over."""
        return self.error is not None and self.error.kind is Kind.LOST

    @property
    def over(self) -> bool:
        """Done and nothing more to come: its events are all delivered."""
        return self.done and not self.inflight


@dataclass
class Stream:
    """One stream's record: its input, its life, and what failover keeps of it."""

    rate: int
    channels: int | None
    journal: Entry
    options: DecodeOptions | None = None  # its own decoding, sent with every chunk that opens it (a replay's too)
    buffer: Buffer = field(default_factory=Buffer)
    phase: Phase = Phase.WAITING_SLOT
    error: StreamError | None = None  # how it ended, when not by its own last word
    inflight: int = 0  # ticks carrying its chunks, not yet delivered
    events: list = field(default_factory=list)  # delivered by the pipeline, not yet taken by the producer

    def fail(self, error: StreamError, override: bool = False) -> None:
        """Record how it ended (the first reason stays, unless `override`)."""
        if self.error is None or override:
            self.error = error

    def status(self, ready: bool) -> StreamStatus:
        return StreamStatus(self.buffer.ended, self.phase is Phase.DONE, self.inflight, ready, self.error)
