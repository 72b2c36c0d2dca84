"""The per-stream stage after the acoustic model: log-probabilities -> partial and final events.

BackEnd keeps its own carry-over state (the decoder's hypothesis, the endpoint counters), and decides endpoints
per model step, never per chunk, so any chunking of the same input gives the same events.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from models.decoding import DecodeOptions, Hypothesis, Word, make_decoder
from models.tokens import Tokenizer


@dataclass(frozen=True)
class EndpointConfig:
    """Trailing-silence rules after sherpa-onnx: an utterance ends when any rule fires."""

    enabled: bool = True
    silence_without_speech: float = 2.4  # rule 1: seconds of silence, even if nothing was decoded
    silence_after_speech: float = 1.2  # rule 2: seconds of silence after some speech
    max_utterance: float = 20.0  # rule 3: seconds, whatever was decoded


@dataclass(frozen=True)
class Event:
    type: str  # "partial" | "final"
    text: str
    start: float
    end: float
    words: list[Word] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BackEndState:
    """Where a stream's decoding stands: the step its current utterance began and what it has heard since."""

    utterance_start: int
    heard: np.ndarray  # log-probabilities [steps, n_tokens] since utterance_start

    @property
    def nbytes(self) -> int:
        return self.heard.nbytes + 8


class BackEnd:
    """Log-probabilities -> events, with step-exact endpointing so segments never depend on chunking.

    `tail_steps`: the steps the front end adds after the input's end; the last words' times stay before them.
    """

    def __init__(
        self, tokenizer: Tokenizer, step_seconds: float, options: DecodeOptions, endpoint: EndpointConfig, tail_steps: int = 0
    ):
        self.tokenizer = tokenizer
        self.step_seconds = step_seconds
        self.endpoint = endpoint
        self.tail_steps = tail_steps
        self.decoder = make_decoder(tokenizer, step_seconds, options)
        self._revision = -1  # the decoder's revision at the last partial
        self.steps = 0  # absolute model steps consumed
        self._utterance_start = 0
        self._silence = 0  # trailing silent steps
        self._speech = False
        self._last_partial = ""
        self._heard: list[np.ndarray] = []  # the utterance's log-probabilities: a snapshot replays them
        limits = (endpoint.silence_without_speech, endpoint.silence_after_speech, endpoint.max_utterance)
        self._rule1, self._rule2, self._rule3 = (round(s / step_seconds) for s in limits)

    def accept(self, log_probs: torch.Tensor) -> list[Event]:
        """log_probs [steps, n_tokens] of this stream, in order."""
        events: list[Event] = []
        begin = 0
        viewed = self.decoder.view(log_probs)  # what the decoder reads (with a charset, its restriction), once
        silent = (viewed.argmax(-1) <= self.tokenizer.boundary).tolist()  # blank or word boundary
        for t, is_silent in enumerate(silent):
            self._silence = self._silence + 1 if is_silent else 0
            self._speech = self._speech or not is_silent
            if self._endpoint_at(self.steps + t):
                self.decoder.accept_view(viewed[begin : t + 1], self.steps + begin)
                events += self._final(next_start=self.steps + t + 1)
                begin = t + 1
        self.decoder.accept_view(viewed[begin:] if begin else viewed, self.steps + begin)  # (a slice: ~1 us)
        rest = log_probs[begin:] if begin else log_probs
        if rest.shape[0]:
            # for a snapshot's replay (a view would keep the tick's buffer alive)
            self._heard.append(rest.numpy(force=True).copy())
        self.steps += log_probs.shape[0]
        return events + self._partial()

    def advance(self, viewed: np.ndarray, heard: np.ndarray, silence: int, speech: bool, blank: bool) -> list[Event]:
        """`accept` for steps in which no endpoint fires, as stream.tick_decoding reads them for many streams at once:
        `viewed` what the decoder reads, `heard` the log-probabilities (kept for a snapshot: a view of the tick's one
        copy), the trailing silent steps and the speech flag after them, and whether every step's best is blank.
        Arrays, not tensors: views of the tick's arrays (a numpy slice costs a fifth of a tensor's)."""
        self._silence, self._speech = silence, speech
        (self.decoder.accept_blank if blank else self.decoder.accept_view)(viewed, self.steps)
        if heard.shape[0]:
            self._heard.append(heard)
        self.steps += viewed.shape[0]
        return self._partial()

    @property
    def carry(self) -> tuple[int, bool, int]:
        """What the endpoint rules carry from step to step: trailing silent steps, speech heard, steps so far in the
        utterance."""
        return self._silence, self._speech, self.steps - self._utterance_start

    @property
    def rules(self) -> tuple[int, int, int] | None:
        """The endpoint rules in steps (silence without speech, silence after speech, utterance), None: off."""
        return (self._rule1, self._rule2, self._rule3) if self.endpoint.enabled else None

    def _partial(self) -> list[Event]:
        """The partial event, when the text changed (read again only when the decoder says it may have)."""
        if self.decoder.revision == self._revision:
            return []
        self._revision = self.decoder.revision
        partial = self.decoder.partial()
        if partial.text != self._last_partial:
            self._last_partial = partial.text
            if partial.text:
                return [_event("partial", partial)]
        return []

    def finish(self) -> list[Event]:
        """Close the stream's last utterance; its times end where the caller's input did (before the padding)."""
        end = (self.steps - self.tail_steps) * self.step_seconds
        return self._final(next_start=self.steps, end=round(end, 3))

    def snapshot(self) -> BackEndState:
        """The stream's decoding as a value. A beam decoder's hypotheses (flashlight's) cannot be saved, but they
        are rebuilt exactly by replaying the utterance's log-probabilities from its start, where the state is known
        (an endpoint resets it); an utterance is at most `max_utterance` long (20 s: ~80 KB)."""
        heard = np.concatenate(self._heard) if self._heard else np.zeros((0, 0), np.float32)
        return BackEndState(self._utterance_start, heard)

    def restore(self, state: BackEndState) -> BackEnd:
        """This fresh BackEnd continues where the one that gave `state` stood; -> self."""
        self.steps = self._utterance_start = state.utterance_start
        if len(state.heard):
            self.accept(torch.from_numpy(state.heard.copy()))  # no endpoint fires: none did the first time
        return self

    def _endpoint_at(self, step: int) -> bool:
        if not self.endpoint.enabled:
            return False
        length = step + 1 - self._utterance_start
        return (
            self._silence >= self._rule1
            or (self._speech and self._silence >= self._rule2)
            or length >= self._rule3
        )

    def _final(self, next_start: int, end: float = math.inf) -> list[Event]:
        hyp = self.decoder.finish()
        hyp = replace(hyp, words=[replace(w, start=min(w.start, end), end=min(w.end, end)) for w in hyp.words])
        self._utterance_start, self._silence, self._speech, self._last_partial = next_start, 0, False, ""
        self._heard = []
        return [_event("final", hyp)] if hyp.text else []


def _event(kind: str, hyp: Hypothesis) -> Event:
    return Event(kind, hyp.text, hyp.words[0].start, hyp.words[-1].end, list(hyp.words))
