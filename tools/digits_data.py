"""Connected spoken-digit utterances built from the Free Spoken Digit Dataset (FSDD).

FSDD holds isolated digits only, but the model must read phone numbers and PINs, so utterances are
made by joining one speaker's clips with phone-number-like pauses and grouping, level changes and a
noise floor (digital silence between words would be a cue that real recordings never give).
Everything is drawn from the caller's numpy Generator, so an utterance is a pure function of its seed.

    python -m tools.digits_data connected --speakers lucas --n 200 --seed 1 --out data/test/lucas
    python -m tools.digits_data isolated --speakers lucas --n 200 --out data/test/lucas_isolated
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr
from scipy.signal import butter, sosfiltfilt

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FSDD_ROOT = "../shared/data/fsdd"
REPO_ROOT = Path(__file__).resolve().parents[1]
LONGEST_DIGIT_S = 1.5  # the five FSDD speakers' trimmed clips are at most 1.15 s
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.(wav|flac)$")


@dataclass(frozen=True)
class Clip:
    """One isolated FSDD recording: `{digit}_{speaker}_{take}.wav` (or `.flac`, as fsdd-jason's)."""

    path: Path
    digit: int
    speaker: str
    take: int


@dataclass(frozen=True)
class ConnectedOptions:
    """How clips are joined; the defaults imitate someone reading out a phone number or PIN."""

    max_gap_s: float = 0.4  # pause between digits of one group
    butt_join_p: float = 0.25  # chance of no pause at all between two digits of a group
    group_gap_s: tuple[float, float] = (0.25, 0.8)  # pause between groups (3-3-4 style)
    group_p: float = 0.65  # chance the string is spoken in groups rather than evenly
    edge_silence_s: tuple[float, float] = (0.05, 0.6)  # leading and trailing silence
    clip_gain_db: float = 3.0  # each digit's level varies by up to +-this
    peak: tuple[float, float] = (0.25, 0.95)  # utterance peak level
    noise_dbfs: tuple[float, float] | None = (-70.0, -50.0)  # RMS of the noise floor; None: none
    # The clips are 8 kHz recordings, so their noise stops at 4 kHz; broadband noise over upsampled
    # clips is a mismatch no real recording has (it also doubled PocketSphinx's insertions).
    noise_rate: int | None = 8000  # rate the noise is made at; None: the output rate (broadband)
    phone_length_p: float = 0.3  # chance of a common phone/PIN length (4, 6, 7, 10, 11)
    telephone: bool = False  # 300-3400 Hz band and 8-bit mu-law, as on a phone line


# ---------------------------------------------------------------------------------------------
# FSDD clips


def resolve_path(root: str | Path) -> Path:
    """A relative root is taken from the working directory, else from the repository root."""
    root = Path(root)
    if root.is_absolute() or root.exists():
        return root
    return REPO_ROOT / root


def fsdd_clips(
    root: str | Path | Sequence[str | Path] = FSDD_ROOT, speakers: Sequence[str] | None = None
) -> list[Clip]:
    """All FSDD clips under `root`/recordings (or `root`/audio, or `root` itself; or under each of several roots),
    optionally of some speakers only."""
    if not isinstance(root, (str, Path)):
        clips = [c for r in root for c in fsdd_clips(r)]
        wanted = set(speakers) if speakers else None
        if wanted and (missing := wanted - {c.speaker for c in clips}):
            raise ValueError(f"no FSDD clips for speaker(s) {sorted(missing)} under {list(root)}")
        return [c for c in clips if wanted is None or c.speaker in wanted]
    root = resolve_path(root)
    folder = next((root / d for d in ("recordings", "audio") if (root / d).is_dir()), root)
    wanted = set(speakers) if speakers else None
    clips = []
    for path in sorted(folder.glob("*.*")):
        m = _NAME.match(path.name)
        if m is None:
            continue
        clip = Clip(path, int(m[1]), m[2], int(m[3]))
        if wanted is None or clip.speaker in wanted:
            clips.append(clip)
    if wanted and (missing := wanted - {c.speaker for c in clips}):
        raise ValueError(f"no FSDD clips for speaker(s) {sorted(missing)} under {folder}")
    return clips


def _trim(audio: np.ndarray, rate: int, top_db: float, margin_s: float) -> np.ndarray:
    """Cut leading/trailing silence, keeping a margin so soft onsets (f, s, th) survive."""
    if len(audio) == 0:
        return audio
    _, (start, end) = librosa.effects.trim(audio, top_db=top_db, frame_length=256, hop_length=64)
    if end - start > LONGEST_DIGIT_S * rate:
        start, end = _first_word(audio, rate)
    margin = int(margin_s * rate)
    return audio[max(0, start - margin) : min(len(audio), end + margin)]


def _first_word(audio: np.ndarray, rate: int, above_db: float = 6.0, pause_s: float = 0.2) -> tuple[int, int]:
    """(start, end) of the first stretch 6 dB above the clip's noise floor (its median 10 ms level), up to a
    pause of 0.2 s: fsdd-jason's clips are 3 s of which the word is the first half second, padded with noise at
    about -44 dBFS and often ending in a burst of the next take, which a trim from both ends would keep."""
    hop = rate // 100
    level = 10 * np.log10(np.array([np.mean(audio[i : i + hop] ** 2) for i in range(0, len(audio), hop)]) + 1e-12)
    loud = np.nonzero(level > np.median(level) + above_db)[0]
    if len(loud) == 0:
        return 0, len(audio)
    end = loud[0]
    for i in loud[1:]:
        if (i - end) * hop > pause_s * rate:
            break
        end = i
    return int(loud[0] * hop), min(len(audio), int((end + 1) * hop))


def _load(path: str, rate: int, trim_db: float | None, margin_s: float) -> np.ndarray:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if trim_db is not None:
        audio = _trim(audio, sr, trim_db, margin_s)
    if sr != rate:
        audio = soxr.resample(audio, sr, rate, quality="HQ").astype(np.float32)
    audio.flags.writeable = False  # shared by the cache
    return audio


_load_cached = functools.lru_cache(maxsize=8192)(_load)


def load_clip(
    path: str | Path,
    rate: int = 16000,
    trim_db: float | None = 35.0,
    margin_s: float = 0.03,
    cache: bool = True,
) -> np.ndarray:
    """Mono float32 at `rate`, silence trimmed; cached (read-only) because training reuses clips."""
    load = _load_cached if cache else _load
    return load(str(path), rate, trim_db, margin_s)


# ---------------------------------------------------------------------------------------------
# connected utterances


def _n_digits(rng: np.random.Generator, lo: int, hi: int, phone_p: float) -> int:
    common = [n for n in (4, 6, 7, 10, 11) if lo <= n <= hi]
    if common and rng.random() < phone_p:
        return int(rng.choice(common))
    return int(rng.integers(lo, hi + 1))


def _groups(rng: np.random.Generator, n: int, group_p: float) -> list[int]:
    """Group sizes as people read numbers: 3-3-4 for ten digits, 3-4 for seven, else 2-4 each."""
    if n < 4 or rng.random() >= group_p:
        return [n]
    fixed = {7: [3, 4], 10: [3, 3, 4], 11: [1, 3, 3, 4], 4: [2, 2], 6: [3, 3], 8: [4, 4]}
    if n in fixed and rng.random() < 0.7:
        return fixed[n]
    sizes = []
    while sum(sizes) < n:
        sizes.append(min(int(rng.integers(2, 5)), n - sum(sizes)))
    return sizes


def _gaps(rng: np.random.Generator, groups: list[int], opt: ConnectedOptions) -> list[float]:
    """Seconds of pause after each digit but the last."""
    tempo = rng.uniform(0.3, 1.0)  # some people rattle numbers off, some read them slowly
    gaps = []
    for g, size in enumerate(groups):
        for i in range(size):
            if i < size - 1:
                butt = rng.random() < opt.butt_join_p
                gaps.append(0.0 if butt else tempo * opt.max_gap_s * rng.random() ** 1.5)
            elif g < len(groups) - 1:
                gaps.append(rng.uniform(*opt.group_gap_s))
    return gaps


def _fade(audio: np.ndarray, rate: int, seconds: float = 0.005) -> np.ndarray:
    """Short raised-cosine ramps so butt-joined clips do not click."""
    n = min(int(seconds * rate), len(audio) // 2)
    if n == 0:
        return audio
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32))
    audio[:n] *= ramp
    audio[-n:] *= ramp[::-1]
    return audio


@functools.lru_cache(maxsize=8)
def _phone_band(rate: int) -> np.ndarray:
    return butter(4, [300.0, min(3400.0, 0.45 * rate)], btype="bandpass", fs=rate, output="sos")


def telephone_band(audio: np.ndarray, rate: int) -> np.ndarray:
    """300-3400 Hz band-pass and 8-bit mu-law round trip (G.711-like), as heard over a phone."""
    sos = _phone_band(rate)
    x = np.clip(sosfiltfilt(sos, audio), -1.0, 1.0)
    mu = 255.0
    coded = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127.0) / 127.0
    return (np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu).astype(np.float32)


def _by_speaker(clips: Sequence[Clip]) -> dict[str, dict[int, list[Clip]]]:
    table: dict[str, dict[int, list[Clip]]] = defaultdict(lambda: defaultdict(list))
    for clip in clips:
        table[clip.speaker][clip.digit].append(clip)
    return table


@dataclass(frozen=True)
class UtterancePlan:
    """Every random choice of one utterance, made before any audio so it does not depend on rate."""

    speaker: str
    clips: list[Clip]
    gaps_s: list[float]  # pause after each clip but the last
    gains: np.ndarray  # linear gain of each clip
    lead_s: float
    trail_s: float
    peak: float
    noise_dbfs: float | None

    @property
    def text(self) -> str:
        return " ".join(DIGIT_WORDS[c.digit] for c in self.clips)


def plan_utterance(
    clips: Sequence[Clip],
    rng: np.random.Generator,
    min_digits: int = 1,
    max_digits: int = 16,
    options: ConnectedOptions = ConnectedOptions(),
) -> UtterancePlan:
    """Pick the speaker first, then the digits, one of that speaker's takes of each, and pauses."""
    table = _by_speaker(clips)
    speakers = sorted(s for s, d in table.items() if len(d) == 10)
    if not speakers:
        raise ValueError("no speaker has clips of all ten digits")
    speaker = speakers[int(rng.integers(len(speakers)))]
    n = _n_digits(rng, min_digits, max_digits, options.phone_length_p)
    digits = rng.integers(0, 10, n)
    chosen = [table[speaker][d][int(rng.integers(len(table[speaker][d])))] for d in digits]
    gaps = _gaps(rng, _groups(rng, n, options.group_p), options)
    gains = 10.0 ** (rng.uniform(-options.clip_gain_db, options.clip_gain_db, n) / 20.0)
    lead, trail = rng.uniform(*options.edge_silence_s, 2)
    peak = float(rng.uniform(*options.peak))
    noise = float(rng.uniform(*options.noise_dbfs)) if options.noise_dbfs else None
    return UtterancePlan(speaker, chosen, gaps, gains, float(lead), float(trail), peak, noise)


def _noise(rng: np.random.Generator, n: int, dbfs: float, rate: int, noise_rate: int | None) -> np.ndarray:
    """White noise of RMS `dbfs`, band-limited to noise_rate / 2 when that is below rate / 2."""
    if noise_rate is None or noise_rate >= rate:
        white = rng.standard_normal(n, np.float32)
    else:
        white = rng.standard_normal(int(np.ceil(n * noise_rate / rate)) + 64, np.float32)
        white = soxr.resample(white, noise_rate, rate, quality="HQ")[:n]
        white = np.pad(white, (0, n - len(white)))
    return np.float32(10.0 ** (dbfs / 20.0)) * white.astype(np.float32)


def render(
    plan: UtterancePlan,
    rng: np.random.Generator,
    rate: int = 16000,
    options: ConnectedOptions = ConnectedOptions(),
) -> np.ndarray:
    """Float32 audio in [-1, 1] of a plan; `rng` is only used for the noise floor."""
    parts = [np.zeros(int(plan.lead_s * rate), np.float32)]
    for i, (clip, gain) in enumerate(zip(plan.clips, plan.gains)):
        parts.append(_fade(load_clip(clip.path, rate) * np.float32(gain), rate))
        if i < len(plan.gaps_s):
            parts.append(np.zeros(int(plan.gaps_s[i] * rate), np.float32))
    parts.append(np.zeros(int(plan.trail_s * rate), np.float32))
    audio = np.concatenate(parts)
    audio *= np.float32(plan.peak / max(float(np.abs(audio).max()), 1e-6))
    if plan.noise_dbfs is not None:
        audio += _noise(rng, len(audio), plan.noise_dbfs, rate, options.noise_rate)
    if options.telephone:
        audio = telephone_band(audio, rate)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def connected_utterance(
    clips: Sequence[Clip],
    rng: np.random.Generator,
    rate: int = 16000,
    min_digits: int = 1,
    max_digits: int = 16,
    options: ConnectedOptions = ConnectedOptions(),
) -> tuple[np.ndarray, str]:
    """(float32 audio in [-1, 1], text) of one random digit string spoken by one speaker.

    The noise is drawn last, so the same seed gives the same digits, takes and pauses at any rate.
    """
    plan = plan_utterance(clips, rng, min_digits, max_digits, options)
    return render(plan, rng, rate, options), plan.text


def write_connected_set(
    out_dir: str | Path,
    clips: Sequence[Clip],
    n: int,
    seed: int,
    rate: int = 16000,
    min_digits: int = 1,
    max_digits: int = 16,
    options: ConnectedOptions = ConnectedOptions(),
) -> Path:
    """Write `n` utterances as 16-bit wavs plus manifest.jsonl; returns the manifest path.

    Utterance i uses the generator seeded by (seed, i), so sets of different sizes share a prefix.
    """
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        plan = plan_utterance(clips, rng, min_digits, max_digits, options)
        audio = render(plan, rng, rate, options)
        rel = f"audio/{i:05d}.wav"
        sf.write(out_dir / rel, audio, rate, subtype="PCM_16")
        duration = round(len(audio) / rate, 4)
        records.append({"audio": rel, "text": plan.text, "duration": duration, "speaker": plan.speaker})
    return write_manifest(out_dir, records)


def write_isolated_set(out_dir: str | Path, clips: Sequence[Clip], n: int, seed: int) -> Path:
    """A manifest of `n` FSDD clips as recorded (one digit, cut tight to the word), pointing at the clips."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    picked = sorted(np.random.default_rng(seed).choice(len(clips), min(n, len(clips)), replace=False))
    records = []
    for clip in (clips[i] for i in picked):
        rel = os.path.relpath(clip.path.resolve(), out_dir.resolve())
        duration = round(sf.info(clip.path).duration, 4)
        records.append({"audio": rel, "text": DIGIT_WORDS[clip.digit], "duration": duration, "speaker": clip.speaker})
    return write_manifest(out_dir, records)


def write_manifest(out_dir: Path, records: list[dict]) -> Path:
    """`out_dir`/manifest.jsonl, one JSON object a line (audio paths relative to `out_dir`)."""
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest


# ---------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=FSDD_ROOT, help="FSDD folder (holding recordings/)")
    common.add_argument("--speakers", nargs="+", default=None, help="FSDD speakers to draw from (default all)")
    common.add_argument("--n", type=int, default=200)
    common.add_argument("--seed", type=int, default=1)
    common.add_argument("--out", required=True)
    p = sub.add_parser("connected", parents=[common], help="write a set of connected-digit utterances")
    p.add_argument("--rate", type=int, default=16000)
    p.add_argument("--min-digits", type=int, default=1)
    p.add_argument("--max-digits", type=int, default=16)
    p.add_argument("--no-noise", action="store_true", help="no added noise floor")
    p.add_argument("--telephone", action="store_true", help="300-3400 Hz band and mu-law (use --rate 8000)")
    sub.add_parser("isolated", parents=[common], help="a manifest of FSDD clips as recorded: one digit each, cut tight")
    args = parser.parse_args(argv)

    if args.command == "isolated":
        manifest = write_isolated_set(args.out, fsdd_clips(args.root, args.speakers), args.n, args.seed)
        print(f"{manifest}: {len(manifest.read_text().splitlines())} clips")
        return
    options = ConnectedOptions(
        noise_dbfs=None if args.no_noise else ConnectedOptions.noise_dbfs, telephone=args.telephone
    )
    clips = fsdd_clips(args.root, args.speakers)
    manifest = write_connected_set(
        args.out, clips, args.n, args.seed, args.rate, args.min_digits, args.max_digits, options
    )
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    seconds = sum(r["duration"] for r in records)
    words = sum(len(r["text"].split()) for r in records)
    print(f"{manifest}: {len(records)} utterances, {words} digits, {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
