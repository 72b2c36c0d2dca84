"""The lead-in rule of the audio front end: a stream's frames start at its first sound, whatever came before it.

A file or a microphone may open with any length of digital silence or faint noise. Without this rule a lead-in of
0.5, 1 or 2.4 s put the speech at other phases of the 10 ms frame and the 30 ms model step, and the digits model
read the same recording in different ways (issue 26). The rule:
- the onset is where the stream's sound begins: the start of the first 25 ms window (any sample, not a frame) whose
  RMS is over `FeatureConfig.lead_in_gate_dbfs`, less `lead_in_preroll` seconds (a word's soft start), but never
  before the first sample over `lead_in_dbfs` (digital silence is never sound). Without a gate, or when no window
  is over it `lead_in_max_wait` seconds after that first sample (a quiet talker): that first sample;
- the samples before the onset are not framed; they become silence frames (the log-mel of zeros), one a hop,
  rounded up to whole model steps, and the framing starts at the onset. So the onset starts a frame and a step,
  and all before it is silence, which a model with `ModelConfig.idle_lead_in` does not step through at all.
So a lead-in of zeros, or of noise under the gate, of any length gives from the onset on the model input of the
stream without it (provided the recording's own sound begins over a pre-roll after its start).

Invariant: the frames depend only on the samples, never on how they were cut into chunks (the windows are slid
over every sample, a window of the held samples before each chunk's; silence frames are counted from sample counts, one a hop while the
stream waits, a pre-roll and a window behind). Times move later by under a step (30 ms at 3 x 10 ms).
`utterance_frames` is the same rule over a whole utterance (training), so a model learns on the frames it will
be given.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class _Held:
    """Samples [start, start + n) of a stream, in a buffer that grows by doubling and drops from the left in place:
    appending a chunk costs the chunk, not the audio held (a wait fed 1-sample chunks was quadratic, 8 s of audio
    copied again for every sample)."""

    def __init__(self, samples: np.ndarray | None = None, start: int = 0):
        samples = np.zeros(0, np.float32) if samples is None else samples
        self.buf = np.zeros(max(1024, 2 * len(samples)), np.float32)
        self.buf[: len(samples)] = samples
        self.lo, self.hi, self.start = 0, len(samples), start

    def view(self) -> np.ndarray:
        return self.buf[self.lo : self.hi]

    def append(self, samples: np.ndarray) -> None:
        if self.hi + len(samples) > len(self.buf):
            live = self.view()
            grown = np.zeros(max(1024, 2 * (len(live) + len(samples))), np.float32)
            grown[: len(live)] = live
            self.buf, self.lo, self.hi = grown, 0, len(live)
        self.buf[self.hi : self.hi + len(samples)] = samples
        self.hi += len(samples)

    def keep_from(self, index: int) -> None:
        """Drop the samples before stream index `index`."""
        drop = min(max(0, index - self.start), self.hi - self.lo)
        self.lo, self.start = self.lo + drop, self.start + drop


class LeadIn:
    """One stream's lead-in: its samples until the onset become silence windows."""

    def __init__(self, dbfs: float, gate_dbfs: float | None, preroll: int, window: int, hop: int, stack: int,
                 max_wait: int):
        self.threshold = 10 ** (dbfs / 20)
        self.gate = None if gate_dbfs is None else 10 ** (gate_dbfs / 10) * window  # a window's sum of squares
        self.preroll, self.window, self.hop, self.stack, self.max_wait = preroll, window, hop, stack, max_wait
        self.held = _Held()  # the samples a later onset may start in, and a window before them, while waiting
        self.seen = 0  # samples watched
        self.first_loud: int | None = None  # index of the first sample over `dbfs`
        self.emitted = 0  # silence windows given
        self.done = False  # the onset has come

    def cut(self, audio: np.ndarray, last: bool = False) -> tuple[int, np.ndarray]:
        """The stream's next samples -> (silence windows to give first, the samples to frame after them); `last`:
        they end the stream, and a stream still waiting for the gate is framed from its first sound."""
        if self.done:
            return 0, audio
        new = audio
        old, self.seen = self.seen, self.seen + len(new)
        if self.first_loud is None:
            loud = np.flatnonzero(np.abs(new) > self.threshold)
            self.first_loud = old + int(loud[0]) if len(loud) else None
        onset = self._onset(new, old) if self.first_loud is not None else None
        if onset is None and last and self.first_loud is not None:
            onset = self.first_loud
        if onset is not None:
            held, start = self.held.view(), self.held.start
            self.done, self.held = True, _Held()
            samples = np.concatenate([held, new])[onset - start :]
            return lead_frames(onset, self.hop, self.stack) - self.emitted, samples
        # Waiting: no later onset comes before `earliest`; hold a window before it (the gate's sums), give the rest
        # of the time as silence frames.
        earliest = max(0, min(self.first_loud if self.first_loud is not None else self.seen,
                              self.seen - self.preroll - self.window))
        self.held.append(new)
        self.held.keep_from(earliest - self.window)
        silent = earliest // self.hop
        silent, self.emitted = silent - self.emitted, silent
        return silent, audio[:0]

    def _onset(self, new: np.ndarray, old: int) -> int | None:
        """The onset if it is known now (`new`: the samples from stream index `old` on, after the held ones)."""
        if self.gate is None:
            return self.first_loud
        held = self.held.view()
        back = min(len(held), self.window - 1)  # the windows ending at the new samples reach back this far
        ends = window_sums(np.concatenate([held[len(held) - back :], new]), self.window)[back:]
        over = np.flatnonzero(ends > self.gate) + old  # (their last sample's index)
        over = over[over < self.first_loud + self.max_wait]
        if len(over):
            return max(self.first_loud, int(over[0]) - self.window + 1 - self.preroll)
        return self.first_loud if self.seen - self.first_loud >= self.max_wait else None  # a quiet talker's wait

    def snapshot(self) -> dict:
        return {"held": self.held.view().copy(), "start": self.held.start, "seen": self.seen,
                "first_loud": self.first_loud, "emitted": self.emitted, "done": self.done}

    def restore(self, state: dict) -> None:
        self.held, self.seen = _Held(state["held"], state["start"]), state["seen"]
        self.first_loud, self.emitted, self.done = state["first_loud"], state["emitted"], state["done"]


def window_sums(samples: np.ndarray, window: int) -> np.ndarray:
    """The sum of squares of the `window` samples ending at each of `samples` (fewer at the start: the stream's
    own start, since a waiting stream holds a window and a pre-roll of samples before the new ones)."""
    squares = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    ends = np.arange(1, len(samples) + 1)
    return squares[ends] - squares[np.maximum(ends - window, 0)]


def lead_frames(onset: int, hop: int, stack: int) -> int:
    """The silence frames for `onset` samples of lead-in: one a hop begun, rounded up to whole steps."""
    frames = math.ceil(onset / hop)
    return frames - frames % -stack


def utterance_onset(samples: np.ndarray, dbfs: float, gate_dbfs: float | None, preroll: int, window: int,
                    max_wait: int) -> int | None:
    """Where a whole utterance's sound begins under the rule (None: it has none)."""
    loud = np.flatnonzero(np.abs(samples) > 10 ** (dbfs / 20))
    if not len(loud):
        return None
    first = int(loud[0])
    if gate_dbfs is None:
        return first
    over = np.flatnonzero(window_sums(samples, window) > 10 ** (gate_dbfs / 10) * window)
    over = over[over < first + max_wait]  # the stream stops waiting once a loud sample is max_wait old
    return first if not len(over) else max(first, int(over[0]) - window + 1 - preroll)


def utterance_frames(logmel, samples: torch.Tensor, dbfs: float, gate_dbfs: float | None, preroll: int,
                     stack: int, max_wait: int) -> torch.Tensor:
    """The rule over a whole utterance: the log-mel frames a stream of `samples` gives (without its end's tail)."""
    cfg = logmel.cfg
    onset = utterance_onset(samples.numpy(), dbfs, gate_dbfs, preroll, cfg.win_length, max_wait)
    if onset is None:
        return logmel.silence().expand(len(samples) // cfg.hop_length, -1)
    return torch.cat([logmel.silence().expand(lead_frames(onset, cfg.hop_length, stack), -1), logmel(samples[onset:])])
