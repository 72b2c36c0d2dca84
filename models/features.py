"""Log-mel filterbank features, computed incrementally: the audio front end.

Frames are cut with `snip_edges` semantics (frame t covers samples [t*hop, t*hop + win)), so a stream
of chunks yields exactly the frames of the whole signal: each chunk appends to a carried buffer and
only complete windows are framed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from . import framing, leadin
from .audio import AUDIO_SUFFIXES, AudioConverter, audio_info, read_blocks
from .frontend import cut_rest_and_step, whole_steps
from .tokens import CHARACTERS

# Quiet noise after the end of every stream (-70 dBFS, the quietest noise floor in training): a unidirectional
# model emits a word after hearing it, so audio cut tight after the last word lost that word. Seeded, so every
# stream gets the same samples; it comes after the caller's audio, so no time moves, and the last words' times
# are held to the caller's audio.
TAIL_SECONDS = 0.3
TAIL_DBFS = -70.0


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_fft: int = 512
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float = 7600.0
    log_floor: float = 1e-6
    # The lead-in rule (models/leadin.py; None: off): the samples before the first one louder than this are not
    # framed but become silence frames, whole steps of them, so the sound starts a frame and a step whatever came
    # before it. -90 dBFS: one step of 16-bit audio (-90.3 dBFS) is still digital silence.
    lead_in_dbfs: float | None = None
    lead_in_gate_dbfs: float | None = None  # with the rule, sound is also a 25 ms window over this RMS (faint noise is not)
    lead_in_preroll: float = 0.2  # seconds kept before the gate's window: a word's soft start ("f", "s", "th")
    # seconds a stream waits for the gate after its first sound (then all since that is framed at once): a talker
    # too quiet for the gate is read late, never lost; a waiting stream holds at most this much audio
    lead_in_max_wait: float = 8.0

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sample_rate

    def to_dict(self) -> dict:
        return asdict(self)


class LogMel(torch.nn.Module):
    """Stateless log-mel of complete frames; shared by training (whole utterances) and streaming."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=False), persistent=False)
        fbank = torchaudio.functional.melscale_fbanks(
            cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels, cfg.sample_rate, norm="slaney", mel_scale="slaney"
        )
        self.register_buffer("fbank", fbank, persistent=False)

    def num_frames(self, num_samples: int) -> int:
        if num_samples < self.cfg.win_length:
            return 0
        return 1 + (num_samples - self.cfg.win_length) // self.cfg.hop_length

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        """[..., samples] -> [..., frames, n_mels]; trailing samples short of a window are ignored."""
        return self.from_windows(samples.unfold(-1, self.cfg.win_length, self.cfg.hop_length))

    def from_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """[..., win_length] raw frames -> [..., n_mels]; many streams' frames can go in one call."""
        if windows.numel() == 0:  # MKL's FFT rejects empty input
            return windows.new_zeros(*windows.shape[:-1], self.cfg.n_mels)
        spectrum = torch.fft.rfft(windows * self.window, n=self.cfg.n_fft)
        # Contiguous, unlike (spectrum * spectrum.conj()).real: 2.3 ms against 4.8 for 3,200 frames here, and the
        # filterbank's matmul 1.5 against 3.2 ms (the same numbers, bit for bit).
        power = spectrum.real.square() + spectrum.imag.square()
        return torch.log(power @ self.fbank + self.cfg.log_floor)

    def silence(self) -> torch.Tensor:
        """The frame of digital silence [1, n_mels], as from_windows computes it."""
        return self.from_windows(torch.zeros(1, self.cfg.win_length))


class FeatureStream:
    """Per-stream incremental framing: carries the samples not yet covered by a complete frame. In numpy: a stream's
    chunk is a few hundred samples, where each torch call costs more than its work (the cut of a 160 ms chunk took
    75 us in torch calls, BENCHMARKS.md)."""

    def __init__(self, logmel: LogMel):
        self.logmel = logmel
        self._buffer = np.zeros(0, np.float32)

    def windows(self, samples: np.ndarray) -> torch.Tensor:
        """Mono float32 samples -> the new complete frames [new_frames, win_length], not yet transformed
        (`LogMel.from_windows` transforms them, for one stream or many at once): a view of the samples."""
        buffer = np.concatenate([self._buffer, samples]) if len(self._buffer) else np.require(samples, np.float32, "CW")
        n = self.logmel.num_frames(len(buffer))
        hop, win = self.logmel.cfg.hop_length, self.logmel.cfg.win_length
        self._buffer = buffer[n * hop :].copy()  # (a copy: the caller may reuse its array)
        if n == 0:
            return torch.zeros(0, win)
        step = buffer.strides[0]
        return torch.from_numpy(np.lib.stride_tricks.as_strided(buffer, (n, win), (hop * step, step)))


def utterance_frames(logmel: LogMel, samples: torch.Tensor, stack: int) -> torch.Tensor:
    """A whole utterance's frames as a stream of it gives them (training): the log-mel, with the lead-in rule."""
    if logmel.cfg.lead_in_dbfs is None:
        return logmel(samples)
    dbfs, gate, preroll, max_wait = _lead_in(logmel.cfg)
    return leadin.utterance_frames(logmel, samples, dbfs, gate, preroll, stack, max_wait)


def _lead_in(cfg: FeatureConfig) -> tuple[float, float | None, int, int]:
    """The lead-in rule's settings as the stream and training both use them: levels, and times in samples."""
    return (cfg.lead_in_dbfs, cfg.lead_in_gate_dbfs, round(cfg.lead_in_preroll * cfg.sample_rate),
            round(cfg.lead_in_max_wait * cfg.sample_rate))


@functools.lru_cache(maxsize=4)
def tail_padding(samples: int) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0.0, 10 ** (TAIL_DBFS / 20), samples).astype(np.float32)
    noise.flags.writeable = False  # (shared by every stream)
    return noise


class LogMelExtractor:
    """The audio front end of a model (see models.frontend): one log-mel transform for many streams' windows."""

    Config = FeatureConfig
    tokens = CHARACTERS  # a new model's default: a-z, apostrophe, word boundary
    medium = "audio"
    self_timed = False
    suffixes = AUDIO_SUFFIXES

    def __init__(self, config: FeatureConfig, stack: int):
        self.config = config
        self.logmel = LogMel(config)
        self.stack = stack
        self.dim = config.n_mels
        self.feature_floor = math.log(config.log_floor)  # digital silence's log-mel value
        self.rate = config.sample_rate
        self.frame_seconds = config.frame_seconds

    @property
    def tail_steps(self) -> int:
        """The tail padding in whole model steps (read when a stream opens)."""
        return round(TAIL_SECONDS / (self.frame_seconds * self.stack))

    def open(self, rate: int | None = None, channels: int | None = None) -> LogMelFrontEnd:
        return LogMelFrontEnd(self, rate or self.rate, channels)

    def transform(self, cuts: list[torch.Tensor]) -> list[torch.Tensor]:
        frames = self.logmel.from_windows(torch.cat(cuts))
        return list(frames.split([len(w) for w in cuts]))

    @torch.no_grad()
    def extract_many(self, fronts: list[LogMelFrontEnd], inputs: list[np.ndarray],
                     lasts: list[bool]) -> list[torch.Tensor | Exception]:
        """`frontend.extract_all` for audio: the steady streams framed as one array (models.framing), the others cut
        one by one, all of their windows through one log-mel call, then each stream's whole steps."""
        steady = [i for i, (f, x, last) in enumerate(zip(fronts, inputs, lasts))
                  if not last and (f.lead is None or f.lead.done)
                  and isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype in framing.STEADY_DTYPES]
        windows, sizes = [], []
        out: list[torch.Tensor | Exception] = [None] * len(fronts)  # type: ignore[list-item]
        samples = framing.floats([inputs[i] for i in steady]) if steady else None
        if samples is None:  # (none steady, or a NaN or an infinity: stream by stream, so that its stream alone fails)
            steady = []
        else:
            for j, i in enumerate(steady):
                if fronts[i].converter.resampling:
                    try:
                        samples[j] = fronts[i].converter.resample(samples[j])
                    except Exception as e:  # (its own failure: the others go on)
                        out[i] = e
            if any(out):
                samples = [x for i, x in zip(steady, samples) if out[i] is None]
                steady = [i for i in steady if out[i] is None]
            cfg = self.config
            framed = framing.frame_many([fronts[i].features._buffer for i in steady], samples, cfg.win_length,
                                        cfg.hop_length)
            windows, sizes = [framed[0]], framed[1]
            for i, carried in zip(steady, framed[2]):
                fronts[i].features._buffer = carried
        return cut_rest_and_step(fronts, inputs, lasts, out, steady, windows, sizes, self.logmel.from_windows,
                                 self.stack)

    def info(self, path: str | Path) -> tuple[int, int | None, float]:
        return audio_info(path)

    def blocks(self, path: str | Path, size: int) -> Iterator[np.ndarray]:
        """Float32 blocks [n, channels] read as they are needed: an hour of audio costs the memory of a block."""
        return read_blocks(path, block_frames=size)


class LogMelFrontEnd:
    """One audio stream of any rate and layout -> normalised-rate log-mel frames, a multiple of `stack` at a time."""

    def __init__(self, extractor: LogMelExtractor, sample_rate: int, channels: int | None = None):
        cfg = extractor.config
        self.converter = AudioConverter(sample_rate, cfg.sample_rate, channels)
        self.features = FeatureStream(extractor.logmel)
        self.stack = extractor.stack
        self._pending = torch.zeros(0, cfg.n_mels)
        self._tail = tail_padding(extractor.tail_steps * self.stack * cfg.hop_length)
        if cfg.lead_in_dbfs is None:
            self.lead = None
        else:
            dbfs, gate, preroll, max_wait = _lead_in(cfg)
            self.lead = leadin.LeadIn(dbfs, gate, preroll, cfg.win_length, cfg.hop_length, self.stack, max_wait)

    def cut(self, samples: np.ndarray, last: bool = False) -> torch.Tensor:
        """Converted audio cut into frames [n, win_length]; at the end, the tail padding too."""
        audio = self.converter.accept(samples, last=last)
        if last:
            audio = np.concatenate([audio, self._tail])
        if self.lead is None:
            return self.features.windows(audio)
        silent, audio = self.lead.cut(audio, last)
        windows = self.features.windows(audio)
        return torch.cat([windows.new_zeros(silent, windows.shape[1]), windows]) if silent else windows

    def steps(self, frames: torch.Tensor) -> torch.Tensor:
        """Log-mel frames -> the whole model steps now ready; frames short of a step wait for the next chunk."""
        ready, self._pending = whole_steps(self._pending, frames, self.stack)
        return ready

    def snapshot(self) -> dict | None:
        """The carried samples and frames (at most a window and a step: ~2 KB; a stream still waiting for the lead-in
        rule's gate also holds its audio since its first sound, at most lead_in_max_wait: 512 KB at 8 s and 16 kHz);
        None while soxr resamples."""
        if self.converter.resampling:
            return None
        state = {"samples": self.features._buffer.copy(), "frames": self._pending.numpy().copy()}
        return state if self.lead is None else {**state, "lead": self.lead.snapshot()}

    def restore(self, state: dict) -> None:
        self.features._buffer = np.array(state["samples"], np.float32)
        self._pending = torch.from_numpy(state["frames"].copy())
        if self.lead is not None:
            self.lead.restore(state["lead"])
