"""What `rnnstream batch` reads: directories, globs, manifests and files, expanded to a list of inputs, each once.

Which files count is the model's front end's business (`Extractor.suffixes`): audio files for a speech model, ink
(.inkml, .jsonl, .npy) for a pen model. A `.jsonl` is either a manifest or, for a pen model, an ink file of JSON
points; the rule: it is a manifest when its first row names a file ("path", "audio_filepath" or "audio"),
otherwise ink. For a speech model a `.jsonl` is always a manifest.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from models.audio import AUDIO_SUFFIXES
from models.errors import one_line

MANIFEST_SUFFIXES = {".txt", ".lst", ".list", ".jsonl"}
MANIFEST_KEYS = ("path", "audio_filepath", "audio")


@dataclass
class Inputs:
    paths: list[str]  # input files, in order, each once
    errors: dict[str, str] = field(default_factory=dict)  # inputs that name nothing usable -> why


def expand_inputs(inputs: list[str], suffixes: frozenset[str] = AUDIO_SUFFIXES) -> Inputs:
    """Directories (recursively, the files with `suffixes`: the model's front end's), globs, manifests (.txt/.lst:
    a path per line; .jsonl: objects with "path", "audio_filepath" or "audio") and plain files; duplicates are
    kept once."""
    out = Inputs([])
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            out.paths.append(path)

    for item in inputs:
        try:
            _expand(item, suffixes, add, out.errors)
        except (OSError, ValueError) as e:  # a name too long, a directory we may not list, a NUL byte
            out.errors[item] = f"{item}: {getattr(e, 'strerror', None) or one_line(e)}"
    return out


def _expand(item: str, suffixes: frozenset[str], add: Callable[[str], None], errors: dict[str, str]) -> None:
    """One input: a directory, manifest, file or glob; each file it names goes to `add`, what is wrong to `errors`."""
    p = Path(item)
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.suffix.lower() in suffixes and f.is_file() and not is_manifest(f, suffixes):
                add(str(f))
    elif p.is_file() and is_manifest(p, suffixes):
        try:
            for path in _manifest(p):
                add(path)
        except (OSError, ValueError, RecursionError) as e:
            errors[item] = f"{item}: unreadable manifest ({one_line(e)})"
    elif p.exists():
        add(item)
    elif glob.has_magic(item):
        files = [m for m in sorted(glob.glob(item, recursive=True)) if Path(m).is_file()]
        if not files:
            errors[item] = f"{item}: no file matches"
        for m in files:
            add(m)
    else:
        errors[item] = f"{item}: no such file"


def is_manifest(path: Path, suffixes: frozenset[str] = AUDIO_SUFFIXES) -> bool:
    """A list of inputs rather than an input: by suffix, except a `.jsonl` the front end reads (pen models' JSON
    points), which is a manifest only when its first row names a file."""
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        return False
    if suffix not in suffixes:
        return True
    try:
        with open(path) as f:
            first = next((line for line in f if line.strip() and not line.lstrip().startswith("#")), "")
        row = json.loads(first)
    except (OSError, ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
        return False  # not a readable manifest: the reader of the input says what is wrong with it
    return isinstance(row, dict) and any(k in row for k in MANIFEST_KEYS)


def _manifest(path: Path) -> Iterator[str]:
    base = path.parent
    # surrogateescape: a listed name that is not UTF-8 keeps its bytes (PEP 383), as a directory's names do
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if path.suffix.lower() == ".jsonl":
            row = json.loads(line)
            entry = next((row[k] for k in MANIFEST_KEYS if k in row), None) if isinstance(row, dict) else None
            if not isinstance(entry, str):
                raise ValueError(f"line {n} has no path")
            line = entry
        yield line if os.path.isabs(line) else str(base / line)
