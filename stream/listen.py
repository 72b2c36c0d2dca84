"""`rnnstream listen` and `rnnstream devices`: live transcription from a microphone.

The loop is the file path with a different source: captured blocks go to a Session, whose partial
and final events go to a display. Stopping (Ctrl-C, SIGTERM, --max-seconds) is a flag checked
between blocks, never an exception in the middle of a model step, so the pending utterance is always
flushed as a final result and the stream is closed before exiting 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Protocol

import numpy as np

from models.audio import AudioError

from .microphone import Microphone, MicrophoneError, find_device, input_devices
from .pipeline import Event


class ListenError(RuntimeError):
    """A failure after capture started (device vanished, stream died); exit status 1."""


# ---------------------------------------------------------------------------------------------
# displays


def timestamp(seconds: float) -> str:
    """Whisper-style [mm:ss.mmm], with hours once there are any."""
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}" if h else f"{m:02d}:{s:02d}.{ms:03d}"


def event_json(e: Event, digits: int = 3) -> str:
    d = e.to_dict()
    d["start"], d["end"] = round(e.start, digits), round(e.end, digits)
    for w in d["words"]:
        for k in ("start", "end", "confidence"):
            w[k] = round(w[k], digits)
    return json.dumps(d, ensure_ascii=False)


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
            print(f"[{timestamp(e.start)} --> {timestamp(e.end)}]  {e.text}", file=self.out, flush=True)


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
    session,
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


# ---------------------------------------------------------------------------------------------
# commands


def _recognizer(args: argparse.Namespace):
    from .cli import load_recognizer

    if not args.ray:
        import torch

        # One stream of small steps: extra intra-op threads only add sync cost, and under CPU
        # contention they made recognition 10-30x slower than real time here (BENCHMARKS.md).
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        return load_recognizer(args)
    try:
        from .actors import RayRecognizer
    except ImportError as e:
        raise MicrophoneError(f"--ray is not available: {e}") from None
    # The decoding a local run would use (flags, else the model's recommendation), so both agree.
    options = load_recognizer(argparse.Namespace(**{**vars(args), "compute_device": "cpu"})).options
    return RayRecognizer.connect(model=args.model, address=None, device=args.compute_device, options=options)


@contextlib.contextmanager
def _recording(path: str | None, mic: Microphone):
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


def cmd_listen(args: argparse.Namespace) -> int:
    display = make_display(args.format)
    recognizer = None
    try:
        device = find_device(args.device)  # before loading the model: a wrong name fails fast
        recognizer = _recognizer(args)
        mic = Microphone(device)
        session = recognizer.session(mic.sample_rate, mic.channels)
        with StopOnSignals() as stop, _recording(args.save_audio, mic) as record, mic:
            display.note(
                f"rnnstream: listening on {device.index}: {device.name} ({device.hostapi}), "
                f"{mic.sample_rate} Hz, {mic.channels} ch; Ctrl-C to stop"
            )
            heard = run(mic, session, display, stop, args.max_seconds, on_audio=record)
    except MicrophoneError as e:
        print(f"rnnstream: error: {e}", file=sys.stderr)
        return 2
    except (ListenError, AudioError) as e:
        display.close()
        print(f"rnnstream: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`listen | head -3`): stop quietly, as a filter does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if hasattr(recognizer, "close"):  # the Ray pipeline (and Ray, if it started it)
            recognizer.close()
    lost = mic.stats.problems()
    summary = f"AUDIO LOST: {lost}" if lost else "no audio lost"
    display.note(f"rnnstream: stopped after {heard:.2f} s of audio; {summary}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    try:
        devices = input_devices()
    except MicrophoneError as e:
        print(f"rnnstream: error: {e}", file=sys.stderr)
        return 2
    if args.format == "jsonl":
        for d in devices:
            row = {"index": d.index, "name": d.name, "hostapi": d.hostapi, "channels": d.max_channels}
            print(json.dumps({**row, "sample_rate": d.sample_rate, "default": d.is_default}))
        return 0
    if not devices:
        print("no audio input devices found", file=sys.stderr)
        return 1
    width = max(len(d.name) for d in devices)
    print(f"  {'index':>5}  {'name':<{width}}  {'host API':<8}  {'channels':>8}  native rate")
    for d in devices:
        mark = "*" if d.is_default else " "
        print(f"{mark} {d.index:>5}  {d.name:<{width}}  {d.hostapi:<8}  {d.max_channels:>8}  {d.sample_rate} Hz")
    return 0


def add_listen_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `listen` and `devices` on the rnnstream command line."""
    from .cli import _add_model_args

    p = sub.add_parser("listen", help="transcribe a microphone live (Ctrl-C to stop)")
    p.add_argument("--device", help="input device: index or (part of) its name; see `rnnstream devices`")
    _add_model_args(p)
    p.add_argument(
        "--format", choices=("text", "jsonl"), default=None,
        help="text: live captions; jsonl: one event per line (default: text on a terminal, else jsonl)",
    )
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this much audio")
    p.add_argument("--ray", action="store_true", help="recognize through the Ray pipeline")
    p.add_argument("--save-audio", metavar="WAV", help="also write the audio that was recognized to this file")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("devices", help="list audio input devices and their native rates")
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.set_defaults(func=cmd_devices)
