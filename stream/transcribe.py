"""Transcribing files and arrays through the streaming session: the offline use is the live path fed from disk."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from models.audio import AudioError, audio_info, read_blocks
from models.decoding import Word
from models.errors import InputError, one_line

from .backend import Event
from .session import RecognizerLike


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
    """Feed the file in chunks of `chunk_ms` (0: the whole file in one chunk); raises AudioError naming the file."""
    rate, channels, duration = audio_info(path)
    session = recognizer.session(rate, channels)
    events: list[Event] = []
    try:
        for block in _chunks(path, rate, chunk_ms):
            events += session.accept(block)
        events += session.finish()
    except InputError as e:
        raise AudioError(f"{path}: {e}") from None
    return Transcript.from_events(str(path), duration, events)


def _chunks(path: str | Path, rate: int, chunk_ms: int) -> Iterator[np.ndarray]:
    if chunk_ms <= 0:
        try:
            audio, _ = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioError(f"{path}: truncated or corrupt audio ({one_line(e)})") from None
        yield audio
        return
    size = max(1, rate * chunk_ms // 1000)
    carry = np.zeros((0, 1), np.float32)
    for block in read_blocks(path, block_frames=max(size, 16384)):
        block = np.concatenate([carry, block]) if len(carry) else block
        whole = len(block) // size * size
        for i in range(0, whole, size):
            yield block[i : i + size]
        carry = block[whole:]
    if len(carry):
        yield carry
