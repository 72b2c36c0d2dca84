"""Transcribing files and arrays through the streaming session: the offline use is the live path fed from disk."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.decoding import Word
from models.errors import InputError
from models.frontend import Extractor

from .backend import Event
from .session import RecognizerLike

WHOLE_FILE_BLOCK = 1 << 24  # samples per read when a file goes in as one chunk (17 min at 16 kHz)


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    path: str
    text: str
    duration: float
    segments: list[Segment]

    @classmethod
    def from_events(cls, path: str, duration: float, events: list[Event]) -> Transcript:
        segments = [Segment(e.start, e.end, e.text, e.words) for e in events if e.type == "final"]
        return cls(path, " ".join(s.text for s in segments), duration, segments)

    def to_dict(self, digits: int = 3) -> dict:
        d = asdict(self)
        d["duration"] = round(self.duration, digits)
        for seg in d["segments"]:
            for w in seg["words"]:
                w["confidence"] = round(w["confidence"], digits)
        return d


def transcribe_array(
    recognizer: RecognizerLike,
    data: np.ndarray,
    rate: int | None = None,
    chunk: int | Sequence[int] = 0,
    channels: int | None = None,
) -> list[Event]:
    """Every event of one session fed `data` in chunks of `chunk` samples (a sequence: those sizes in turn;
    0: all at once), then finished."""
    session = recognizer.session(rate, channels)
    events: list[Event] = []
    sizes = itertools.cycle([chunk] if isinstance(chunk, int) else chunk)
    i = 0
    while i < len(data):
        n = next(sizes) or len(data)
        events += session.accept(data[i : i + n])
        i += n
    return events + session.finish()


def transcribe_file(recognizer: RecognizerLike, path: str | Path, chunk_ms: int = 160) -> Transcript:
    """Feed the file (audio, or what the model's front end reads) in chunks of `chunk_ms` (0: the whole file in
    one chunk); raises InputError naming the file."""
    extractor = recognizer.extractor
    events: list[Event] = []
    try:
        rate, channels, duration = extractor.info(path)
        session = recognizer.session(rate, channels)
        for chunk in _chunks(extractor, path, rate * chunk_ms // 1000 if chunk_ms > 0 else 0):
            events += session.accept(chunk)
        events += session.finish()
    except InputError as e:  # the readers' errors name the file already; the session's (NaN samples) do not
        raise type(e)(str(e) if str(e).startswith(f"{path}: ") else f"{path}: {e}") from None
    return Transcript.from_events(str(path), duration, events)


def _chunks(extractor: Extractor, path: str | Path, size: int) -> Iterator[np.ndarray]:
    """The file in chunks of `size` (0: one chunk of all of it)."""
    if size <= 0:
        blocks = list(extractor.blocks(path, WHOLE_FILE_BLOCK))
        yield blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        return
    size = max(1, size)
    carry = None
    for block in extractor.blocks(path, max(size, 16384)):
        block = np.concatenate([carry, block]) if carry is not None and len(carry) else block
        whole = len(block) // size * size
        for i in range(0, whole, size):
            yield block[i : i + size]
        carry = block[whole:]
    if carry is not None and len(carry):
        yield carry
