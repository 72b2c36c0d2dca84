"""Incremental CTC decoding: greedy and beam search (flashlight, optionally with a lexicon and an LM).

Both decoders take log-probabilities a few steps at a time, can report the best hypothesis so far,
and time every token by the absolute model step at which it was emitted, so results do not depend on
how the audio was chunked.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .lm import LM_NAMES, lexicon_file, make_search, write_lexicon  # noqa: F401 (lexicon helpers: used from here)
from .tokens import Tokenizer


@dataclass(frozen=True)
class DecodeOptions:
    beam: int = 0  # 0: greedy; otherwise beam search with this many hypotheses
    beam_threshold: float = 25.0
    lexicon: str | None = None  # file of "word s p e l l i n g |" lines; restricts output to its words
    words: tuple[str, ...] | None = None  # the same as a word list: travels with the options to any machine
    lm: str | None = None  # models.lm.LM_NAMES ("words", "chars": English), or a KenLM binary or ARPA file
    lm_weight: float = 2.0
    word_score: float = 0.0
    token_score: float = 0.0  # a bonus per step given to a token (against an LM's pull towards fewer)
    unk_score: float = -math.inf  # with a lexicon: a string outside it costs this (-inf: none is read)
    beam_tokens: int = 0  # the most likely tokens a step tries per hypothesis (0: all)
    charset: str | None = None  # a CHARSETS name: the only characters the output may hold (None: any)


# `--charset`: a field that takes only digits or letters. Blank and the word boundary are always allowed.
CHARSETS = {"digits": string.digits, "upper": string.ascii_uppercase, "lower": string.ascii_lowercase,
            "letters": string.ascii_letters, "all": None}


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Hypothesis:
    text: str = ""
    words: list[Word] = field(default_factory=list)


@dataclass
class _Emission:
    token: int
    first: int  # absolute model step
    last: int
    prob: float  # peak posterior over the steps of the token


def _rows(log_probs: torch.Tensor | np.ndarray) -> np.ndarray:
    """A chunk's log-probabilities [steps, n_tokens] as a float32 array, without a copy where it is one already (a
    tick's rows arrive as array views; a tensor on the CPU shares its memory)."""
    rows = log_probs.numpy(force=True) if isinstance(log_probs, torch.Tensor) else log_probs
    return rows if rows.dtype == np.float32 else rows.astype(np.float32)


def _words(emissions: list[_Emission], tokenizer: Tokenizer, step_seconds: float,
           vocabulary: frozenset[str] | set[str] | None = None) -> Hypothesis:
    """Group token emissions into words with times and a confidence (geometric mean of token peaks); with a
    `vocabulary`, words outside it are left out."""
    words: list[Word] = []
    current: list[_Emission] = []

    def close() -> None:
        if current:
            text = "".join(tokenizer.tokens[e.token] for e in current)
            if vocabulary is None or text in vocabulary:
                conf = math.exp(sum(math.log(max(e.prob, 1e-12)) for e in current) / len(current))
                start, end = current[0].first * step_seconds, (current[-1].last + 1) * step_seconds
                words.append(Word(text, round(start, 3), round(end, 3), conf))
            current.clear()

    for e in emissions:
        if e.token == tokenizer.boundary:
            close()
        else:
            current.append(e)
    close()
    return Hypothesis(" ".join(w.word for w in words), words)


class GreedyDecoder:
    """Best path decoding, kept incrementally: a partial result recomputes only the word being written (words a
    boundary has closed cannot change, since a step only ever extends the last emission)."""

    view_key = None  # what `view` does to the log-probabilities (None: nothing); decoders alike share one view

    def __init__(self, tokenizer: Tokenizer, step_seconds: float):
        self.tokenizer = tokenizer
        self.step_seconds = step_seconds
        self._prev = tokenizer.blank
        self._emissions: list[_Emission] = []
        self._closed: list[Word] = []  # the words of _emissions[:_open]
        self._open = 0
        self.revision = 0  # counts changes that can change the text: a partial is read again only after one

    def view(self, log_probs: torch.Tensor) -> torch.Tensor:
        """What this decoder reads of `log_probs` (a charset's restriction reads less)."""
        return log_probs

    def accept(self, log_probs: torch.Tensor | np.ndarray, first_step: int) -> None:
        rows = _rows(log_probs)
        ids = rows.argmax(-1)
        for i, (k, lp) in enumerate(zip(ids.tolist(), rows[np.arange(len(ids)), ids].tolist())):
            if k != self.tokenizer.blank:  # (most steps are blank: exp only where a token is)
                if k == self._prev and self._emissions:
                    last = self._emissions[-1]
                    last.last, last.prob = first_step + i, max(last.prob, math.exp(lp))
                else:
                    self._emissions.append(_Emission(k, first_step + i, first_step + i, math.exp(lp)))
                    self.revision += 1  # (a step that goes on with the last token changes its time, not the text)
            self._prev = k

    accept_view = accept  # (its view is the log-probabilities themselves)

    def accept_blank(self, log_probs: torch.Tensor | np.ndarray, first_step: int) -> None:
        """`accept_view` for steps the caller knows are all blank (it read their argmax for the whole tick)."""
        if log_probs.shape[0]:
            self._prev = self.tokenizer.blank

    def partial(self) -> Hypothesis:
        emissions, boundary = self._emissions, self.tokenizer.boundary
        for j in range(self._open, len(emissions)):
            if emissions[j].token == boundary:
                self._closed += _words(emissions[self._open : j], self.tokenizer, self.step_seconds).words
                self._open = j + 1
        words = self._closed + _words(emissions[self._open :], self.tokenizer, self.step_seconds).words
        return Hypothesis(" ".join(w.word for w in words), words)

    def finish(self) -> Hypothesis:
        hyp = self.partial()
        self._emissions, self._closed, self._open = [], [], 0
        self.revision += 1
        return hyp


class BeamDecoder:
    """flashlight's CTC beam search (models.lm builds it, its LM and lexicon shared per process), stepped
    incrementally per utterance."""

    view_key = None

    def __init__(self, tokenizer: Tokenizer, step_seconds: float, options: DecodeOptions):
        self.tokenizer = tokenizer
        self.step_seconds = step_seconds
        self._decoder, parts = make_search(options, tokenizer)
        self._parts = parts  # (the decoder reads its LM and trie: they live as long as it does)
        # flashlight's lexicon-free search has no bonus per token, and an LM weight high enough to mend letters
        # also drops them: the bonus is added to the log-probabilities it reads (a CTC token mostly holds one step)
        self._bonus = np.full(len(tokenizer.tokens), options.token_score, np.float32) if options.token_score else None
        if self._bonus is not None:  # (characters only: a bonus for word boundaries split words, "Foot hill")
            self._bonus[[tokenizer.blank, tokenizer.boundary]] = 0.0
        # A lexicon's words end at a word boundary, and the model writes none after a line's last word: one step of
        # certain boundary ends the stream, else the last word was dropped whenever no beam entry had paid for one
        # (a 50,000-word lexicon read 102 of 600 held-out words as nothing). It is past the last step: no word's time.
        self._end = None
        if parts.trie is not None:
            self._end = torch.full((len(tokenizer.tokens),), -1e4)
            self._end[tokenizer.boundary] = 0.0
        self._width = len(tokenizer.tokens)
        self._log_probs = np.zeros((0, self._width), dtype=np.float32)  # of the utterance, grown x2
        self._address = self._log_probs.ctypes.data  # where its first row is (flashlight reads it by address)
        self._steps = 0  # their length
        self._first_step = 0
        self._started = False
        self._closed: tuple[int, list[int], tuple[Word, ...]] | None = None  # (step, path before it, words it closed)
        self._writing: tuple[tuple, list[Word]] = ((), [])  # the emissions after the last boundary, and their words
        self._read: tuple[list[int], Hypothesis] | None = None  # the last partial's path, and what it read
        # flashlight ends a hypothesis mid-word when no beam entry reached a word boundary: with a lexicon, only
        # its complete words are reported (unless unknown words may be read: then every string is one)
        self._vocabulary = parts.vocabulary if options.unk_score == -math.inf else None
        self.revision = 0  # any step may change the best hypothesis

    def view(self, log_probs: torch.Tensor) -> torch.Tensor:
        return log_probs

    def accept(self, log_probs: torch.Tensor | np.ndarray, first_step: int) -> None:
        if not self._started:
            self._decoder.decode_begin()
            self._first_step, self._started, self._closed, self._writing = first_step, True, None, ((), [])
            self._read = None
        steps = log_probs.shape[0]  # (len() of a tensor is four Python calls; a shape, none)
        if steps:
            if log_probs.shape[1] != self._width:  # (flashlight reads rows of this width at an address)
                raise ValueError(f"log-probabilities of {log_probs.shape[1]} tokens for a {self._width}-token decoder")
            start, end = self._steps, self._steps + steps
            if end > len(self._log_probs):  # (a partial used to join the utterance's chunks anew: 50 us a call)
                grown = np.zeros((max(2 * len(self._log_probs), end, 64), self._width), dtype=np.float32)
                grown[:start] = self._log_probs[:start]
                self._log_probs, self._address = grown, grown.ctypes.data
            self._log_probs[start:end] = _rows(log_probs)
            self._steps = end
            # flashlight reads the steps where they were just copied to: the utterance's array is C-ordered float32,
            # so its rows from `start` on are one block (a torch tensor's .to/.contiguous/.data_ptr per chunk cost
            # ~9 us a stream a tick; BENCHMARKS.md)
            if self._bonus is None:
                self._decoder.decode_step(self._address + start * self._log_probs.strides[0], steps, self._width)
            else:
                fed = self._log_probs[start:end] + self._bonus
                self._decoder.decode_step(fed.ctypes.data, steps, self._width)
            self.revision += 1

    accept_view = accept_blank = accept  # (its view is the log-probabilities themselves; blank steps are searched too)

    def partial(self) -> Hypothesis:
        if not self._started:
            return Hypothesis()
        return self._hypothesis(self._decoder.get_best_hypothesis())

    def finish(self) -> Hypothesis:
        if not self._started:
            return Hypothesis()
        if self._end is not None:
            self._decoder.decode_step(self._end.data_ptr(), 1, len(self._end))
        self._decoder.decode_end()
        results = self._decoder.get_all_final_hypothesis()
        hyp = self._hypothesis(results[0]) if results else Hypothesis()
        self._steps, self._started = 0, False
        self.revision += 1
        return hyp

    def _hypothesis(self, result) -> Hypothesis:
        # result.tokens is the frame-level path with a sentinel at each end. Called for every partial of every
        # stream: Python per token emitted, not per step (per step cost 180 us a partial at 270 steps; numpy's
        # small-array calls per partial, 200 us at 330 steps and 35 tokens, more than this loop). The words that a
        # word boundary closed in the last partial are kept while the best path still begins as it did then (most
        # partials: one C-speed list comparison), so a partial reads only the path since that boundary (82 -> ~30 us
        # a partial at 200 streams, BENCHMARKS.md).
        path = result.tokens[1 : 1 + self._steps]
        if self._read is not None:  # a path that only grew by blanks reads as before (a pause: most partials then)
            before, hypothesis = self._read
            n = len(before)
            if len(path) >= n and path[n:].count(self.tokenizer.blank) == len(path) - n and path[:n] == before:
                self._read = (path, hypothesis)
                return hypothesis
        start, words = 0, []
        if self._closed is not None and path[: self._closed[0]] == self._closed[1]:
            start, words = self._closed[0], list(self._closed[2])
        emissions = self._emissions(path, start)
        boundaries = [j for j, e in enumerate(emissions) if e.token == self.tokenizer.boundary]
        if boundaries:  # the words closed by this path's last boundary: kept for the next partial
            j = boundaries[-1]
            words += _words(emissions[:j], self.tokenizer, self.step_seconds, self._vocabulary).words
            end = emissions[j].last - self._first_step + 1
            self._closed = (end, path[:end], tuple(words))
            emissions = emissions[j + 1 :]
        # The word being written: the same emissions give the same words (a step's log-probabilities never change),
        # and from one partial to the next they mostly are the same (the path grew by blanks, or one token went on).
        key = tuple((e.token, e.first, e.last) for e in emissions)
        if key != self._writing[0]:
            self._writing = (key, _words(emissions, self.tokenizer, self.step_seconds, self._vocabulary).words)
        words += self._writing[1]
        hypothesis = Hypothesis(" ".join([w.word for w in words]), words)  # (a list, not a generator: a call a word)
        self._read = (path, hypothesis)
        return hypothesis

    def _emissions(self, path: list[int], start: int) -> list[_Emission]:
        """The path's emissions from step `start` on (a step after a boundary, or the utterance's first)."""
        blank, first, lp = self.tokenizer.blank, self._first_step, self._log_probs
        emissions: list[_Emission] = []
        prev_token, prev_step = blank, -2
        for i in [i for i, k in enumerate(path[start:], start) if k != blank]:
            k = path[i]
            if k == prev_token and i == prev_step + 1:  # the same emission goes on
                e = emissions[-1]
                e.last, e.prob = first + i, max(e.prob, math.exp(float(lp[i, k])))
            else:
                emissions.append(_Emission(k, first + i, first + i, math.exp(float(lp[i, k]))))
            prev_token, prev_step = k, i
        return emissions


class RestrictedDecoder:
    """Either decoder, fed log-probabilities in which the charset restricts which character was written, not whether
    one was: at each step the characters it allows share the whole non-blank probability, in their own proportions;
    blank and the word boundary keep theirs; the others get log-probability -1e4 (finite: flashlight's scores stay
    numbers). Masking alone left a lone stroke's step to blank whenever the model had put most of it on a look-alike
    outside the set: held-out 'l' read as '1' or nothing (97 of 2,680 lower case read as nothing), 'I' as 'T'
    (lower case 92.3 -> 95.2% correct, digits 95.4 -> 97.2%, upper 88.7 -> 90.0%; BENCHMARKS.md). So a word's
    confidence is the model's given the charset, and greedy weighs blank against the allowed characters together.
    Per step: any chunking of a stream reads the same."""

    def __init__(self, decoder: GreedyDecoder | BeamDecoder, tokenizer: Tokenizer, charset: str):
        if charset not in CHARSETS or CHARSETS[charset] is None:
            raise ValueError(f"unknown charset {charset!r} (known: {', '.join(CHARSETS)})")
        self.decoder = decoder
        self.view_key = charset  # (streams of one charset share the view)
        self.characters = torch.ones(len(tokenizer.tokens), dtype=torch.bool)  # per token: not blank nor boundary
        self.characters[[tokenizer.blank, tokenizer.boundary]] = False
        self.allowed = self.characters & torch.tensor([t in CHARSETS[charset] for t in tokenizer.tokens])
        if not self.allowed.any():
            raise ValueError(f"the model has no character of charset {charset!r}")
        # what view applies, built once: it runs per stream per chunk, and boolean indexing there took 68 us a
        # 4-step chunk against 46 us with these (one core)
        self._masks: tuple[torch.Tensor, ...] = ()

    def _masks_on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if not self._masks or self._masks[0].device != device:
            self._masks = tuple(m.to(device) for m in (
                self.allowed.nonzero().squeeze(1), self.characters.nonzero().squeeze(1), self.allowed.float(),
                self.characters & ~self.allowed))
        return self._masks

    def view(self, log_probs: torch.Tensor) -> torch.Tensor:
        """The restricted log-probabilities: the ones the decoder is fed, and the ones the endpoint's silence is
        read from (a step the charset gives to '1' is not silence because the model preferred blank to 'l' alone)."""
        allowed, characters, allowed_f, barred = self._masks_on(log_probs.device)
        pooled = log_probs.index_select(1, allowed).logsumexp(-1)
        share = torch.where(pooled.isfinite(), log_probs.index_select(1, characters).logsumexp(-1) - pooled, 0.0)
        restricted = torch.addcmul(log_probs, share[:, None], allowed_f).masked_fill_(barred, -1e4)
        return restricted.clamp_(min=-1e4)

    def accept(self, log_probs: torch.Tensor, first_step: int) -> None:
        self.accept_view(self.view(log_probs), first_step)

    def accept_view(self, restricted: torch.Tensor, first_step: int) -> None:
        """`accept` for log-probabilities that have been through `view` already (the back end reads silence there)."""
        self.decoder.accept(restricted, first_step)

    def accept_blank(self, restricted: torch.Tensor, first_step: int) -> None:
        self.decoder.accept_blank(restricted, first_step)

    @property
    def revision(self) -> int:
        return self.decoder.revision

    def partial(self) -> Hypothesis:
        return self.decoder.partial()

    def finish(self) -> Hypothesis:
        return self.decoder.finish()


def make_decoder(
    tokenizer: Tokenizer, step_seconds: float, options: DecodeOptions
) -> GreedyDecoder | BeamDecoder | RestrictedDecoder:
    restricted = options.charset is not None and CHARSETS.get(options.charset, "") is not None
    if restricted and options.lm in LM_NAMES:  # an English LM reads words, not a field of digits or letters
        options = replace(options, lm=None, beam=0, beam_tokens=0, token_score=0.0)
    if options.beam > 0:
        decoder: GreedyDecoder | BeamDecoder = BeamDecoder(tokenizer, step_seconds, options)
    else:
        decoder = GreedyDecoder(tokenizer, step_seconds)
    if not restricted:  # (None or "all": nothing to restrict)
        return decoder
    return RestrictedDecoder(decoder, tokenizer, options.charset)
