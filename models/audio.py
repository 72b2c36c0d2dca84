"""Audio input: reading files in blocks and converting any format to the model's mono float rate.

Files are streamed block by block so an hour of audio costs the same memory as a second, and the
conversion (mono mix, sample format, resampling) keeps state across chunks so that chunked and
whole-file input give the same samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import InputError, one_line

# What libsndfile reads (and mp3): the files a directory given to `rnnstream batch` is searched for.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64"})


class AudioError(InputError):
    """Input that is not usable audio (missing, empty, not audio, truncated, NaN/inf)."""


def audio_info(path: str | Path) -> tuple[int, int, float]:
    """(sample_rate, channels, duration_s) of an audio file, or AudioError with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile's messages are informative but multi-line
        raise AudioError(f"{path}: not readable audio ({one_line(e)})") from None
    return info.samplerate, info.channels, info.duration


def read_blocks(path: str | Path, block_frames: int = 65536) -> Iterator[np.ndarray]:
    """Yield float32 blocks of shape [n, channels]; errors become AudioError naming the file."""
    audio_info(path)
    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                block = f.read(block_frames, dtype="float32", always_2d=True)
                if len(block) == 0:
                    return
                yield block
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: truncated or corrupt audio ({one_line(e)})") from None


def to_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM is scaled to [-1, 1); float input is kept as it is."""
    samples = np.asarray(samples)
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype.kind in "iu":
        info = np.iinfo(samples.dtype)
        scale = float(2 ** (info.bits - 1))
        offset = scale if samples.dtype.kind == "u" else 0.0
        return ((samples.astype(np.float64) - offset) / scale).astype(np.float32)
    raise AudioError(f"unsupported sample type {samples.dtype}")


class AudioConverter:
    """Streams audio of any rate, channel count and sample format to mono float32 at `target_rate`.

    soxr's stream resampler keeps its filter state between chunks, so the output does not depend on
    how the input was split.
    """

    def __init__(self, sample_rate: int, target_rate: int, channels: int | None = None):
        if sample_rate <= 0:
            raise AudioError(f"invalid sample rate {sample_rate}")
        self.sample_rate = sample_rate
        self.target_rate = target_rate
        self.channels = channels
        self._resampler = None
        if sample_rate != target_rate:
            self._resampler = soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32", quality="HQ")

    @property
    def resampling(self) -> bool:
        """Whether soxr's resampler carries state (its filter state cannot be saved, only rebuilt by replay)."""
        return self._resampler is not None

    def accept(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        mono = self._mono(to_float(samples))
        if not np.all(np.isfinite(mono)):
            raise AudioError("audio contains NaN or infinite samples")
        if self._resampler is None:
            return mono
        return self._resampler.resample_chunk(mono, last=last)

    def _mono(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 1:
            return np.ascontiguousarray(x)
        if x.ndim != 2:
            raise AudioError(f"audio must be [samples] or [samples, channels], got shape {x.shape}")
        if self.channels is not None and x.shape[1] != self.channels:
            raise AudioError(f"expected {self.channels} channels, got {x.shape[1]}")
        return np.ascontiguousarray(x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0])
