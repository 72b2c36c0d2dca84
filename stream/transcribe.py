"""Transcribing files through the streaming session: the offline use is the live path fed from disk."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from models.audio import AudioError, audio_info, read_blocks
from models.decoding import Word

from .pipeline import Event
from .session import Recognizer


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    path: str
    text: str
    duration: float
    segments: list[Segment]

    def to_dict(self, digits: int = 3) -> dict:
        d = asdict(self)
        d["duration"] = round(self.duration, digits)
        for seg in d["segments"]:
            for w in seg["words"]:
                w["confidence"] = round(w["confidence"], digits)
        return d


def segments_from_events(events: list[Event]) -> list[Segment]:
    return [Segment(e.start, e.end, e.text, e.words) for e in events if e.type == "final"]


def transcribe_file(recognizer: Recognizer, path: str | Path, chunk_ms: int = 160) -> Transcript:
    """Feed the file in chunks of `chunk_ms` (0: the whole file in one chunk); raises AudioError."""
    rate, channels, duration = audio_info(path)
    session = recognizer.session(rate, channels)
    events: list[Event] = []
    try:
        for block in _chunks(path, rate, chunk_ms):
            events += session.accept(block)
        events += session.finish()
    except AudioError as e:
        raise AudioError(f"{path}: {e}") from None
    segments = segments_from_events(events)
    return Transcript(str(path), " ".join(s.text for s in segments), duration, segments)


def _chunks(path: str | Path, rate: int, chunk_ms: int):
    if chunk_ms <= 0:
        try:
            audio, _ = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioError(f"{path}: truncated or corrupt audio ({' '.join(str(e).split())})") from None
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
