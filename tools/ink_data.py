"""Training data for pen models: UNIPEN words, joined UNIPEN characters and UCI letters -> pen frames, batched.

The same BatchStream as speech (pools sorted by length, each batch a pure function of (seed, index), so a resumed
run sees the same batches); only an item is made differently: points from a source, augmented, through the pen
front end exactly as a stream's (models.pen, with its tail). Invariant: no held-out writer (tools.unipen's
seeded split) and no held-out UCI sample is ever drawn.
"""

from __future__ import annotations

import numpy as np
import torch

from models.pen import PenExtractor
from models.tokens import Tokenizer

from . import unipen
from .data import BatchStream
from .ink_augment import InkAugmentConfig, augment_ink

WORD_GAP = (1.5, 3.0)  # x space between joined words, in unit spreads
LETTER_GAP = (0.1, 0.8)  # between joined letters
LIFT = (0.1, 0.5)  # pen-up seconds between joined letters (between words: twice)


def join(pieces: list[np.ndarray], spaces: list[bool], rng: np.random.Generator) -> np.ndarray:
    """Point sequences side by side in x and in time; `spaces[i]`: a word space before piece i."""
    out, x_end, t_end = [], 0.0, 0.0
    for i, p in enumerate(pieces):
        p = p.copy()
        if i:
            gap = rng.uniform(*(WORD_GAP if spaces[i] else LETTER_GAP))
            p[:, 0] += x_end + gap - p[:, 0].min()
            p[:, 1] += rng.uniform(-0.2, 0.2)
            p[:, 2] += t_end + rng.uniform(*LIFT) * (2.0 if spaces[i] else 1.0) - p[0, 2]
        else:
            p[:, 2] -= p[0, 2]
        out.append(p)
        x_end, t_end = float(p[:, 0].max()), float(p[-1, 2])
    return np.concatenate(out)


def _spaced(n: int, rng: np.random.Generator, space_p: float) -> list[bool]:
    return [i > 0 and rng.random() < space_p for i in range(n)]


class WordsSource:
    """UNIPEN category 7 words of the training writers (with their pen-up time drawn): one word, or (1 - single_p
    of the items) 2 to `max_words` words of one writer side by side with word spaces, as a line is written."""

    def __init__(self, seed: int = 0, category: str = "7", max_words: int = 1, single_p: float = 1.0,
                 root: str | None = None, by_contributor: bool = False):
        self.category, self.root, self.max_words, self.single_p = category, root, max_words, single_p
        held = unipen.split_writers(seed, root=root, by_contributor=by_contributor)
        self.index = unipen.indices(category, held, True, root)
        writers = unipen.load_category(category, root).writers[self.index]
        self.by_writer = {w: self.index[writers == w] for w in np.unique(writers)}

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        c = unipen.load_category(self.category, self.root)
        first = int(self.index[rng.integers(len(self.index))])
        n = 1 if self.max_words < 2 or rng.random() < self.single_p else int(rng.integers(2, self.max_words + 1))
        same = self.by_writer[c.writers[first]]
        chosen = [first] + [int(same[rng.integers(len(same))]) for _ in range(n - 1)]
        pieces = [unipen.timed_points(c.strokes(i), float(c.rates[i]), lift_scale=rng.uniform(0.5, 2.0))
                  for i in chosen]
        if n == 1:
            return pieces[0], unipen.clean_label(str(c.labels[first]))
        text = " ".join(unipen.clean_label(str(c.labels[i])) for i in chosen)
        return join(pieces, [i > 0 for i in range(n)], rng), text


class CharsSource:
    """1 to `max_chars` isolated characters of one training writer and category (1a digits, 1b upper, 1c lower),
    joined: half of the items are a single character, as the isolated-character fields are read."""

    def __init__(self, seed: int = 0, categories: tuple = ("1a", "1b", "1c"), max_chars: int = 6,
                 single_p: float = 0.5, space_p: float = 0.15, root: str | None = None, by_contributor: bool = False):
        held = unipen.split_writers(seed, root=root, by_contributor=by_contributor)
        self.root, self.max_chars, self.single_p, self.space_p = root, max_chars, single_p, space_p
        self.by_writer = []  # (category, indices of one writer)
        for cat in categories:
            idx = unipen.indices(cat, held, True, root)
            writers = unipen.load_category(cat, root).writers[idx]
            for w in np.unique(writers):
                self.by_writer.append((cat, idx[writers == w]))

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        cat, idx = self.by_writer[rng.integers(len(self.by_writer))]
        c = unipen.load_category(cat, self.root)
        n = 1 if rng.random() < self.single_p else int(rng.integers(2, self.max_chars + 1))
        chosen = [int(idx[rng.integers(len(idx))]) for _ in range(n)]
        pieces = [unipen.timed_points(c.strokes(i), float(c.rates[i]), lift_scale=rng.uniform(0.5, 2.0))
                  for i in chosen]
        spaces = _spaced(n, rng, self.space_p)
        text = "".join((" " if s else "") + unipen.clean_label(str(c.labels[i])) for i, s in zip(chosen, spaces))
        return join(pieces, spaces, rng), text


class UciSource:
    """1 to `max_chars` UCI letters (the training samples), joined."""

    def __init__(self, seed: int = 0, max_chars: int = 5, single_p: float = 0.5, root: str | None = None):
        self.root, self.max_chars, self.single_p = root, max_chars, single_p
        self.index = unipen.uci_split(seed, root=root)[0]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        points, labels = unipen.uci(self.root)
        n = 1 if rng.random() < self.single_p else int(rng.integers(2, self.max_chars + 1))
        chosen = [int(self.index[rng.integers(len(self.index))]) for _ in range(n)]
        spaces = [False] * n
        return join([points[i] for i in chosen], spaces, rng), "".join(labels[i] for i in chosen)


SOURCES = {"unipen_words": WordsSource, "unipen_chars": CharsSource, "uci": UciSource}


def make_source(spec: dict, seed: int):
    spec = dict(spec)
    kind = spec.pop("type")
    spec.pop("weight", None)
    if kind not in SOURCES:
        raise ValueError(f"unknown pen data source type {kind!r} (known: {', '.join(SOURCES)})")
    return SOURCES[kind](seed=seed, **spec)


class InkBatchStream(BatchStream):
    """BatchStream whose items are ink: a source's points, augmented, through the pen front end."""

    def __init__(self, sources: list[dict], extractor: PenExtractor, tokenizer: Tokenizer, batch_size: int,
                 seed: int, augment: InkAugmentConfig | None, bucket: int = 1, max_seconds: float = 12.0):
        super().__init__(sources, None, tokenizer, batch_size, seed, None, bucket=bucket)
        self.extractor, self.ink_augment, self.max_seconds = extractor, augment, max_seconds

    def _item(self, rng: np.random.Generator) -> tuple[torch.Tensor, str]:
        if self._sources is None:
            self._sources = [make_source(s, self.seed) for s in self.specs]
        weights = np.array([s.get("weight", 1.0) for s in self.specs], dtype=np.float64)
        while True:
            points, text = self._sources[rng.choice(len(weights), p=weights / weights.sum())].sample(rng)
            if self.ink_augment is not None:
                points = augment_ink(points, self.ink_augment, rng)
            if points[-1, 2] - points[0, 2] <= self.max_seconds:
                break
        frames = self.extractor.open().cut(points, last=True)
        return frames, self.tokenizer.normalize(text)


def ink_batches(cfg: dict, extractor: PenExtractor, tokenizer: Tokenizer, augment: None) -> InkBatchStream:
    """Ink items (tools.train.ITEMS["pen"]): the `data:` sources' points, augmented as points (`ink_augment:`)."""
    from tools.train import DataConfig, _dataclass, train_config

    data = _dataclass(DataConfig, cfg["data"])
    ink = _dataclass(InkAugmentConfig, cfg["ink_augment"]) if cfg.get("ink_augment") is not None else None
    return InkBatchStream(list(data.train), extractor, tokenizer, train_config(cfg).batch_size, cfg.get("seed", 0), ink,
                          bucket=data.bucket)
