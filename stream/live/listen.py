"""Live transcription from a microphone: the captioning loop and its displays (`rnnstream listen`).

The loop is the file path with a different source: captured blocks go to a Session, whose partial
and final events go to a display. Stopping (Ctrl-C, SIGTERM, --max-seconds) is a flag checked
between blocks, never an exception in the middle of a model step, so the pending utterance is always
flushed as a final result and the stream is closed before exiting 0.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Protocol

import numpy as np

from ..backend import Event
from ..formats import event_json, timestamp
from ..session import SessionLike
from .microphone import Microphone, MicrophoneError


class ListenError(RuntimeError):
    """A failure after capture started (device vanished, stream died); exit status 1."""


# ---------------------------------------------------------------------------------------------
# displays


class Display(Protocol):
    def event(self, e: Event) -> None: ...
    def note(self, message: str) -> None: ...  # a status line or warning, on stderr
    def close(self) -> None: ...


class JsonlDisplay:
    """One JSON event per line, flushed at once, so it can be piped into anything."""

    def __init__(self, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr):
        self.out, self.err = out, err

    def event(self, e: Event) -> None:
        print(event_json(e), file=self.out, flush=True)

    def note(self, message: str) -> None:
        print(message, file=self.err, flush=True)

    def close(self) -> None:
        pass


class TextDisplay(JsonlDisplay):
    """Finals only, one timestamped line each: `--format text` into a pipe or file."""

    def event(self, e: Event) -> None:
        if e.type == "final":
            print(f"[{timestamp(e.start, hours=False)} --> {timestamp(e.end, hours=False)}]  {e.text}", file=self.out, flush=True)


class TerminalDisplay(TextDisplay):
    """Live captions: the partial result is redrawn in place, each final is printed with its times."""

    CLEAR = "\r\x1b[2K"

    def __init__(self, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr):
        super().__init__(out, err)
        self.partial = ""

    def _draw(self) -> None:
        width = max(10, shutil.get_terminal_size().columns - 1)
        text = self.partial if len(self.partial) <= width else "…" + self.partial[-(width - 1):]
        self.out.write(self.CLEAR + (f"\x1b[2m{text}\x1b[0m" if text else ""))  # dim: still changing
        self.out.flush()

    def event(self, e: Event) -> None:
        if e.type == "partial":
            self.partial = e.text
            self._draw()
            return
        self.out.write(self.CLEAR)
        self.partial = ""
        super().event(e)

    def note(self, message: str) -> None:
        self.out.write(self.CLEAR)
        self.out.flush()
        super().note(message)
        self._draw()

    def close(self) -> None:
        self.out.write(self.CLEAR)
        self.out.flush()


def make_display(fmt: str | None, out: IO[str] = sys.stdout) -> Display:
    """Default: live captions on a terminal, JSON lines when the output is piped."""
    if fmt == "jsonl" or (fmt is None and not out.isatty()):
        return JsonlDisplay(out)
    return TerminalDisplay(out) if out.isatty() else TextDisplay(out)


# ---------------------------------------------------------------------------------------------
# the loop


def run(
    mic: Microphone,
    session: SessionLike,
    display: Display,
    stop: threading.Event,
    max_seconds: float | None = None,
    on_audio: Callable[[float, np.ndarray], None] | None = None,
    stall_seconds: float = 5.0,
) -> float:
    """Feed `mic` into `session` until `stop` is set or `max_seconds` of audio were heard, then flush;
    returns the seconds of audio recognized.

    `on_audio(arrival_time, samples)` sees every block that is recognized (the latency benchmark).
    A device that stops or delivers nothing for `stall_seconds` is a ListenError, after the flush.
    """
    limit = None if max_seconds is None else round(max_seconds * mic.sample_rate)
    heard = 0
    reported = ""
    failure: ListenError | None = None
    last_audio = time.monotonic()

    def feed(blocks: list[tuple[float, np.ndarray]]) -> None:
        nonlocal heard
        for arrived, samples in blocks:
            if limit is not None:
                samples = samples[: max(0, limit - heard)]
            if not len(samples):
                continue
            heard += len(samples)
            if on_audio is not None:
                on_audio(arrived, samples)
            for e in session.accept(samples):
                display.event(e)

    while not stop.is_set() and (limit is None or heard < limit):
        first = mic.read(timeout=0.05)
        if first is None:
            if not mic.active:
                failure = ListenError(f"input device {mic.device.name!r} stopped (unplugged?)")
            elif time.monotonic() - last_audio > stall_seconds:
                failure = ListenError(f"no audio from input device {mic.device.name!r} for {stall_seconds:.0f} s")
            if failure:
                break
            continue
        last_audio = time.monotonic()
        feed([first, *mic.read_ready()])  # catch up in one model step when behind
        problems = mic.stats.problems()
        if problems != reported:
            reported = problems
            display.note(f"rnnstream: warning: audio lost: {problems}")
    mic.stop()
    feed(mic.read_ready())  # what was captured before the stop still counts
    for e in session.finish():  # even after a failure: what was heard is not lost
        display.event(e)
    display.close()
    if failure:
        raise failure
    return heard / mic.sample_rate


class StopOnSignals:
    """SIGINT/SIGTERM set a flag for a clean stop; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.stop = threading.Event()
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()

    def __enter__(self) -> threading.Event:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)
        return self.stop

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def recording(path: str | None, mic: Microphone) -> Iterator[Callable[[float, np.ndarray], None] | None]:
    """`on_audio` that writes exactly what the recognizer heard (float WAV at the device's rate), or None."""
    if path is None:
        yield None
        return
    import soundfile as sf

    try:
        f = sf.SoundFile(path, "w", samplerate=mic.sample_rate, channels=mic.channels, subtype="FLOAT")
    except (OSError, RuntimeError) as e:
        raise MicrophoneError(f"cannot write {path}: {e}") from None
    with f:
        yield lambda arrived, samples: f.write(samples)
