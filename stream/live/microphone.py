"""Live audio capture with PortAudio (sounddevice).

The capture callback runs on PortAudio's real-time thread, so it only copies the block into a bounded
queue and counts problems: it never waits, allocates a little, and never prints. Everything slow
(recognition, display, warnings) happens on the consumer side. A block that finds the queue full is
dropped and counted, and PortAudio's own input overflows are counted too, so lost audio is always
reported rather than silently shifting the timeline.

Audio is captured at the device's native rate and channel count; the recognizer's front end
converts, exactly as it does for files.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass

import numpy as np

MAX_CHANNELS = 8  # ALSA plugin devices ("pulse", "default") advertise 32+ virtual channels
TIMED_OUT = -9987  # paTimedOut


class MicrophoneError(RuntimeError):
    """No PortAudio library, no such device, or a device that cannot be opened; one-line message."""


def _sd():
    """Import sounddevice; it raises OSError at import time when libportaudio2 is missing."""
    try:
        import sounddevice
    except OSError as e:
        raise MicrophoneError(
            f"cannot load the PortAudio library ({e}): install libportaudio2 (`bash tools/setup.sh` does)"
        ) from None
    return sounddevice


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    hostapi: str
    max_channels: int
    sample_rate: int  # the device's native (default) rate
    is_default: bool = False

    @property
    def channels(self) -> int:
        """Channels to capture: all the device has, unless it is a plugin advertising dozens."""
        return self.max_channels if self.max_channels <= MAX_CHANNELS else 2


def input_devices() -> list[InputDevice]:
    """Every device PortAudio can record from, in PortAudio's order."""
    sd = _sd()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default = sd.default.device[0]
    except sd.PortAudioError as e:
        raise MicrophoneError(f"cannot list audio devices: {e}") from None
    return [
        InputDevice(
            index=i,
            name=d["name"],
            hostapi=hostapis[d["hostapi"]]["name"],
            max_channels=d["max_input_channels"],
            sample_rate=round(d["default_samplerate"]),
            is_default=i == default,
        )
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]


def find_device(spec: str | int | None) -> InputDevice:
    """An input device by index, exact name, or unique case-insensitive name fragment; None = default."""
    devices = input_devices()
    if not devices:
        raise MicrophoneError("no audio input devices found (is a microphone connected?)")
    if spec is None or spec == "":
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    listing = ", ".join(f"{d.index}: {d.name}" for d in devices)
    if isinstance(spec, int) or str(spec).isdigit():
        for d in devices:
            if d.index == int(spec):
                return d
        raise MicrophoneError(f"no input device with index {spec} (input devices: {listing})")
    wanted = str(spec).lower()
    exact = [d for d in devices if d.name.lower() == wanted]
    matches = exact or [d for d in devices if wanted in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise MicrophoneError(f"no input device matching {spec!r} (input devices: {listing})")
    names = ", ".join(f"{d.index}: {d.name}" for d in matches)
    raise MicrophoneError(f"{spec!r} matches several input devices ({names}); give the index")


@dataclass
class CaptureStats:
    frames: int = 0  # frames delivered to the queue
    overflows: int = 0  # blocks PortAudio flagged as input overflow (samples lost before us)
    dropped_blocks: int = 0  # blocks lost because the consumer fell behind
    dropped_frames: int = 0

    def problems(self) -> str:
        """'' when nothing was lost, else a one-line account."""
        parts = []
        if self.overflows:
            parts.append(f"{self.overflows} input overflow(s)")
        if self.dropped_blocks:
            parts.append(f"{self.dropped_blocks} block(s) ({self.dropped_frames} frames) dropped: recognizer too slow")
        return ", ".join(parts)


class Microphone:
    """A running input stream; `read` returns (monotonic arrival time, samples [n, channels] float32)."""

    def __init__(
        self,
        device: InputDevice,
        block_seconds: float = 0.02,
        queue_seconds: float = 10.0,
    ):
        self.device = device
        self.sample_rate = device.sample_rate
        self.channels = device.channels
        self.blocksize = max(1, round(self.sample_rate * block_seconds))
        self.stats = CaptureStats()
        self.latency = 0.0  # PortAudio's input latency estimate (before a block reaches the callback), once started
        self._queue: queue.Queue[tuple[float, np.ndarray]] = queue.Queue(
            maxsize=max(1, round(queue_seconds / block_seconds))
        )
        self._stream = None

    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        # PortAudio's thread: no locks held for long, no I/O. The counters are only written here.
        arrived = time.monotonic()
        if status.input_overflow:
            self.stats.overflows += 1
        try:
            self._queue.put_nowait((arrived, indata.copy()))
            self.stats.frames += frames
        except queue.Full:
            self.stats.dropped_blocks += 1
            self.stats.dropped_frames += frames

    def start(self, attempts: int = 3) -> Microphone:
        """Open and start the stream. PortAudio's ALSA backend can time out starting a stream on a
        loaded machine (paTimedOut); that is retried, anything else is a MicrophoneError at once."""
        sd = _sd()
        for attempt in range(attempts):
            try:
                self._open(sd)
                return self
            except sd.PortAudioError as e:
                self.stop()
                timed_out = len(e.args) > 1 and e.args[1] == TIMED_OUT
                if timed_out and attempt + 1 < attempts:
                    continue
                busy = any(w in str(e).lower() for w in ("unavailable", "busy"))
                hint = " (busy: in use by another program?)" if busy else ""
                name = f"{self.device.index}: {self.device.name!r}"
                raise MicrophoneError(f"cannot open input device {name}: {e}{hint}") from None
        return self

    def _open(self, sd) -> None:
        self._stream = sd.InputStream(
            device=self.device.index,
            samplerate=self.sample_rate,
            channels=self.channels,
            dtype="float32",
            blocksize=self.blocksize,
            callback=self._callback,
        )
        self._stream.start()
        self.latency = float(self._stream.latency)


    @property
    def active(self) -> bool:
        return self._stream is not None and self._stream.active

    def read(self, timeout: float = 0.1) -> tuple[float, np.ndarray] | None:
        """The oldest captured block, or None if none arrived within `timeout` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def read_ready(self) -> list[tuple[float, np.ndarray]]:
        """All blocks waiting now, without blocking."""
        blocks = []
        while True:
            try:
                blocks.append(self._queue.get_nowait())
            except queue.Empty:
                return blocks

    def stop(self) -> None:
        """Stop capturing; blocks already queued can still be read."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                stream.stop()
            finally:
                stream.close()

    def __enter__(self) -> Microphone:
        return self.start() if self._stream is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
