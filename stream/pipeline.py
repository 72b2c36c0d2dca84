"""The two per-stream stages around the acoustic model.

FrontEnd turns audio chunks into model-ready feature frames; BackEnd turns log-probabilities into
partial and final events. Both keep their own carry-over state, so any chunking of the same audio
gives the same frames, the same steps and the same events. The model step between them is the only
part that is batched across streams, by the session or the Ray model actor.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from models.audio import AudioConverter
from models.decoding import DecodeOptions, Hypothesis, Word, make_decoder
from models.features import FeatureStream, LogMel
from models.tokens import Tokenizer

# Quiet noise after the end of every stream (-70 dBFS, the quietest noise floor in training): a unidirectional
# model emits a word after hearing it, so audio cut tight after the last word lost that word. Seeded, so every
# stream gets the same samples; it comes after the caller's audio, so no time moves, and the last words' times
# are held to the caller's audio.
TAIL_SECONDS = 0.3
TAIL_DBFS = -70.0


def tail_steps(step_seconds: float) -> int:
    """The padding in whole model steps, so the BackEnd knows where the caller's audio ended."""
    return round(TAIL_SECONDS / step_seconds)


@functools.lru_cache(maxsize=4)
def tail_padding(samples: int) -> torch.Tensor:
    noise = np.random.default_rng(0).normal(0.0, 10 ** (TAIL_DBFS / 20), samples)
    return torch.from_numpy(noise.astype(np.float32))


@dataclass(frozen=True)
class EndpointConfig:
    """Trailing-silence rules after sherpa-onnx: an utterance ends when any rule fires."""

    enabled: bool = True
    silence_without_speech: float = 2.4  # rule 1: seconds of silence, even if nothing was decoded
    silence_after_speech: float = 1.2  # rule 2: seconds of silence after some speech
    max_utterance: float = 20.0  # rule 3: seconds, whatever was decoded


@dataclass
class Event:
    type: str  # "partial" | "final"
    text: str
    start: float
    end: float
    words: list[Word] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class FrontEnd:
    """Audio of any rate and layout -> normalised-rate feature frames, a multiple of `stack` at a time."""

    def __init__(self, logmel: LogMel, stack: int, sample_rate: int, channels: int | None = None):
        self.converter = AudioConverter(sample_rate, logmel.cfg.sample_rate, channels)
        self.features = FeatureStream(logmel)
        self.stack = stack
        self._pending = torch.zeros(0, logmel.cfg.n_mels)
        hop = logmel.cfg.hop_length
        self._tail = tail_padding(tail_steps(hop * stack / logmel.cfg.sample_rate) * stack * hop)

    def accept(self, samples: np.ndarray, last: bool = False) -> torch.Tensor:
        """-> [steps * stack, n_mels]; frames short of a whole step wait for the next chunk."""
        with torch.no_grad():
            return self.stack_frames(self.features.logmel.from_windows(self.windows(samples, last)))

    def windows(self, samples: np.ndarray, last: bool = False) -> torch.Tensor:
        """First half of `accept`: converted audio cut into frames [n, win_length]."""
        audio = torch.from_numpy(self.converter.accept(samples, last=last))
        if last:
            audio = torch.cat([audio, self._tail])
        return self.features.windows(audio)

    def stack_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Second half of `accept`: log-mel frames -> the whole model steps now ready."""
        pending = torch.cat([self._pending, frames]) if len(self._pending) else frames
        ready = len(pending) // self.stack * self.stack
        self._pending = pending[ready:]
        return pending[:ready]


def accept_many(frontends: list[FrontEnd], chunks: list[np.ndarray], last: bool = False) -> list[torch.Tensor]:
    """`accept` for many streams with one log-mel call over all their frames: per-stream work stays
    tiny (buffering), and the transform runs once per tick instead of once per stream."""
    return stack_many(frontends, [fe.windows(chunk, last) for fe, chunk in zip(frontends, chunks)])


@torch.no_grad()
def stack_many(frontends: list[FrontEnd], windows: list[torch.Tensor]) -> list[torch.Tensor]:
    """The second half of `accept_many`, for callers that cut each stream's windows themselves."""
    if not frontends:
        return []
    frames = frontends[0].features.logmel.from_windows(torch.cat(windows))
    return [fe.stack_frames(f) for fe, f in zip(frontends, frames.split([len(w) for w in windows]))]


class BackEnd:
    """Log-probabilities -> events, with frame-exact endpointing so segments never depend on chunking."""

    def __init__(self, tokenizer: Tokenizer, step_seconds: float, options: DecodeOptions, endpoint: EndpointConfig):
        self.tokenizer = tokenizer
        self.step_seconds = step_seconds
        self.endpoint = endpoint
        self.decoder = make_decoder(tokenizer, step_seconds, options)
        self.steps = 0  # absolute model steps consumed
        self._utterance_start = 0
        self._silence = 0  # trailing silent steps
        self._speech = False
        self._last_partial = ""
        limits = (endpoint.silence_without_speech, endpoint.silence_after_speech, endpoint.max_utterance)
        self._rule1, self._rule2, self._rule3 = (round(s / step_seconds) for s in limits)

    def accept(self, log_probs: torch.Tensor) -> list[Event]:
        """log_probs [steps, n_tokens] of this stream, in order."""
        events: list[Event] = []
        begin = 0
        silent = (log_probs.argmax(-1) <= self.tokenizer.boundary).tolist()  # blank or word boundary
        for t, is_silent in enumerate(silent):
            self._silence = self._silence + 1 if is_silent else 0
            self._speech = self._speech or not is_silent
            if self._endpoint_at(self.steps + t):
                self.decoder.accept(log_probs[begin : t + 1], self.steps + begin)
                events += self._final(next_start=self.steps + t + 1)
                begin = t + 1
        self.decoder.accept(log_probs[begin:], self.steps + begin)
        self.steps += len(log_probs)
        partial = self.decoder.partial()
        if partial.text != self._last_partial:
            self._last_partial = partial.text
            if partial.text:
                events.append(_event("partial", partial))
        return events

    def finish(self) -> list[Event]:
        """Close the stream's last utterance; its times end where the caller's audio did (before the padding)."""
        end = (self.steps - tail_steps(self.step_seconds)) * self.step_seconds
        return self._final(next_start=self.steps, end=round(end, 3))

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
        hyp.words = [replace(w, start=min(w.start, end), end=min(w.end, end)) for w in hyp.words]
        self._utterance_start, self._silence, self._speech, self._last_partial = next_start, 0, False, ""
        return [_event("final", hyp)] if hyp.text else []


def _event(kind: str, hyp: Hypothesis) -> Event:
    return Event(kind, hyp.text, hyp.words[0].start, hyp.words[-1].end, list(hyp.words))
