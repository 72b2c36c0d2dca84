"""The corpora users bring, indexed: each reader lists a corpus's utterances (path, normalised text, speaker) from
its published layout, once per process (tools/corpora.py makes training sources of them).

Text is normalised as the `manifest` source's is (models/tokens.py's normalize_text, typographic quotes taken as
apostrophes). A text that normalising would rob of something spoken (a numeral, "&", "%", a letter with no ASCII
form) is dropped, not mis-spelt: each reader prints one line of what it kept and dropped, by reason, with an example.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models.tokens import normalize_text

from .digits_data import DIGIT_WORDS, resolve_path

# Characters that are read aloud but that normalize_text would delete: "call 911" would be taught as "call".
SPOKEN_SIGNS = set("&%$#@+=*/\\<>^~|_")
QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u2013": "-", "\u2014": "-"})


def spell(text: str) -> str | None:
    """`text` as the character models spell it (normalize_text), or None where that would lose a spoken part: a
    numeral or sign ("911", "&"), a letter with no ASCII form (Cyrillic, CJK), or everything."""
    decomposed = unicodedata.normalize("NFKD", text.translate(QUOTES))
    for ch in decomposed:
        kind = unicodedata.category(ch)
        if ch in SPOKEN_SIGNS or kind[0] == "N" or kind == "Sc" or (kind[0] == "L" and not ch.isascii()):
            return None
    return normalize_text(decomposed) or None


@dataclass(frozen=True, slots=True)
class Row:
    audio: str  # absolute path
    text: str  # normalised
    speaker: str
    offset: float = 0.0  # seconds into the file (NeMo segments)
    duration: float | None = None  # seconds, where the corpus says
    segment: bool = False  # offset and duration cut a segment of the file (NeMo: an offset of 0 with a duration too)


class Tally:
    """What a reader dropped, by reason, with the first example of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def drop(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, example)

    def report(self, name: str, kept: int) -> str:
        line = f"rnnstream: {name}: {kept} utterances kept, {sum(self.counts.values())} dropped"
        reasons = "; ".join(f"{r}: {n}, e.g. {self.examples[r]!r}" for r, n in self.counts.most_common())
        line += f" ({reasons})" if reasons else ""
        print(line, file=sys.stderr, flush=True)
        return line


def word_list(words: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """A word list from a config: a list, "digits" (zero..nine) or "all" / None (no filter)."""
    if words is None or words == "all":
        return None
    return tuple(DIGIT_WORDS) if words == "digits" else tuple(words)


# ---------------------------------------------------------------------------------------------
# indexes: (rows, the report line), read once per process


@functools.lru_cache(maxsize=16)
def speech_commands_index(root: Path, split: str, words: tuple[str, ...] | None) -> tuple[tuple[Row, ...], str]:
    """Clips of `split`: "validation" / "testing" are the files the corpus's lists name, "train" all others."""
    listed = {}
    for name in ("validation", "testing"):
        path = root / f"{name}_list.txt"
        if not path.is_file():
            raise ValueError(f"{path}: missing (is {root} a Speech Commands folder?)")
        listed[name] = set(path.read_text().split())
    if split not in ("train", *listed):
        raise ValueError(f"{root}: split {split!r} is none of train, validation, testing")
    folders = words or sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    rows, tally = [], Tally()
    for word in folders:
        if not (root / word).is_dir():
            raise ValueError(f"{root / word}: no such word folder")
        text = spell(word)
        for name in sorted(os.listdir(root / word)):
            rel = f"{word}/{name}"
            if not name.endswith(".wav") or split != next((s for s in listed if rel in listed[s]), "train"):
                continue
            if text is None:
                tally.drop("words that cannot be spelt", word)
            else:  # the clips are one second long at most
                rows.append(Row(str(root / rel), text, name.split("_nohash_")[0], duration=1.0))
    return tuple(rows), tally.report(f"Speech Commands {root} ({split})", len(rows))


@functools.lru_cache(maxsize=16)
def librispeech_index(roots: tuple[Path, ...]) -> tuple[tuple[Row, ...], str]:
    rows, tally = [], Tally()
    for root in roots:
        transcripts = sorted(root.glob("*/*/*.trans.txt"))
        if not transcripts:
            raise ValueError(f"{root}: no <reader>/<chapter>/*.trans.txt (give a subset folder such as train-clean-100)")
        for path in transcripts:
            for line in path.read_text().splitlines():
                uid, _, text = line.strip().partition(" ")
                if uid and (spelt := spell(text)) is None:
                    tally.drop("texts that cannot be spelt", text)
                elif uid:
                    rows.append(Row(str(path.parent / f"{uid}.flac"), spelt, uid.split("-")[0]))
    return tuple(rows), tally.report(f"LibriSpeech {', '.join(map(str, roots))}", len(rows))


@functools.lru_cache(maxsize=16)
def common_voice_index(root: Path, split: str, words: tuple[str, ...] | None) -> tuple[tuple[Row, ...], str]:
    """`split`.tsv (validated, train, dev, test, ...): its train, dev and test hold different speakers."""
    tsv = root / f"{split}.tsv"
    if not tsv.is_file():
        raise ValueError(f"{tsv}: missing (is {root} a Common Voice language folder?)")
    rows, tally, wanted = [], Tally(), set(words or ())
    with open(tsv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)  # sentences hold bare quotes
        if missing := {"client_id", "path", "sentence"} - set(reader.fieldnames or ()):
            raise ValueError(f"{tsv}: no column(s) {sorted(missing)}")
        for r in reader:
            spelt = spell(r["sentence"] or "")
            if spelt is None:
                tally.drop("sentences that cannot be spelt", r["sentence"] or "")
            elif wanted and not set(spelt.split()) <= wanted:
                tally.drop("sentences of other words", spelt)
            else:
                rows.append(Row(str(root / "clips" / r["path"]), spelt, r["client_id"]))
    return tuple(rows), tally.report(f"Common Voice {tsv}", len(rows))


def audiomnist_data(root: Path) -> Path:
    return root / "data" if (root / "data").is_dir() else root


@functools.lru_cache(maxsize=16)
def audiomnist_index(root: Path) -> tuple[tuple[Row, ...], str]:
    data, rows = audiomnist_data(root), []
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and p.name.isdigit()):
        for path in sorted(folder.glob("*.wav")):
            if m := re.fullmatch(r"(\d)_(\d+)_(\d+)\.wav", path.name):  # the clips are under a second
                rows.append(Row(str(path), DIGIT_WORDS[int(m[1])], m[2], duration=1.0))
    if not rows:
        raise ValueError(f"{data}: no <speaker>/<digit>_<speaker>_<take>.wav (is {root} AudioMNIST?)")
    return tuple(rows), Tally().report(f"AudioMNIST {root}", len(rows))


def audiomnist_meta(root: str | Path) -> dict[str, dict]:
    """audioMNIST_meta.txt (speaker -> {"gender", "age", "accent", ...}), {} where it is absent."""
    root = resolve_path(root)
    path = next((p for p in (audiomnist_data(root) / "audioMNIST_meta.txt", root / "audioMNIST_meta.txt") if p.is_file()), None)
    return json.loads(path.read_text()) if path else {}


@functools.lru_cache(maxsize=16)
def nemo_index(manifests: tuple[Path, ...]) -> tuple[tuple[Row, ...], str]:
    rows, tally = [], Tally()
    for manifest in manifests:
        if not manifest.is_file():
            raise ValueError(f"{manifest}: no such manifest")
        for n, line in enumerate(manifest.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                audio, text = item["audio_filepath"], str(item["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{manifest}:{n}: not a JSON object with \"audio_filepath\" and \"text\"") from None
            if (spelt := spell(text)) is None:
                tally.drop("texts that cannot be spelt", text)
                continue
            duration = item.get("duration")
            speaker = str(item.get("speaker", item.get("speaker_id", "")))
            offset = item.get("offset")
            rows.append(Row(str((manifest.parent / audio).resolve()), spelt, speaker, float(offset or 0.0),
                            None if duration is None else float(duration), segment=offset is not None))
    return tuple(rows), tally.report(f"NeMo {', '.join(map(str, manifests))}", len(rows))
