"""Devices for training audio: a phone or laptop microphone's colour, its AGC and compressor, a slow level drift,
and codec round trips (GSM 06.10, AMR-NB, Opus, MP3). Every function takes and returns 16 kHz float32 audio of the
same length, time-aligned with its input, so labels do not move.

Codecs: GSM 06.10 and MP3 through soundfile (libsndfile 1.2, already a dependency; ~4 and ~8 ms of one core a
second of audio); AMR-NB and Opus through PyAV (its wheels bundle FFmpeg with opencore-amr and libopus: the real
codecs, where libsndfile has no AMR and its Opus encoder costs ~55 ms a second of audio at 16 kHz against ~4 ms
here at complexity 0-2, which phones use). pedalboard (GSM, MP3, compressor) was not taken: it is GPLv3, this
project Apache-2.0.
"""

from __future__ import annotations

import io

import numpy as np
import scipy.signal
import soundfile as sf
import soxr

RATE = 16000
CODECS = ("gsm", "amrnb", "opus", "mp3")
AMR_RATES = (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200)  # the eight AMR-NB modes, bits/s


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-12))


def _biquad(kind: str, f0: float, rate: int, q: float = 0.7071, gain_db: float = 0.0) -> np.ndarray:
    """One RBJ cookbook second-order section (a tenth of scipy.signal.butter's cost, which a call per item felt)."""
    a, w = 10 ** (gain_db / 40), 2 * np.pi * f0 / rate
    alpha, cw = np.sin(w) / (2 * q), np.cos(w)
    if kind == "peak":
        b, den = [1 + alpha * a, -2 * cw, 1 - alpha * a], [1 + alpha / a, -2 * cw, 1 - alpha / a]
    elif kind == "high":
        b, den = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2], [1 + alpha, -2 * cw, 1 - alpha]
    else:
        b, den = [(1 - cw) / 2, 1 - cw, (1 - cw) / 2], [1 + alpha, -2 * cw, 1 - alpha]
    return np.concatenate([np.array(b) / den[0], np.array(den) / den[0]])


def device_colour(x: np.ndarray, rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    """A small microphone and its housing: high-pass 100-400 Hz (tiny capsules and wind filters), 4th-order
    Butterworth low-pass at 3.4-7.6 kHz (narrowband paths and cheap ADCs; half the time none), one or two resonances of
    -6 to +12 dB at 0.8-6 kHz. Same RMS out."""
    sos = [_biquad("high", rng.uniform(100, 400), rate)]
    cut = rng.uniform(3400, 8000)
    if cut < 7600:
        sos += [_biquad("low", cut, rate, q) for q in (0.5412, 1.3066)]  # the two sections of a 4th-order Butterworth
    for _ in range(int(rng.integers(1, 3))):
        f0 = np.exp(rng.uniform(np.log(800), np.log(6000)))
        sos.append(_biquad("peak", f0, rate, rng.uniform(0.7, 4), rng.uniform(-6, 12)))
    y = scipy.signal.sosfilt(np.stack(sos), x).astype(np.float32)
    return y * np.float32(_rms(x) / _rms(y))


def _hop_level(x: np.ndarray, hop: int) -> np.ndarray:
    n = -(-len(x) // hop) * hop
    frames = np.pad(x, (0, n - len(x))).reshape(-1, hop)
    return np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10


def _per_sample(gain_db: np.ndarray, hop: int, n: int) -> np.ndarray:
    """A gain curve in dB, one value a hop (at its start), as linear gains a sample, linearly between hops (a
    broadcast: np.interp cost ~1.3 ms an item)."""
    g = (10 ** (np.append(gain_db, gain_db[-1]) / 20)).astype(np.float32)
    frac = np.arange(hop, dtype=np.float32) / hop
    return (g[:-1, None] + (g[1:] - g[:-1])[:, None] * frac).reshape(-1)[:n]


def agc_compress(x: np.ndarray, rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    """A phone's automatic gain control then a fast compressor with makeup gain.

    AGC: the level, smoothed over 0.3-2 s, is pulled to -26..-16 dBFS with at most +15..+35 dB of gain, so pauses
    pump the room's noise up as on a real device. Compressor: 5 ms peaks, attack at once, release 100-500 dB/s,
    threshold 10-30 dB under the peak, ratio 2-20 (20 is a limiter), makeup to a peak of -1..-6 dBFS."""
    if not len(x):
        return x
    hop = rate // 200  # 5 ms
    power = _hop_level(x, hop)
    tau = rng.uniform(0.3, 2.0) * rate / hop
    smooth = scipy.signal.lfilter([1 / tau], [1, 1 / tau - 1], power, zi=[power[0] * (1 - 1 / tau)])[0]
    gain = np.minimum(rng.uniform(-26, -16) - 10 * np.log10(smooth), rng.uniform(15, 35))
    y = x * _per_sample(gain, hop, len(x))
    peaks = 20 * np.log10(np.abs(np.pad(y, (0, -len(y) % hop))).reshape(-1, hop).max(axis=1) + 1e-9)
    # peak hold with a release linear in dB: env[i] = max over j <= i of peaks[j] - fall * (i - j), vectorised
    fall = rng.uniform(100, 500) * hop / rate
    ramp = np.arange(len(peaks)) * fall
    env = np.maximum.accumulate(peaks + ramp) - ramp
    threshold = peaks.max() - rng.uniform(10, 30)
    over = np.maximum(env - threshold, 0)
    reduction = -over * (1 - 1 / rng.uniform(2, 20))
    makeup = rng.uniform(-6, -1) - (peaks.max() + reduction[np.argmax(peaks)])
    return np.clip(y * _per_sample(reduction + makeup, hop, len(y)), -1, 1).astype(np.float32)


def level_drift(x: np.ndarray, rng: np.random.Generator, depth_db: float, rate: int = RATE) -> np.ndarray:
    """A slow level change (a talker turning, a hand moving the phone): two sinusoids in dB, periods 1.5-6 s,
    together at most +-depth_db."""
    hop = rate // 100  # the curve on a 10 ms grid, interpolated: a sine per sample cost ~5 ms an item
    t = np.arange(len(x) // hop + 2) * (hop / rate)
    curve = sum(
        rng.uniform(0, depth_db / 2) * np.sin(2 * np.pi * t / rng.uniform(1.5, 6) + rng.uniform(0, 2 * np.pi))
        for _ in range(2)
    )
    return x * _per_sample(curve, hop, len(x))


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    return np.pad(y, (0, max(n - len(y), 0)))[:n].astype(np.float32)


def _soundfile_trip(x: np.ndarray, rate: int, fmt: str, subtype: str, **kwargs: float) -> np.ndarray:
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1), rate, format=fmt, subtype=subtype, **kwargs)
    buf.seek(0)
    return _fit(sf.read(buf, dtype="float32")[0], len(x))  # libsndfile takes out MP3's encoder delay (measured 0 lag)


def _av_trip(
    x: np.ndarray, rate: int, codec: str, decoder: str, bit_rate: int, options: dict[str, str], delay: int
) -> np.ndarray:
    import av

    enc = av.CodecContext.create(codec, "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate, enc.options = rate, "mono", "s16", bit_rate, options
    enc.open()
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    dec = av.CodecContext.create(decoder, "r")
    dec.sample_rate, dec.layout = rate, "mono"
    frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
    frame.sample_rate, frame.pts = rate, 0
    packets = [*enc.encode(frame), *enc.encode(None)]  # PyAV cuts the codec's frames (a Python loop cost ~20% more)
    out, out_rate = [], rate
    for packet in [*packets, None]:
        for frame in dec.decode(packet):
            out_rate = frame.sample_rate
            out.append(frame.to_ndarray().reshape(-1))
    y = np.concatenate(out) if out else np.zeros(0, np.int16)
    y = y.astype(np.float32) / 32768 if y.dtype == np.int16 else y.astype(np.float32)
    if out_rate != rate:
        y = soxr.resample(y, out_rate, rate)
    return _fit(y[delay:], len(x))


def codec_trip(x: np.ndarray, codec: str, rng: np.random.Generator) -> np.ndarray:
    """`x` (16 kHz) encoded and decoded by `codec` at a random low bit rate; same length and timing."""
    if codec == "gsm":  # GSM 06.10 full rate, 13 kbit/s, 8 kHz
        y = _soundfile_trip(soxr.resample(x, RATE, 8000), 8000, "WAV", "GSM610")
        return _fit(soxr.resample(y, 8000, RATE), len(x))
    if codec == "amrnb":  # AMR-NB, 4.75-12.2 kbit/s, 8 kHz: today's mobile calls (39 samples of delay at 8 kHz)
        y = _av_trip(soxr.resample(x, RATE, 8000), 8000, "libopencore_amrnb", "amrnb", int(rng.choice(AMR_RATES)), {}, 39)
        return _fit(soxr.resample(y, 8000, RATE), len(x))
    if codec == "opus":  # Opus, 6-24 kbit/s, complexity 0-2: VoIP and messaging apps' voice notes
        options = {"application": "voip", "compression_level": str(rng.integers(0, 3)), "frame_duration": "20"}
        # 104 samples of delay: Opus' pre-skip, 312 at 48 kHz (measured by cross-correlation, as the others)
        return _av_trip(x, RATE, "libopus", "libopus", int(rng.uniform(6000, 24000)), options, 104)
    if codec == "mp3":  # MP3 at 16 kHz, VBR ~24-45 kbit/s: recorder apps and old web uploads
        return _soundfile_trip(x, RATE, "MP3", "MPEG_LAYER_III", compression_level=float(rng.uniform(0.4, 1.0)))
    raise ValueError(f"codecs: {codec!r} is not one of {', '.join(CODECS)}")
