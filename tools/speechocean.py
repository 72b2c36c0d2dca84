"""speechocean762 split by speaker: training manifests and a held-out scoring set with group labels.

    python -m tools.speechocean --out data/so762 [--seed 14] [--held-out 6 6 6 7] [--train-fraction 0.5]

Writes under --out:
- `split.json`: the held-out speakers with their group (adult/child x female/male), the seed, the counts;
- `train.jsonl`: every utterance of the other speakers (all text: words, digits, sentences);
- `train_digits.jsonl`: their digit-only utterances (a separate source, to weight the digit strings);
- `all.jsonl`, `all_digits.jsonl`: the same over all 125 speakers (the bundled model's data);
- `heldout_digits/manifest.jsonl`: the held-out speakers' digit-only utterances as they are (16 kHz), with
  `speaker`, `age_group` and `gender`; `heldout_digits_tel8k/`: the same through the 8 kHz telephone band.

The held-out speakers are drawn per group with a seeded generator. Nearly all digit-only utterances were read by
children (76 of 77): in the child groups, speakers who read digits are drawn first, so that the scoring set holds
as many as it can; adults read one digit string in all, so the adult groups are scored on what there is.
Speakers, never utterances, are held out: no voice of the scoring set is in `train*.jsonl`.
`--train-fraction F` keeps F of each group's training speakers in `train*.jsonl` (seeded; the held-out speakers
and the scoring set are the same as without it): the data-scaling check of how held-out errors fall with speakers.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tools.data import read_manifest
from tools.digits_data import resolve_path, telephone_band, write_manifest

ROOT = "../shared/data/speechocean762"
DIGITS = {"zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
GROUPS = [("adult", "female"), ("adult", "male"), ("child", "female"), ("child", "male")]
ADULT_AGE = 16  # the corpus's children are 6-15


def group(row: dict) -> tuple[str, str]:
    return ("adult" if row["age"] >= ADULT_AGE else "child", row["gender"])


def is_digits(text: str) -> bool:
    return bool(text.split()) and set(text.split()) <= DIGITS


def choose_held_out(rows: list[dict], counts: list[int], seed: int) -> dict[str, tuple[str, str]]:
    """speaker -> group for `counts[i]` speakers of GROUPS[i]; digit readers first, then the others, each in a
    seeded random order."""
    rng = np.random.default_rng(seed)
    speakers: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for row in rows:
        digits = speakers[group(row)].setdefault(row["speaker"], 0)
        speakers[group(row)][row["speaker"]] = digits + is_digits(row["text"])
    chosen = {}
    for g, n in zip(GROUPS, counts):
        names = sorted(speakers[g])
        order = rng.permutation(len(names))
        ranked = sorted((names[i] for i in order), key=lambda s: speakers[g][s] == 0)  # stable: keeps the draw
        chosen.update({s: g for s in ranked[:n]})
    return chosen


def keep_fraction(rows: list[dict], fraction: float, seed: int) -> list[dict]:
    """The rows of `fraction` of each group's speakers (at least one), in a seeded random draw: one order per seed,
    so a smaller fraction keeps a subset of a larger one's speakers."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the fraction of speakers kept must be in (0, 1], not {fraction}")
    rng = np.random.default_rng(seed)
    by_group: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        by_group[group(row)].add(row["speaker"])
    kept = set()
    for g in GROUPS:
        names = sorted(by_group[g])
        kept.update(names[i] for i in rng.permutation(len(names))[: max(1, round(fraction * len(names)))])
    return [r for r in rows if r["speaker"] in kept]


def _relative(rows: list[dict], out_dir: Path) -> list[dict]:
    return [{**r, "audio": os.path.relpath(r["audio"], out_dir.resolve())} for r in rows]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in _relative(rows, path.parent)))


def write_telephone_set(rows: list[dict], out_dir: Path) -> Path:
    """Each utterance at 8 kHz through the telephone band (300-3400 Hz, mu-law) as a 16-bit wav."""
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    records = []
    for i, row in enumerate(rows):
        audio, rate = sf.read(row["audio"], dtype="float32", always_2d=True)
        narrow = telephone_band(soxr.resample(audio.mean(axis=1), rate, 8000, quality="HQ"), 8000)
        rel = f"audio/{i:05d}.wav"
        sf.write(out_dir / rel, narrow, 8000, subtype="PCM_16")
        records.append({**row, "audio": rel, "duration": round(len(narrow) / 8000, 4), "sample_rate": 8000})
    return write_manifest(out_dir, records)


def split(
    out: str | Path, root: str | Path = ROOT, counts: list[int] = (6, 6, 6, 7), seed: int = 14, train_fraction: float = 1.0
) -> dict:
    """Write the manifests described in the module docstring; returns split.json's content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(resolve_path(root) / "manifest.jsonl")
    held = choose_held_out(rows, list(counts), seed)
    train = [r for r in rows if r["speaker"] not in held]
    if train_fraction < 1.0:
        train = keep_fraction(train, train_fraction, seed)
    scoring = [
        {**r, "age_group": group(r)[0]} for r in rows if r["speaker"] in held and is_digits(r["text"])
    ]
    _write_jsonl(out / "train.jsonl", train)
    _write_jsonl(out / "train_digits.jsonl", [r for r in train if is_digits(r["text"])])
    _write_jsonl(out / "all.jsonl", rows)
    _write_jsonl(out / "all_digits.jsonl", [r for r in rows if is_digits(r["text"])])
    (out / "heldout_digits").mkdir(exist_ok=True)
    write_manifest(out / "heldout_digits", _relative(scoring, out / "heldout_digits"))
    write_telephone_set(scoring, out / "heldout_digits_tel8k")
    per_group = {"/".join(g): sum(1 for r in scoring if group(r) == g) for g in GROUPS}
    info = {
        "seed": seed,
        "train_fraction": train_fraction,
        "held_out": {s: "/".join(g) for s, g in sorted(held.items())},
        "speakers_per_group": {"/".join(g): n for g, n in zip(GROUPS, counts)},
        "scoring_utterances_per_group": per_group,
        "train_speakers": len({r["speaker"] for r in train}),
        "train_utterances": len(train),
        "train_minutes": round(sum(r["duration"] for r in train) / 60, 1),
    }
    (out / "split.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=ROOT)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--held-out", type=int, nargs=4, default=[6, 6, 6, 7], metavar="N",
                   help="speakers held out per group: adult/female adult/male child/female child/male")
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="keep this share of each group's training speakers (default 1: all)")
    args = p.parse_args(argv)
    info = split(args.out, args.root, args.held_out, args.seed, args.train_fraction)
    print(json.dumps({k: v for k, v in info.items() if k != "held_out"}))


if __name__ == "__main__":
    main()
