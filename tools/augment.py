"""On-the-fly augmentation of 16 kHz float audio and of feature batches (numpy / torch, seeded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
import torch
from scipy import signal
from torchaudio.functional import mask_along_axis_iid


@dataclass(frozen=True)
class AugmentConfig:
    speed: tuple[float, float] = (0.9, 1.1)  # resampling factor range (tempo and pitch, as Kaldi's)
    gain_db: tuple[float, float] = (-25.0, 6.0)
    noise_prob: float = 0.7
    snr_db: tuple[float, float] = (5.0, 40.0)
    telephone_prob: float = 0.3  # band-limit through 8 kHz and a 300-3400 Hz filter
    time_masks: int = 2
    time_mask_steps: int = 12  # frames
    freq_masks: int = 2
    freq_mask_bins: int = 6


_PHONE_BAND = signal.butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos")


def colored_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise of unit RMS: 1/f^beta shaping of a white spectrum."""
    beta = rng.choice([0.0, 1.0, 2.0])
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spectrum / f ** (beta / 2), n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def augment_audio(x: np.ndarray, rate: int, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    if cfg.speed[0] != 1.0 or cfg.speed[1] != 1.0:
        factor = rng.uniform(*cfg.speed)
        x = soxr.resample(x, rate, round(rate / factor))
    if rng.random() < cfg.telephone_prob:
        x = soxr.resample(signal.sosfilt(_PHONE_BAND, soxr.resample(x, rate, 8000)).astype(np.float32), 8000, rate)
    if rng.random() < cfg.noise_prob and len(x):
        power = np.mean(x**2) + 1e-10
        snr = rng.uniform(*cfg.snr_db)
        x = x + colored_noise(len(x), rng) * np.sqrt(power / 10 ** (snr / 10))
    x = x * 10 ** (rng.uniform(*cfg.gain_db) / 20)
    peak = np.max(np.abs(x)) if len(x) else 0.0
    return (x / peak * 0.99 if peak > 0.99 else x).astype(np.float32)


def spec_augment(normalized: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """SpecAugment on normalised features [batch, frames, n_mels]: masked cells become the mean (0)."""
    x = normalized.transpose(1, 2)[:, None]  # [batch, 1, n_mels, frames]
    for _ in range(cfg.freq_masks):
        x = mask_along_axis_iid(x, cfg.freq_mask_bins, 0.0, 2)
    for _ in range(cfg.time_masks):
        x = mask_along_axis_iid(x, cfg.time_mask_steps, 0.0, 3)
    return x[:, 0].transpose(1, 2)
