"""The lead-in rule of the audio front end: a stream's frames start at its first sound, whatever came before it.

A file or a microphone may open with any length of digital silence. Without this rule a lead-in of 0.5, 1 or 2.4 s
put the speech at other phases of the 10 ms frame and the 30 ms model step, and the digits model read the same
recording in different ways (issue 26). The rule: the onset is the first sample louder than
`FeatureConfig.lead_in_dbfs`. The samples before it are not framed; they become silence frames (the log-mel of
zeros), one a hop, rounded up to whole model steps, and the framing starts at the onset. So the onset starts a
frame and a step, and all before it is silence, which a model with `ModelConfig.idle_lead_in` does not step
through at all: a lead-in of zeros of any length gives, from the onset on, the model input of the stream without it.

Invariant: the frames depend only on the samples, never on how they were cut into chunks (silence frames are
counted from sample counts; live, one comes every hop while the stream is silent). Times move later by under a
step (30 ms at 3 x 10 ms). `utterance_frames` is the same rule over a whole utterance (training), so a model learns
on the frames it will be given.
"""

from __future__ import annotations

import math

import torch


class LeadIn:
    """One stream's lead-in: its samples until the onset become silence windows."""

    def __init__(self, dbfs: float, hop: int, stack: int):
        self.threshold = 10 ** (dbfs / 20)
        self.hop, self.stack = hop, stack
        self.seen = 0  # samples watched
        self.emitted = 0  # silence windows given
        self.done = False  # the onset has come

    def cut(self, audio: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The stream's next samples -> (silence windows to give first, the samples to frame after them)."""
        if self.done:
            return 0, audio
        start, self.seen = self.seen, self.seen + len(audio)
        loud = (audio.abs() > self.threshold).nonzero()
        if not len(loud):
            silent, self.emitted = self.seen // self.hop - self.emitted, self.seen // self.hop
            return silent, audio[:0]
        self.done = True
        onset = int(loud[0, 0])
        return lead_frames(start + onset, self.hop, self.stack) - self.emitted, audio[onset:]

    def snapshot(self) -> dict:
        return {"seen": self.seen, "emitted": self.emitted, "done": self.done}

    def restore(self, state: dict) -> None:
        self.seen, self.emitted, self.done = state["seen"], state["emitted"], state["done"]


def lead_frames(onset: int, hop: int, stack: int) -> int:
    """The silence frames for `onset` samples of lead-in: one a hop begun, rounded up to whole steps."""
    frames = math.ceil(onset / hop)
    return frames - frames % -stack


def utterance_frames(logmel, samples: torch.Tensor, dbfs: float, stack: int) -> torch.Tensor:
    """The rule over a whole utterance: the log-mel frames a stream of `samples` gives (without its end's tail)."""
    loud = (samples.abs() > 10 ** (dbfs / 20)).nonzero()
    if not len(loud):
        return logmel.silence().expand(len(samples) // logmel.cfg.hop_length, -1)
    onset = int(loud[0, 0])
    silent = lead_frames(onset, logmel.cfg.hop_length, stack)
    return torch.cat([logmel.silence().expand(silent, -1), logmel(samples[onset:])])
