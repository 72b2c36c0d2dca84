"""The in-process recognizer: load a model once, open any number of independent streaming sessions.

Everything else (file transcription, the microphone, the Ray actors) is built from these pieces.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import DEFAULT_MODEL, Checkpoint, load_checkpoint
from models.decoding import DecodeOptions
from models.features import LogMel
from models.model import State

from .pipeline import BackEnd, EndpointConfig, Event, FrontEnd


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def recommended_options(checkpoint: Checkpoint) -> DecodeOptions:
    """The decoding a model was made for (checkpoint meta "decoding": beam width and a word list), else greedy."""
    spec = checkpoint.meta.get("decoding") or {}
    words = tuple(spec["words"]) if spec.get("words") else None
    return DecodeOptions(beam=int(spec.get("beam", 0)), words=words)


class Recognizer:
    def __init__(
        self,
        checkpoint: Checkpoint,
        options: DecodeOptions | None = None,
        endpoint: EndpointConfig = EndpointConfig(),
    ):
        """`options=None`: the decoding recommended by the checkpoint (see `recommended_options`)."""
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.tokenizer = checkpoint.tokenizer
        self.options = options if options is not None else recommended_options(checkpoint)
        self.endpoint = endpoint
        self.logmel = LogMel(checkpoint.features)
        self.sample_rate = checkpoint.features.sample_rate
        self.step_seconds = checkpoint.features.frame_seconds * self.model.cfg.stack

    @classmethod
    def load(
        cls,
        model: str | Path = DEFAULT_MODEL,
        device: str | None = None,
        options: DecodeOptions | None = None,
        endpoint: EndpointConfig = EndpointConfig(),
    ) -> Recognizer:
        return cls(load_checkpoint(model, device or default_device()), options, endpoint)

    def with_options(self, **changes) -> Recognizer:
        """The same loaded model with other decoding options (e.g. beam=0 for greedy)."""
        return Recognizer(self.checkpoint, replace(self.options, **changes), self.endpoint)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def frontend(self, sample_rate: int, channels: int | None = None) -> FrontEnd:
        return FrontEnd(self.logmel, self.model.cfg.stack, sample_rate, channels)

    def backend(self) -> BackEnd:
        return BackEnd(self.tokenizer, self.step_seconds, self.options, self.endpoint)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """One stream's frames [steps * stack, n_mels] -> (log_probs [steps, n_tokens] on the CPU, state)."""
        log_probs, state = self.model(frames[None].to(self.device), state)
        return log_probs[0].cpu(), state

    def session(self, sample_rate: int | None = None, channels: int | None = None) -> Session:
        return Session(self, sample_rate or self.sample_rate, channels)


class Session:
    """One audio stream: `accept` chunks of any size, then `finish`; both return the new events."""

    def __init__(self, recognizer: Recognizer, sample_rate: int, channels: int | None = None):
        self.recognizer = recognizer
        self.frontend = recognizer.frontend(sample_rate, channels)
        self.backend = recognizer.backend()
        self.state: State | None = None
        self.closed = False

    def accept(self, samples: np.ndarray) -> list[Event]:
        """samples: [n] or [n, channels], int or float PCM at the session's sample rate."""
        return self._step(samples, last=False)

    def finish(self) -> list[Event]:
        """Flush the audio still held back and close the pending utterance."""
        events = self._step(np.zeros(0, np.float32), last=True)
        self.closed = True
        return events + self.backend.finish()

    def _step(self, samples: np.ndarray, last: bool) -> list[Event]:
        if self.closed:
            raise RuntimeError("session is finished")
        frames = self.frontend.accept(samples, last=last)
        if not len(frames):
            return []
        log_probs, self.state = self.recognizer.forward(frames, self.state)
        return self.backend.accept(log_probs)
