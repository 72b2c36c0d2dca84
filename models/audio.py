"""Audio input: reading files in blocks and converting any format to the model's mono float rate.

Files are streamed block by block so an hour of audio costs the same memory as a second, and the
conversion (mono mix, sample format, resampling) keeps state across chunks so that chunked and
whole-file input give the same samples.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
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
    path = _regular_file(path)
    try:
        with quiet_stderr():
            info = sf.info(os.fsencode(path))
    except Exception as e:  # libsndfile's messages are informative but multi-line
        raise AudioError(f"{path}: not readable audio ({_why(e)})") from None
    return info.samplerate, info.channels, info.duration


def _regular_file(path: str | Path) -> Path:
    """The path, or AudioError where it is missing, not a regular file or empty (libsndfile's words are worse)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:  # no permission, a name too long, a NUL byte in it
        raise AudioError(f"{path}: {getattr(e, 'strerror', None) or one_line(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{path}: is a directory")
    if not stat.S_ISREG(st.st_mode):  # a pipe or a device: libsndfile opens a file twice (info, then the samples)
        raise AudioError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise AudioError(f"{path}: empty file")
    return path


def read_blocks(path: str | Path, block_frames: int = 65536) -> Iterator[np.ndarray]:
    """Yield float32 blocks of shape [n, channels]; errors become AudioError naming the file."""
    path = _regular_file(path)
    try:  # (one open, not audio_info's and then this one: sf.info opens the file too: ~0.15 ms a file here)
        with quiet_stderr():
            f = sf.SoundFile(os.fsencode(path))
    except Exception as e:  # (audio_info's words for the same failure)
        raise AudioError(f"{path}: not readable audio ({_why(e)})") from None
    try:
        # Only libmpg123 prints; a redirect costs ~40 us here, about what reading a 4096-frame WAV block takes
        quiet = quiet_stderr if f.subtype.startswith("MPEG") else nullcontext
        with f:
            while True:
                with quiet():  # (not around the yield: the caller's own lines must reach stderr)
                    block = f.read(block_frames, dtype="float32", always_2d=True)
                if len(block) == 0:
                    return
                yield block
    except Exception as e:
        raise AudioError(f"{path}: truncated or corrupt audio ({_why(e)})") from None


def _why(e: Exception) -> str:
    """libsndfile's reason without soundfile's "Error opening b'PATH': " (the path leads the message already)."""
    return one_line(e.error_string if isinstance(e, sf.LibsndfileError) else e)


# libmpg123, inside libsndfile, prints its warnings about a corrupt MP3 ("error: dequantization failed!", "Note:
# Trying to resync...") with fprintf straight to fd 2, beside the one-line AudioError that says the same; libsndfile
# has no setting that reaches it (MPG123_QUIET is a flag of the decoder handle it keeps to itself). So fd 2 points
# at /dev/null while libsndfile opens a file and while it decodes MPEG, and only then. The redirect is process-wide, so
# the threads reading at once share one (counted); another thread's write to stderr in that window is lost.
_quiet_lock = threading.Lock()
_quiet_users = 0
_saved_stderr = -1


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """fd 2 goes to /dev/null inside (C libraries' prints); Python's own sys.stderr is flushed first."""
    global _quiet_users, _saved_stderr
    with _quiet_lock:
        if _quiet_users == 0:
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):  # no stderr, or a closed one: nothing of ours is lost
                pass
            try:
                saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
            except OSError:  # fd 2 closed (a daemon): nothing to quieten
                saved = null = -1
            if null >= 0:
                os.dup2(null, 2)
                os.close(null)
            _saved_stderr = saved
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0 and _saved_stderr >= 0:
                os.dup2(_saved_stderr, 2)
                os.close(_saved_stderr)
                _saved_stderr = -1


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
        # Whether soxr's resampler carries state (its filter state cannot be saved, only rebuilt by replay); an
        # attribute, not a property: a tick reads it for every stream (models.features.LogMelExtractor.extract_many).
        self.resampling = sample_rate != target_rate
        if self.resampling:
            self._resampler = soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32", quality="HQ")

    def accept(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        mono = self._mono(to_float(samples))
        if not np.all(np.isfinite(mono)):
            raise AudioError("audio contains NaN or infinite samples")
        return self.resample(mono, last)

    def resample(self, mono: np.ndarray, last: bool = False) -> np.ndarray:
        """Mono float32 samples, checked finite -> at the target rate (soxr's stream: its state carried)."""
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
