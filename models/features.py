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
        frames = samples.unfold(-1, self.cfg.win_length, self.cfg.hop_length) * self.window
        power = torch.fft.rfft(frames, n=self.cfg.n_fft).abs().square()
        return torch.log(power @ self.fbank + self.cfg.log_floor)


class FeatureStream:
    """Per-stream incremental framing: carries the samples not yet covered by a complete frame."""

    def __init__(self, logmel: LogMel):
        self.logmel = logmel
        self._buffer = torch.zeros(0)
        self.frames_emitted = 0

    def accept(self, samples: torch.Tensor) -> torch.Tensor:
        """Mono float samples at the feature rate -> [new_frames, n_mels]."""
        buffer = torch.cat([self._buffer, samples.to(torch.float32).flatten()]) if len(self._buffer) else samples
        n = self.logmel.num_frames(len(buffer))
        hop, win = self.logmel.cfg.hop_length, self.logmel.cfg.win_length
        if n == 0:
            self._buffer = buffer
            return torch.zeros(0, self.logmel.cfg.n_mels)
        with torch.no_grad():
            feats = self.logmel(buffer[: (n - 1) * hop + win])
        self._buffer = buffer[n * hop :].clone()
        self.frames_emitted += n
        return feats
