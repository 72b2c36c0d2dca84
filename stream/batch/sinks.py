"""Where `rnnstream batch` writes: append-only, one flushed record per input; what is there is done.

A rerun after a crash reads what is there (a line cut short is removed first) and skips those inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..formats import render
from ..transcribe import Transcript

BATCH_FORMATS = ("jsonl", "srt", "vtt")



class JsonlSink:
    """One JSON line per input: a transcript, or {"path", "error"}."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done = _recover(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, path: str, transcript: Transcript | None = None, error: str | None = None) -> None:
        record = render(transcript, "jsonl") if transcript else json.dumps({"path": path, "error": error}, ensure_ascii=False)
        self._file.write(record + "\n")
        self._file.flush()
        self.done.add(os.path.abspath(path))

    def close(self) -> None:
        self._file.close()


class SubtitleSink:
    """A directory with one .srt/.vtt per input and index.jsonl saying which input went where (or failed)."""

    def __init__(self, directory: str | Path, fmt: str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.index = JsonlIndex(self.dir / "index.jsonl")
        self.done = self.index.done
        self._names = {Path(r).name for r in self.index.outputs}

    def write(self, path: str, transcript: Transcript | None = None, error: str | None = None) -> None:
        output = None
        if transcript is not None:
            name = f"{Path(path).stem}.{self.fmt}"
            if name in self._names:
                name = f"{Path(path).stem}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]}.{self.fmt}"
            tmp = self.dir / (name + ".tmp")
            tmp.write_text(render(transcript, self.fmt) + "\n", encoding="utf-8")
            tmp.replace(self.dir / name)
            self._names.add(name)
            output = name
        self.index.write(path, output, error)

    def close(self) -> None:
        self.index.close()


class JsonlIndex:
    def __init__(self, path: Path):
        self.path = path
        self.outputs: list[str] = []
        self.done = _recover(path, self.outputs)
        self._file = open(path, "a", encoding="utf-8")

    def write(self, path: str, output: str | None, error: str | None) -> None:
        row = {"path": path, "output": output} if output else {"path": path, "error": error}
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        self.done.add(os.path.abspath(path))

    def close(self) -> None:
        self._file.close()


def _recover(path: Path, outputs: list[str] | None = None) -> set[str]:
    """The inputs already in an output file; a line cut short by a crash is removed first."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    done = set()
    for line in data[:end].decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("path"), str):
            done.add(os.path.abspath(row["path"]))
            if outputs is not None and row.get("output"):
                outputs.append(row["output"])
    return done


def open_sink(output: str | Path, fmt: str) -> JsonlSink | SubtitleSink:
    return JsonlSink(output) if fmt == "jsonl" else SubtitleSink(output, fmt)
