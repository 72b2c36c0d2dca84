"""What `rnnstream batch` reads: directories, globs, manifests and files, expanded to a list of inputs, each once."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from models.errors import one_line

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64"}
MANIFEST_SUFFIXES = {".txt", ".lst", ".list", ".jsonl"}



@dataclass
class Inputs:
    paths: list[str]  # audio files, in order, each once
    errors: dict[str, str] = field(default_factory=dict)  # inputs that name nothing usable -> why


def expand_inputs(inputs: list[str]) -> Inputs:
    """Directories (recursively, audio files), globs, manifests (.txt/.lst: a path per line; .jsonl: objects
    with "path", "audio_filepath" or "audio") and plain files; duplicates are kept once."""
    out = Inputs([])
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            out.paths.append(path)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file():
                    add(str(f))
        elif p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            try:
                for path in _manifest(p):
                    add(path)
            except (OSError, ValueError) as e:
                out.errors[item] = f"{item}: unreadable manifest ({one_line(e)})"
        elif p.exists():
            add(item)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            files = [m for m in matches if Path(m).is_file()]
            if not files:
                out.errors[item] = f"{item}: no file matches"
            for m in files:
                add(m)
        else:
            out.errors[item] = f"{item}: no such file"
    return out


def _manifest(path: Path) -> Iterator[str]:
    base = path.parent
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if path.suffix.lower() == ".jsonl":
            row = json.loads(line)
            entry = next((row[k] for k in ("path", "audio_filepath", "audio") if k in row), None)
            if not isinstance(entry, str):
                raise ValueError(f"line {n} has no path")
            line = entry
        yield line if os.path.isabs(line) else str(base / line)
