"""Log-mel filterbank features, computed incrementally.

Frames are cut with `snip_edges` semantics (frame t covers samples [t*hop, t*hop + win)), so a stream
of chunks yields exactly the frames of the whole signal: each chunk appends to a carried buffer and
only complete windows are framed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torchaudio


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
        power = (spectrum * spectrum.conj()).real  # 4x faster than abs().square() on CPU
        return torch.log(power @ self.fbank + self.cfg.log_floor)


class FeatureStream:
    """Per-stream incremental framing: carries the samples not yet covered by a complete frame."""

    def __init__(self, logmel: LogMel):
        self.logmel = logmel
        self._buffer = torch.zeros(0)

    def windows(self, samples: torch.Tensor) -> torch.Tensor:
        """Mono float samples -> the new complete frames [new_frames, win_length], not yet transformed
        (`LogMel.from_windows` transforms them, for one stream or many at once)."""
        buffer = torch.cat([self._buffer, samples.to(torch.float32).flatten()]) if len(self._buffer) else samples
        n = self.logmel.num_frames(len(buffer))
        hop, win = self.logmel.cfg.hop_length, self.logmel.cfg.win_length
        self._buffer = buffer[n * hop :].clone() if n else buffer
        if n == 0:
            return torch.zeros(0, win)
        return buffer[: (n - 1) * hop + win].unfold(0, win, hop)
