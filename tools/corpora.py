"""Training data from the corpora users already have, read in their published layouts (issue 26).

Each reader is a `type:` of a config's `data.train` list (registered in tools/data.py's make_source):

- `speech_commands`: v0.01 / v0.02 folders, `<word>/<speaker>_nohash_<n>.wav` with `validation_list.txt`,
  `testing_list.txt` and `_background_noise_/`; the text is the folder's word, digits (zero..nine) by default;
- `librispeech`: a subset folder, `<reader>/<chapter>/<reader>-<chapter>.trans.txt` and its `<id>.flac`;
- `common_voice`: a language folder, `<split>.tsv` (columns `client_id path sentence ...`) and `clips/`;
- `audiomnist`: `data/<speaker 01..60>/<digit>_<speaker>_<take>.wav` (and `data/audioMNIST_meta.txt`);
- `nemo`: NeMo manifests, JSON lines `{"audio_filepath", "duration", "text"[, "offset", "speaker"]}`, relative
  paths taken from the manifest's folder.

Texts are normalised as the `manifest` source's; one that would lose a spoken part (a numeral, "&", a letter with no
ASCII form) is dropped, and each corpus prints one line of what it kept and dropped (tools/corpus_index.py). A corpus
is indexed once per process (paths and texts); decoded audio is cached as the `manifest` source's is.
`speakers` / `exclude_speakers` keep or leave out voices (hold speakers out, never utterances).

Held-out manifests for tools/evaluate.py, e.g. from Speech Commands' own lists (split by speaker already):

    python -m tools.corpora speech_commands data/speech_commands --split validation --out data/val/sc_digits
    python -m tools.corpora speech_commands data/speech_commands --split validation --connected 200 --out data/val/sc_strings
    python -m tools.corpora librispeech data/librispeech/dev-clean --out data/val/libri_dev
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .corpus_index import (
    Row,
    audiomnist_index,
    audiomnist_meta,
    common_voice_index,
    librispeech_index,
    nemo_index,
    speech_commands_index,
    word_list,
)
from .data import _cached_audio, load_audio
from .digits_data import DIGIT_WORDS, Clip, connected_utterance, resolve_path, write_connected_set, write_manifest

# ---------------------------------------------------------------------------------------------
# sources: sample(rng, rate) -> (float32 audio, text), as tools/data.py's


@functools.lru_cache(maxsize=4096)
def _cached_segment(path: str, rate: int, offset: float, duration: float | None) -> np.ndarray:
    sr = sf.info(path).samplerate
    frames = -1 if duration is None else round(duration * sr)
    audio, sr = sf.read(path, dtype="float32", always_2d=True, start=round(offset * sr), frames=frames)
    audio = audio.mean(axis=1)
    audio = soxr.resample(audio, sr, rate).astype(np.float32) if sr != rate else audio
    audio.flags.writeable = False  # shared by the cache
    return audio


def row_audio(row: Row, rate: int) -> np.ndarray:
    """The row's audio, mono at `rate` (cached, read-only); an unreadable file is a one-line error naming it."""
    try:
        return _cached_segment(row.audio, rate, row.offset, row.duration) if row.segment else _cached_audio(row.audio, rate)
    except (sf.SoundFileError, OSError) as e:
        raise ValueError(f"{row.audio}: cannot read audio ({str(e).splitlines()[0]})") from None


def select_speakers(rows: Sequence[Row], speakers: Sequence[str] | None, exclude: Sequence[str] | None) -> list[Row]:
    keep, leave = ({str(s) for s in v} if v else None for v in (speakers, exclude))
    return [r for r in rows if (keep is None or r.speaker in keep) and (leave is None or r.speaker not in leave)]


class RowSource:
    """Rows drawn at random; one longer than `max_duration` (read from the file where the corpus gives no length)
    is passed over and another drawn, from the same generator."""

    def __init__(self, name: str, rows: Sequence[Row], max_duration: float = 30.0):
        self.rows = [r for r in rows if r.duration is None or r.duration <= max_duration]
        if not self.rows:
            raise ValueError(f"{name}: no utterances")
        self.name, self.max_duration, self.too_long = name, max_duration, set()

    def sample(self, rng: np.random.Generator, rate: int) -> tuple[np.ndarray, str]:
        for _ in range(1000):
            i = int(rng.integers(len(self.rows)))
            if i not in self.too_long:
                audio = row_audio(self.rows[i], rate)
                if len(audio) <= self.max_duration * rate:
                    return audio, self.rows[i].text
                self.too_long.add(i)
        raise ValueError(f"{self.name}: no utterance of at most {self.max_duration} s in 1000 draws")


class ConnectedSource:
    """Digit strings joined from one speaker's isolated digits, as the `fsdd_connected` source joins FSDD's."""

    def __init__(self, name: str, rows: Sequence[Row], min_digits: int = 1, max_digits: int = 16):
        self.clips = [Clip(Path(r.audio), DIGIT_WORDS.index(r.text), r.speaker, i) for i, r in enumerate(rows)
                      if r.text in DIGIT_WORDS]
        digits: defaultdict[str, set[int]] = defaultdict(set)
        for c in self.clips:
            digits[c.speaker].add(c.digit)
        if not any(len(d) == 10 for d in digits.values()):
            raise ValueError(f"{name}: no speaker has clips of all ten digits")
        self.min_digits, self.max_digits = min_digits, max_digits

    def sample(self, rng: np.random.Generator, rate: int) -> tuple[np.ndarray, str]:
        return connected_utterance(self.clips, rng, rate, self.min_digits, self.max_digits)


@functools.lru_cache(maxsize=4)
def background_noise(root: str | Path, rate: int = 16000) -> tuple[np.ndarray, ...]:
    """Speech Commands' `_background_noise_` recordings (about a minute each: dishes, a bike, a tap, white and pink
    noise), mono at `rate`, read-only: real noise to mix into other audio."""
    folder = resolve_path(root) / "_background_noise_"
    recordings = tuple(load_audio(str(p), rate) for p in sorted(folder.glob("*.wav")))
    if not recordings:
        raise ValueError(f"{folder}: no .wav recordings")
    for r in recordings:
        r.flags.writeable = False
    return recordings


class NoiseSource:
    """Stretches of background noise with no words: what a keyword spotter calls silence, taught as no output."""

    def __init__(self, root: str | Path, seconds: tuple[float, float] = (1.0, 3.0)):
        folder = resolve_path(root) / "_background_noise_"
        if not any(folder.glob("*.wav")):
            raise ValueError(f"{folder}: no .wav recordings")
        self.root, self.seconds = root, seconds

    def sample(self, rng: np.random.Generator, rate: int) -> tuple[np.ndarray, str]:
        recordings = background_noise(self.root, rate)
        audio = recordings[int(rng.integers(len(recordings)))]
        n = min(len(audio), int(rng.uniform(*self.seconds) * rate))
        start = int(rng.integers(len(audio) - n + 1))
        return audio[start : start + n], ""


def _roots(root: str | Sequence[str]) -> tuple[Path, ...]:
    return tuple(resolve_path(r) for r in ([root] if isinstance(root, (str, Path)) else root))


def speech_commands(root: str, split: str = "train", words: str | Sequence[str] = "digits", mode: str = "words",
                    speakers: Sequence[str] | None = None, exclude_speakers: Sequence[str] | None = None,
                    min_digits: int = 1, max_digits: int = 16,
                    background_s: tuple[float, float] = (1.0, 3.0)) -> RowSource | ConnectedSource | NoiseSource:
    """mode "words": a clip and its word; "connected": digit strings of one speaker (the split's digit clips);
    "background": 1-3 s of `_background_noise_`, no words."""
    root_path = resolve_path(root)
    if mode == "background":
        return NoiseSource(root_path, tuple(background_s))
    rows, _ = speech_commands_index(root_path, split, tuple(DIGIT_WORDS) if mode == "connected" else word_list(words))
    rows = select_speakers(rows, speakers, exclude_speakers)
    return _clip_source(f"{root} ({split})", rows, mode, min_digits, max_digits, "words, connected, background")


def _clip_source(name: str, rows: Sequence[Row], mode: str, min_digits: int, max_digits: int,
                 modes: str = "words, connected", max_duration: float = 30.0) -> RowSource | ConnectedSource:
    """mode "words": each row as it is; "connected": digit strings joined from one speaker's digit rows."""
    if mode not in ("words", "connected"):
        raise ValueError(f"{name}: mode {mode!r} is none of {modes}")
    return ConnectedSource(name, rows, min_digits, max_digits) if mode == "connected" else RowSource(name, rows, max_duration)


def librispeech(root: str | Sequence[str], speakers: Sequence[str] | None = None,
                exclude_speakers: Sequence[str] | None = None, max_duration: float = 30.0) -> RowSource:
    """`root`: one subset folder (train-clean-100) or a list of them."""
    rows, _ = librispeech_index(_roots(root))
    return RowSource(str(root), select_speakers(rows, speakers, exclude_speakers), max_duration)


def common_voice(root: str, split: str = "train", words: str | Sequence[str] | None = None, mode: str = "words",
                 speakers: Sequence[str] | None = None, exclude_speakers: Sequence[str] | None = None,
                 min_digits: int = 1, max_digits: int = 16, max_duration: float = 30.0) -> RowSource | ConnectedSource:
    """`words`: keep only sentences of these words ("digits": zero..nine, which the Single Word Target segment holds);
    mode "connected": digit strings joined from one contributor's single-digit clips."""
    rows, _ = common_voice_index(resolve_path(root), split, tuple(DIGIT_WORDS) if mode == "connected" else word_list(words))
    rows = select_speakers(rows, speakers, exclude_speakers)
    return _clip_source(f"{root} ({split})", rows, mode, min_digits, max_digits, max_duration=max_duration)


def audiomnist(root: str, mode: str = "words", speakers: Sequence[str] | None = None,
               exclude_speakers: Sequence[str] | None = None, min_digits: int = 1,
               max_digits: int = 16) -> RowSource | ConnectedSource:
    """No split ships with AudioMNIST: hold speakers out with `exclude_speakers` (folder names "01".."60"; YAML reads
    an unquoted 01 as the number 1, taken as "01")."""
    rows, _ = audiomnist_index(resolve_path(root))
    speakers, exclude_speakers = ([f"{s:02d}" if isinstance(s, int) else s for s in v] if v else v
                                  for v in (speakers, exclude_speakers))
    return _clip_source(str(root), select_speakers(rows, speakers, exclude_speakers), mode, min_digits, max_digits)


def nemo(path: str | Sequence[str], speakers: Sequence[str] | None = None,
         exclude_speakers: Sequence[str] | None = None, max_duration: float = 30.0) -> RowSource:
    rows, _ = nemo_index(_roots(path))
    return RowSource(str(path), select_speakers(rows, speakers, exclude_speakers), max_duration)


SOURCES: dict[str, Callable] = {"speech_commands": speech_commands, "librispeech": librispeech,
                                "common_voice": common_voice, "audiomnist": audiomnist, "nemo": nemo}


# ---------------------------------------------------------------------------------------------
# held-out manifests


def write_heldout(kind: str, path: str, out: str | Path, split: str | None = None, words: str | Sequence[str] | None = None,
                  connected: int = 0, seed: int = 0, min_digits: int = 1, max_digits: int = 16,
                  speakers: Sequence[str] | None = None) -> Path:
    """`out`/manifest.jsonl of a corpus's rows (audio by absolute path) or of `connected` digit strings (wavs)."""
    options = {"split": split, "words": words, "mode": "connected" if connected else None, "speakers": speakers}
    source = SOURCES[kind](path, **{k: v for k, v in options.items() if v is not None})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if connected:
        return write_connected_set(out, source.clips, connected, seed, min_digits=min_digits, max_digits=max_digits)
    meta = audiomnist_meta(path) if kind == "audiomnist" else {}
    records = []
    for r in source.rows:
        if r.segment:
            raise ValueError(f"{r.audio}: a segment (offset {r.offset} s) cannot be a manifest row")
        record = {"audio": r.audio, "text": r.text, "speaker": r.speaker}
        record.update({k: meta[r.speaker][k] for k in ("gender", "age") if k in meta.get(r.speaker, {})})
        records.append(record | ({"duration": r.duration} if r.duration and kind == "nemo" else {}))
    return write_manifest(out, records)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=sorted(SOURCES))
    p.add_argument("path", help="the corpus folder (LibriSpeech: a subset folder; NeMo: the manifest)")
    p.add_argument("--out", required=True, help="folder for manifest.jsonl")
    p.add_argument("--split", help="Speech Commands: train, validation, testing; Common Voice: a .tsv's name")
    p.add_argument("--words", nargs="+", help="keep these words (or: digits, all)")
    p.add_argument("--speakers", nargs="+", help="keep these speakers only (e.g. those a training left out)")
    p.add_argument("--connected", type=int, default=0, metavar="N", help="write N connected digit strings instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-digits", type=int, default=1)
    p.add_argument("--max-digits", type=int, default=16)
    a = p.parse_args(argv)
    words = a.words[0] if a.words and len(a.words) == 1 and a.words[0] in ("digits", "all") else a.words
    try:
        print(write_heldout(a.kind, a.path, a.out, a.split, words, a.connected, a.seed, a.min_digits, a.max_digits, a.speakers))
    except (ValueError, TypeError) as e:
        sys.exit(f"rnnstream: error: {e}")


if __name__ == "__main__":
    main()
