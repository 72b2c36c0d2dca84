"""On-the-fly augmentation of 16 kHz float audio and of features (numpy / torch, seeded).

Audio: speed (tempo and pitch), then a room (simulated RIR, tools/rooms.py), babble in it, a slow level drift, a
device's microphone colour, AGC and compressor and a codec round trip (tools/devices.py), then telephone band or 8 kHz
band, coloured noise, gain, a random sub-hop start. Rooms and devices come before the lead-ins: digital zeros and a
quiet line's noise are added by what carries the recording, after the room and the device made it.
Features: a mel-axis warp (vocal tract length, after VTLP), a smooth random EQ (microphone and channel
colour), SpecAugment masks. FSDD has five male voices and five microphones; warp and EQ stand in for the
voices and microphones it lacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import scipy.fft
import soxr
import torch
from torchaudio.functional import mask_along_axis_iid

from . import devices, rooms
from .digits_data import telephone_band


@dataclass(frozen=True)
class AugmentConfig:
    speed: tuple[float, float] = (0.9, 1.1)  # resampling factor range (tempo and pitch, as Kaldi's)
    gain_db: tuple[float, float] = (-25.0, 6.0)
    noise_prob: float = 0.7
    snr_db: tuple[float, float] = (5.0, 40.0)
    telephone_prob: float = 0.3  # through 8 kHz: 300-3400 Hz band and mu-law
    narrowband_prob: float = 0.0  # else through 8 kHz alone, as every FSDD clip: band is then no voice cue
    shift_samples: int = 0  # drop up to this many leading samples: the frame grid meets speech at any phase
    tight_start_p: float = 0.0  # chance the leading silence is cut off: speech from the stream's first sample
    lead_p: float = 0.0  # chance of a digitally silent lead-in (a file or line that opens with zeros)
    lead_s: tuple[float, float] = (0.1, 2.0)  # its length range, seconds
    # Chance of a lead-in of faint white noise at an absolute level (a live microphone's first seconds, a quiet
    # line), before everything: the model learns that 0-5 s of it change nothing (issue 26's lead-in rule)
    lead_noise_p: float = 0.0
    lead_noise_dbfs: tuple[float, float] = (-70.0, -45.0)
    # Rooms and devices (issue 26), each off by default; in this order, each by its own chance:
    rir_p: float = 0.0  # a room: one of the bank's simulated RIRs (RT60 0.15-0.8 s, 0.3-3 m away), level kept
    rir_bank: str = "data/rirs"  # the bank's and babble pool's cache (built on first use, or by python -m tools.rooms)
    rir_rooms: int = 400
    rir_seed: int = 0
    babble_p: float = 0.0  # other talkers in the room: windows of training speech summed, in another of its rooms
    babble_snr_db: tuple[float, float] = (0.0, 25.0)
    babble_talkers: tuple[int, int] = (3, 8)
    babble_manifests: tuple[str, ...] = ()  # training speech only: the dev phone numbers are refused
    drift_p: float = 0.0  # a slow level change of at most +-drift_db (a talker turning, a hand moving the phone)
    drift_db: float = 6.0
    device_p: float = 0.0  # a small microphone's colour: high-pass, low-pass, resonances
    agc_p: float = 0.0  # a phone's AGC (noise pumped up in pauses) and a fast compressor with makeup gain
    codec_p: float = 0.0  # a round trip through one of `codecs`, chosen at random, at a low bit rate
    codecs: tuple[str, ...] = ("gsm", "amrnb", "opus", "mp3")
    mel_warp: tuple[float, float] = (1.0, 1.0)  # frequency warp factor range on the mel axis
    eq_db: float = 0.0  # smooth random EQ: three cosines across the mel bins, at most eq_db / k dB each
    time_masks: int = 2
    time_mask_steps: int = 12  # frames
    freq_masks: int = 2
    freq_mask_bins: int = 6

    def __post_init__(self) -> None:
        if self.babble_p and not self.babble_manifests:
            raise ValueError("augment.babble_manifests: babble_p needs manifests of training speech to make babble of")
        unknown = set(self.codecs) - set(devices.CODECS)
        if unknown:
            raise ValueError(f"augment.codecs: {sorted(unknown)} not among {', '.join(devices.CODECS)}")


def colored_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise of unit RMS: 1/f^beta shaping of a white spectrum."""
    beta = rng.choice([0.0, 1.0, 2.0])
    m = scipy.fft.next_fast_len(n, real=True)  # an FFT of a length with a large prime factor is 10-100x slower
    spectrum = scipy.fft.rfft(rng.standard_normal(m))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    noise = scipy.fft.irfft(spectrum / f ** (beta / 2), m)[:n]
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def _onset(x: np.ndarray, rate: int) -> int:
    """First sample of the first 10 ms hop within 35 dB of the loudest one."""
    hop = rate // 100
    return int(librosa.effects.trim(x, top_db=35, frame_length=4 * hop, hop_length=hop)[1][0])


def rooms_and_devices(x: np.ndarray, rate: int, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """The room, its babble, the level drift, the device and the codec (AugmentConfig's rir_p ... codec_p); a draw
    is made only for a chance above 0, so configs without them see the random stream they saw before."""
    on = cfg.rir_p or cfg.babble_p or cfg.drift_p or cfg.device_p or cfg.agc_p or cfg.codec_p
    if not on or not len(x):
        return x
    if rate != rooms.RATE:
        raise ValueError(f"augment: rooms and devices are made at {rooms.RATE} Hz, not {rate}")
    bank = rooms.rir_bank(cfg.rir_bank, cfg.rir_seed, cfg.rir_rooms) if cfg.rir_p or cfg.babble_p else None
    if cfg.rir_p and rng.random() < cfg.rir_p:
        x = rooms.reverberate(x, bank[rng.integers(len(bank))])
    if cfg.babble_p and rng.random() < cfg.babble_p:
        noise = rooms.babble(len(x), int(rng.integers(cfg.babble_talkers[0], cfg.babble_talkers[1] + 1)),
                             rooms.babble_pool(cfg.rir_bank, cfg.babble_manifests, cfg.rir_seed), rng)
        noise = rooms.reverberate(noise, bank[rng.integers(len(bank))])  # talkers further off, in a room too
        x = x + noise * np.sqrt(np.mean(x**2) / 10 ** (rng.uniform(*cfg.babble_snr_db) / 10))
    if cfg.drift_p and rng.random() < cfg.drift_p:
        x = devices.level_drift(x, rng, cfg.drift_db, rate)
    if cfg.device_p and rng.random() < cfg.device_p:
        x = devices.device_colour(x, rng, rate)
    if cfg.agc_p and rng.random() < cfg.agc_p:
        x = devices.agc_compress(x, rng, rate)
    if cfg.codec_p and rng.random() < cfg.codec_p:
        x = devices.codec_trip(x, cfg.codecs[int(rng.integers(len(cfg.codecs)))], rng)
    return x.astype(np.float32)


def augment_audio(x: np.ndarray, rate: int, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    if cfg.speed[0] != 1.0 or cfg.speed[1] != 1.0:
        factor = rng.uniform(*cfg.speed)
        x = soxr.resample(x, rate, round(rate / factor))
    if rng.random() < cfg.tight_start_p:
        x = x[_onset(x, rate) :]
    x = rooms_and_devices(x, rate, cfg, rng)
    if cfg.lead_p and rng.random() < cfg.lead_p:
        x = np.concatenate([np.zeros(int(rng.uniform(*cfg.lead_s) * rate), np.float32), x])
    if cfg.shift_samples:
        x = x[int(rng.integers(0, cfg.shift_samples + 1)) :]
    if rng.random() < cfg.telephone_prob:
        x = soxr.resample(telephone_band(soxr.resample(x, rate, 8000), 8000), 8000, rate)
    elif rng.random() < cfg.narrowband_prob:
        x = soxr.resample(soxr.resample(x, rate, 8000), 8000, rate)
    if rng.random() < cfg.noise_prob and len(x):
        power = np.mean(x**2) + 1e-10
        snr = rng.uniform(*cfg.snr_db)
        x = x + colored_noise(len(x), rng) * np.sqrt(power / 10 ** (snr / 10))
    x = x * 10 ** (rng.uniform(*cfg.gain_db) / 20)
    peak = np.max(np.abs(x)) if len(x) else 0.0
    x = x / peak * 0.99 if peak > 0.99 else x
    if cfg.lead_noise_p and rng.random() < cfg.lead_noise_p:
        lead = rng.standard_normal(int(rng.uniform(*cfg.lead_s) * rate)) * 10 ** (rng.uniform(*cfg.lead_noise_dbfs) / 20)
        x = np.concatenate([lead, x])
    return x.astype(np.float32)


def augment_features(logmel: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Warp and colour one utterance's log-mel [frames, n_mels] (natural-log power)."""
    n = logmel.shape[-1]
    bins = torch.arange(n, dtype=torch.float32)
    if cfg.mel_warp != (1.0, 1.0):
        pos = (bins * float(rng.uniform(*cfg.mel_warp))).clamp(0, n - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=n - 1)
        frac = pos - lo
        logmel = logmel[..., lo] * (1 - frac) + logmel[..., hi] * frac
    if cfg.eq_db:
        curve = sum(
            float(rng.uniform(-1, 1)) * cfg.eq_db / k * torch.cos(torch.pi * k * (bins + 0.5) / n) for k in (1, 2, 3)
        )
        logmel = logmel + curve * (np.log(10) / 10)  # dB -> natural log of power
    return logmel


def spec_augment(normalized: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """SpecAugment on normalised features [batch, frames, n_mels]: masked cells become the mean (0)."""
    x = normalized.transpose(1, 2)[:, None]  # [batch, 1, n_mels, frames]
    for _ in range(cfg.freq_masks):
        x = mask_along_axis_iid(x, cfg.freq_mask_bins, 0.0, 2)
    for _ in range(cfg.time_masks):
        x = mask_along_axis_iid(x, cfg.time_mask_steps, 0.0, 3)
    return x[:, 0].transpose(1, 2)
