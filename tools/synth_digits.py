"""Synthetic connected-digit utterances from espeak-ng, flite and festival voices.

FSDD has five male speakers; TTS adds many more voices (female, accents, rates, pitches) and the
"oh" reading of 0 that FSDD never says. `--accents` makes a corpus of its own: English digit words as speakers of
Indian languages say them (issue 26: the dev phone numbers' Hindi and Marathi readers lose the most digits, and no
such voice is in training), each word spelt in the language's script and read by its espeak-ng voice.
Utterance i depends only on (seed, i), files that exist are kept, so an interrupted run resumes and a larger --n
extends a smaller one.

    python -m tools.synth_digits --n 3000 --seed 0 --out data/synth --jobs 2
    python -m tools.synth_digits --accents --n 3000 --seed 0 --out data/synth_accents --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
RATE = 16000

ESPEAK_LANGS = [
    "en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-us-nyc",
]  # fmt: skip
# espeak-ng silently falls back to the plain voice for an unknown variant, so these were checked
# one by one; whispering, croaking and robot variants are left out as unlike any caller.
ESPEAK_VARIANTS = [
    "", "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "klatt",
    "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "Alex", "Andy", "Annie", "aunty", "belinda",
    "benjamin", "david", "ed", "edward", "john", "linda", "max", "michel", "paul", "pedro",
    "quincy", "rob", "robert", "steph", "travis", "victor", "zac", "grandma", "grandpa", "norbert",
    "shelby", "iven", "adam", "boris", "Denis", "Gene", "Hugo", "Jacky", "Lee", "Michael", "Mike",
]  # fmt: skip
FLITE_VOICES = {"kal": 105.0, "kal16": 105.0, "awb": 110.0, "rms": 100.0, "slt": 175.0}  # f0 means
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
# English digit words as loanwords in each script: the speaker's phonology comes with them. In Devanagari, "two" and
# "eight" take a retroflex t, "three" a dental aspirated t, "one" a v (espeak-ng -x: hi "v'Vn t.'u: t#r'i"); the
# Dravidian spellings give "tr" and a "y" glide in "eight". An English word in Latin letters would switch espeak back
# to its English voice, so every word is spelt. Checked one by one with `espeak-ng -v L -x`; Urdu is left out (its
# "five" came out as three vowels).
ACCENT_SPELLINGS = {
    "hi": "ज़ीरो वन टू थ्री फ़ोर फ़ाइव सिक्स सेवन एट नाइन ओ",
    "mr": "झीरो वन टू थ्री फोर फाइव्ह सिक्स सेव्हन एट नाइन ओ",
    "ne": "जिरो वान टु थ्री फोर फाइभ सिक्स सेभेन एट नाइन ओ",
    "gu": "ઝીરો વન ટૂ થ્રી ફોર ફાઇવ સિક્સ સેવન એઇટ નાઇન ઓ",
    "bn": "জিরো ওয়ান টু থ্রি ফোর ফাইভ সিক্স সেভেন এইট নাইন ও",
    "pa": "ਜ਼ੀਰੋ ਵਨ ਟੂ ਥ੍ਰੀ ਫ਼ੋਰ ਫ਼ਾਈਵ ਸਿਕਸ ਸੈਵਨ ਏਟ ਨਾਈਨ ਓ",
    "ta": "ஜீரோ ஒன் டூ த்ரீ ஃபோர் ஃபைவ் சிக்ஸ் செவன் எய்ட் நைன் ஓ",
    "te": "జీరో వన్ టూ త్రీ ఫోర్ ఫైవ్ సిక్స్ సెవెన్ ఎయిట్ నైన్ ఓ",
    "kn": "ಝೀರೋ ವನ್ ಟೂ ತ್ರೀ ಫೋರ್ ಫೈವ್ ಸಿಕ್ಸ್ ಸೆವೆನ್ ಎಯ್ಟ್ ನೈನ್ ಓ",
}
_ACCENT_WORDS = {lang: dict(zip([*DIGIT_WORDS, "oh"], spelt.split())) for lang, spelt in ACCENT_SPELLINGS.items()}
# espeak and flite take ~20 ms an utterance, festival ~0.4 s, so festival gets a smaller share.
ENGINE_SHARES = {"espeak-ng": 0.6, "flite": 0.25, "festival": 0.15}


@dataclass(frozen=True)
class SynthOptions:
    """Text and level choices; the audio side mirrors tools/digits_data.ConnectedOptions."""

    min_digits: int = 1
    max_digits: int = 16
    phone_length_p: float = 0.3  # chance of a common phone/PIN length (4, 6, 7, 10, 11)
    group_p: float = 0.6  # chance of commas between groups (a pause in every engine)
    oh_p: float = 0.35  # chance the utterance reads 0 as "oh" (each zero then "oh" with p 0.85)
    edge_silence_s: tuple[float, float] = (0.05, 0.5)
    peak: tuple[float, float] = (0.25, 0.95)
    noise_dbfs: tuple[float, float] | None = (-70.0, -50.0)  # TTS silence is digitally zero
    accents: bool = False  # every utterance an Indian language's espeak-ng voice reading the words in its script


@dataclass(frozen=True)
class Job:
    """Everything needed to make utterance `index`; chosen up front so workers hold no randomness."""

    index: int
    engine: str
    voice: str
    spoken: str  # what the engine is given (commas for pauses)
    text: str  # target: lowercase words as spoken
    rate_wpm: int  # espeak words per minute
    pitch: int  # espeak 0-99
    word_gap: int  # espeak extra gap between words, 10 ms units
    stretch: float  # flite / festival duration stretch
    f0: float  # flite / festival diphone mean pitch, Hz
    lead_s: float
    trail_s: float
    peak: float
    noise_dbfs: float | None
    noise_seed: int


# ---------------------------------------------------------------------------------------------
# choosing utterances


def _n_digits(rng: np.random.Generator, opt: SynthOptions) -> int:
    common = [n for n in (4, 6, 7, 10, 11) if opt.min_digits <= n <= opt.max_digits]
    if common and rng.random() < opt.phone_length_p:
        return int(rng.choice(common))
    return int(rng.integers(opt.min_digits, opt.max_digits + 1))


def _groups(rng: np.random.Generator, n: int) -> list[int]:
    fixed = {7: [3, 4], 10: [3, 3, 4], 11: [1, 3, 3, 4], 4: [2, 2], 6: [3, 3], 8: [4, 4]}
    if n in fixed and rng.random() < 0.7:
        return fixed[n]
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(min(int(rng.integers(2, 5)), n - sum(sizes)))
    return sizes


def digit_text(rng: np.random.Generator, opt: SynthOptions) -> tuple[str, str]:
    """(spoken text with commas, target text) of a random digit string."""
    n = _n_digits(rng, opt)
    use_oh = rng.random() < opt.oh_p
    words = []
    for d in rng.integers(0, 10, n):
        oh = use_oh and d == 0 and rng.random() < 0.85
        words.append("oh" if oh else DIGIT_WORDS[d])
    if n < 4 or rng.random() >= opt.group_p:
        return " ".join(words), " ".join(words)
    chunks, start = [], 0
    for size in _groups(rng, n):
        chunks.append(" ".join(words[start : start + size]))
        start += size
    return ", ".join(chunks), " ".join(words)


def make_job(index: int, seed: int, opt: SynthOptions) -> Job:
    rng = np.random.default_rng([seed, index])
    engines = list(ENGINE_SHARES)
    engine = engines[int(rng.choice(len(engines), p=list(ENGINE_SHARES.values())))]
    if opt.accents:
        engine, langs = "espeak-ng", list(ACCENT_SPELLINGS)
        variant = ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))]
        lang = langs[int(rng.integers(len(langs)))]
        voice = f"{lang}+{variant}" if variant else lang
    elif engine == "espeak-ng":
        lang = ESPEAK_LANGS[int(rng.integers(len(ESPEAK_LANGS)))]
        variant = ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))]
        voice = f"{lang}+{variant}" if variant else lang
    elif engine == "flite":
        voice = list(FLITE_VOICES)[int(rng.integers(len(FLITE_VOICES)))]
    else:
        voice = FESTIVAL_VOICES[int(rng.integers(len(FESTIVAL_VOICES)))]
    spoken, text = digit_text(rng, opt)
    if opt.accents:
        words = _ACCENT_WORDS[voice.split("+")[0]]
        spoken = re.sub(r"[a-z]+", lambda m: words[m.group()], spoken)
    base_f0 = FLITE_VOICES.get(voice, 105.0)
    return Job(
        index=index,
        engine=engine,
        voice=voice,
        spoken=spoken,
        text=text,
        rate_wpm=int(rng.integers(120, 261)),
        pitch=int(rng.integers(20, 81)),
        word_gap=int(rng.choice([0, 0, 0, 1, 2, 4, 8, 12])),
        stretch=float(rng.uniform(0.8, 1.35)),
        f0=float(base_f0 * rng.uniform(0.8, 1.3)),
        lead_s=float(rng.uniform(*opt.edge_silence_s)),
        trail_s=float(rng.uniform(*opt.edge_silence_s)),
        peak=float(rng.uniform(*opt.peak)),
        noise_dbfs=float(rng.uniform(*opt.noise_dbfs)) if opt.noise_dbfs else None,
        noise_seed=int(rng.integers(2**31)),
    )


# ---------------------------------------------------------------------------------------------
# running the engines


def _command(job: Job, wav: str) -> tuple[list[str], str | None]:
    """(argv, stdin text) that makes the engine write `wav`."""
    if job.engine == "espeak-ng":
        argv = ["espeak-ng", "-v", job.voice, "-s", str(job.rate_wpm), "-p", str(job.pitch)]
        return [*argv, "-g", str(job.word_gap), "-w", wav, job.spoken], None
    if job.engine == "flite":
        argv = ["flite", "-voice", job.voice, "-t", job.spoken, "-o", wav]
        argv += ["--setf", f"duration_stretch={job.stretch:.3f}"]
        return [*argv, "--setf", f"int_f0_target_mean={job.f0:.1f}"], None
    evals = [f"(voice_{job.voice})", f"(Parameter.set 'Duration_Stretch {job.stretch:.3f})"]
    if job.voice.endswith("_diphone"):  # the HTS voice ignores both, but diphone voices take them
        evals.append(
            f"(set! int_lr_params '((target_f0_mean {job.f0:.1f}) (target_f0_std {job.f0 * 0.15:.1f})"
            " (model_f0_mean 170) (model_f0_std 34)))"
        )
    argv = ["text2wave"] + [a for e in evals for a in ("-eval", e)] + ["-o", wav]
    return argv, job.spoken + "\n"


def synthesize(job: Job) -> np.ndarray:
    """Run the engine and return 16 kHz float32 audio with silence, level and noise floor applied."""
    with tempfile.TemporaryDirectory(prefix="synth_") as tmp:
        wav = os.path.join(tmp, "out.wav")
        argv, stdin = _command(job, wav)
        subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=120)
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != RATE:
        audio = soxr.resample(audio, sr, RATE, quality="HQ").astype(np.float32)
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak < 1e-4:
        raise RuntimeError("engine produced silence")
    lead, trail = np.zeros(int(job.lead_s * RATE), np.float32), np.zeros(int(job.trail_s * RATE), np.float32)
    audio = np.concatenate([lead, audio * np.float32(job.peak / peak), trail])
    if job.noise_dbfs is not None:
        noise = np.random.default_rng(job.noise_seed).standard_normal(len(audio), np.float32)
        audio += np.float32(10.0 ** (job.noise_dbfs / 20.0)) * noise
    return np.clip(audio, -1.0, 1.0)


def _run(args: tuple[Job, str]) -> tuple[Job, float | None, str | None]:
    """Make one file unless it exists; (job, duration or None, error or None)."""
    job, out_dir = args
    path = Path(out_dir) / _relpath(job)
    if path.exists():
        return job, sf.info(str(path)).duration, None
    try:
        audio = synthesize(job)
    except Exception as e:  # a failed voice must not stop the run; it is reported at the end
        err = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) and e.stderr else str(e)
        return job, None, f"{type(e).__name__}: {' '.join(err.split())[:200]}"
    tmp = path.with_suffix(".tmp.wav")
    sf.write(tmp, audio, RATE, subtype="PCM_16")
    tmp.replace(path)  # atomic, so an interrupted run never leaves a truncated file behind
    return job, len(audio) / RATE, None


def _relpath(job: Job) -> str:
    return f"audio/{job.index:05d}.wav"


# ---------------------------------------------------------------------------------------------
# command line


def generate(out_dir: Path, n: int, seed: int, jobs: int, opt: SynthOptions = SynthOptions()) -> Path:
    """Make (or complete) `n` utterances and write manifest.jsonl; returns the manifest path."""
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    todo = [(make_job(i, seed, opt), str(out_dir)) for i in range(n)]
    results = []
    with Pool(jobs) as pool:
        for k, result in enumerate(pool.imap(_run, todo, chunksize=8), 1):
            results.append(result)
            if k % 500 == 0 or k == n:
                print(f"  {k}/{n}", file=sys.stderr, flush=True)
    lines, failures = [], Counter()
    for job, duration, error in results:
        if error is not None:
            failures[(job.engine, job.voice, error)] += 1
            continue
        record = {"audio": _relpath(job), "text": job.text, "duration": round(duration, 4)}
        record |= {"speaker": f"{job.engine}:{job.voice}", "voice": f"{job.engine}:{job.voice}"}
        lines.append(json.dumps(record))
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    (out_dir / "options.json").write_text(json.dumps({"n": n, "seed": seed, **asdict(opt)}, indent=1))
    for (engine, voice, error), count in sorted(failures.items()):
        print(f"FAILED {count}x {engine}:{voice}: {error}", file=sys.stderr)
    return manifest


def summarize(manifest: Path) -> None:
    """Per-engine counts and seconds per word, a cheap check that no voice spoke nonsense."""
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line]
    by_engine: dict[str, list[tuple[float, int]]] = {}
    for r in records:
        engine = r["voice"].split(":")[0]
        by_engine.setdefault(engine, []).append((r["duration"], len(r["text"].split())))
    total = sum(d for rows in by_engine.values() for d, _ in rows)
    print(f"{manifest}: {len(records)} utterances, {total / 3600:.2f} h")
    for engine, rows in sorted(by_engine.items()):
        per_word = np.array([d / w for d, w in rows])
        print(
            f"  {engine:10s} {len(rows):5d} utts  s/word median {np.median(per_word):.2f}"
            f"  min {per_word.min():.2f}  max {per_word.max():.2f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="data/synth")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-noise", action="store_true", help="no added noise floor")
    parser.add_argument("--accents", action="store_true", help="Indian languages' voices reading the digit words")
    args = parser.parse_args(argv)
    opt = SynthOptions(noise_dbfs=None if args.no_noise else SynthOptions.noise_dbfs, accents=args.accents)
    start = time.perf_counter()
    manifest = generate(Path(args.out), args.n, args.seed, args.jobs, opt)
    print(f"generated in {time.perf_counter() - start:.1f} s with {args.jobs} jobs")
    summarize(manifest)


if __name__ == "__main__":
    main()
