"""Where `rnnstream batch` writes: append-only, one flushed record per input; what is there is done.

A rerun after a crash reads what is there (a line cut short is removed first) and skips those inputs. Only a
regular file is read back, line by line: a device or a pipe (`/dev/stdout`, `/dev/full`) is written to and never
read, since reading one may not end (`/dev/full` gives zeros for ever: the old whole-file read grew ~800 MB/s).
A path is written as `stream.formats.json_line` writes it: a name that is not UTF-8 keeps its bytes as `\\udcXY`
escapes (PEP 383), and `os.fsencode(row["path"])` gives them back.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import IO

from models.errors import one_line

from ..formats import json_line, render
from ..transcribe import Transcript

BATCH_FORMATS = ("jsonl", "srt", "vtt")
# The longest line a rerun reads back: a transcript's line is ~100 bytes a word (measured: 981 bytes for the
# 11-word example), ~1.1 MB an hour of speech at 3 words/s, so 64 MB holds ~60 hours in one file. A longer line is
# passed over in pieces, never held whole.
MAX_RECORD = 64 << 20


class OutputError(Exception):
    """The output cannot be made, read back or written (`PATH: reason`, one line): the run stops."""


def _failed(path: Path, doing: str, e: OSError | ValueError) -> OutputError:
    why = getattr(e, "strerror", None) or one_line(e)
    return OutputError(f"{path}: cannot {doing} ({why})")


class _Lines:
    """An append-only text file of flushed lines; a failed write (ENOSPC, EIO) is an OutputError."""

    def __init__(self, path: Path):
        self.path = path
        self._broken = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = open(path, "a", encoding="utf-8")
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
            raise _failed(path, "write", e) from None

    def write(self, line: str) -> None:
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as e:
            self._broken = True
            raise _failed(self.path, "write", e) from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as e:  # after a failed write, the same unwritten bytes fail again: said once already
            if not self._broken:
                raise _failed(self.path, "write", e) from None


class _Closing:
    """A sink is a context manager that closes it (closing twice is harmless)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlSink(_Closing):
    """One JSON line per input: a transcript, or {"path", "error"}."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.done = _recover(self.path)
        self._lines = _Lines(self.path)

    def write(self, path: str, transcript: Transcript | None = None, error: str | None = None) -> None:
        self._lines.write(render(transcript, "jsonl") if transcript else json_line({"path": path, "error": error}))
        self.done.add(os.path.abspath(path))

    def close(self) -> None:
        self._lines.close()


def output_directory(path: str | Path, why: str = "") -> Path:
    """`path` as a directory to write in, made if it is not there; else an OutputError saying why not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path}: not a directory{why}") from None
    except (OSError, ValueError) as e:
        raise _failed(path, "make the directory", e) from None
    return path


def write_file(path: Path, text: str) -> None:
    """`text` into `path` whole or not at all (a temporary file, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise _failed(path, "write", e) from None


class SubtitleSink(_Closing):
    """A directory with one .srt/.vtt per input and index.jsonl saying which input went where (or failed)."""

    def __init__(self, directory: str | Path, fmt: str):
        self.dir = output_directory(directory, f" (--format {fmt} writes a directory)")
        self.fmt = fmt
        self.index = JsonlIndex(self.dir / "index.jsonl")
        self.done = self.index.done
        self._names = {Path(r).name for r in self.index.outputs}

    def write(self, path: str, transcript: Transcript | None = None, error: str | None = None) -> None:
        output = None
        if transcript is not None:
            name = f"{Path(path).stem}.{self.fmt}"
            if name in self._names:
                name = f"{Path(path).stem}-{hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:8]}.{self.fmt}"
            write_file(self.dir / name, render(transcript, self.fmt) + "\n")
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
        self._lines = _Lines(path)

    def write(self, path: str, output: str | None, error: str | None) -> None:
        self._lines.write(json_line({"path": path, "output": output} if output else {"path": path, "error": error}))
        self.done.add(os.path.abspath(path))

    def close(self) -> None:
        self._lines.close()


def _recover(path: Path, outputs: list[str] | None = None) -> set[str]:
    """The inputs already in an output file, read a line at a time; a line cut short by a crash is removed first.
    Not a regular file (a device, a pipe, a directory): nothing is read, nothing is done."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as e:  # (a name too long, a file where a directory should be: nothing can go there)
        raise _failed(path, "write", e) from None
    if not stat.S_ISREG(st.st_mode):
        return set()
    done: set[str] = set()
    try:
        _ours_or_refuse(path)
        whole = _read_records(path, done, outputs)
        if whole < st.st_size:
            with open(path, "r+b") as f:
                f.truncate(whole)
    except OSError as e:
        raise _failed(path, "read", e) from None
    return done


RECORD_START = b'{"path": '  # how every line the sinks write begins


def _ours_or_refuse(path: Path) -> None:
    """A file that does not begin as the sinks' lines do is someone else's (`--output clip.wav`): it is neither
    truncated nor appended to. (A first line cut short by a crash still begins as one.)"""
    with open(path, "rb") as f:
        head = f.read(len(RECORD_START))
    if not RECORD_START.startswith(head):
        raise OutputError(f"{path}: not a batch output (it does not begin with a JSON record); nothing was written")


def _read_records(path: Path, done: set[str], outputs: list[str] | None) -> int:
    """Adds the paths of the file's whole lines to `done`; -> the bytes up to the end of its last whole line."""
    whole = read = 0
    overlong = False  # in a line longer than MAX_RECORD: passed over
    with open(path, "rb") as f:
        while line := f.readline(MAX_RECORD):
            read += len(line)
            if not line.endswith(b"\n"):
                if len(line) < MAX_RECORD:
                    break  # the end: a line cut short
                overlong = True
                continue
            whole = read
            if overlong:
                overlong = False
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past Python's stack
                continue
            if isinstance(row, dict) and isinstance(row.get("path"), str):
                done.add(os.path.abspath(row["path"]))
                if outputs is not None and isinstance(row.get("output"), str):
                    outputs.append(row["output"])
    return whole


Sink = JsonlSink | SubtitleSink


def open_sink(output: str | Path, fmt: str) -> Sink:
    return JsonlSink(output) if fmt == "jsonl" else SubtitleSink(output, fmt)
