"""Training data: manifests and generators mixed by weight, augmented, featurised, batched.

Batches come from pools of `bucket` batches: a pool's utterances are sorted by length and cut into
batches, so a batch pads little (an LSTM pays for every padded step). Pool p is drawn from a generator
seeded by (seed, p), so a resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from models.features import LogMel, utterance_frames
from models.tokens import Tokenizer, normalize_text

from .augment import AugmentConfig, augment_audio, augment_features
from .digits_data import resolve_path


def read_manifest(path: str | Path) -> list[dict]:
    """JSON lines {"audio", "text", "duration"}; audio paths are relative to the manifest's folder."""
    path = Path(path)
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            row["audio"] = str((path.parent / row["audio"]).resolve())
            rows.append(row)
    return rows


def load_audio(path: str, rate: int) -> np.ndarray:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    return soxr.resample(audio, sr, rate).astype(np.float32) if sr != rate else audio


@functools.lru_cache(maxsize=4096)
def _cached_audio(path: str, rate: int) -> np.ndarray:
    audio = load_audio(path, rate)
    audio.flags.writeable = False  # shared by the cache
    return audio


class ManifestSource:
    """Utterances of a manifest, drawn at random; decoded audio is cached (decoding an Ogg Opus utterance of
    speechocean762 costs ~30 ms, about a third of a batch's data time; the 173 minutes take ~0.7 GB)."""

    def __init__(self, path: str, max_duration: float = 30.0):
        self.rows = [r for r in read_manifest(resolve_path(path)) if r.get("duration", 0) <= max_duration]
        if not self.rows:
            raise ValueError(f"{path}: no utterances")

    def sample(self, rng: np.random.Generator, rate: int) -> tuple[np.ndarray, str]:
        row = self.rows[rng.integers(len(self.rows))]
        return _cached_audio(row["audio"], rate), row["text"]


class FsddConnectedSource:
    """Connected digit strings joined from one FSDD speaker's isolated clips (tools/digits_data.py); `root` may be a
    list of folders (FSDD and fsdd-jason)."""

    def __init__(self, root: str | list[str], speakers: list[str] | None = None, min_digits: int = 1, max_digits: int = 16):
        from .digits_data import fsdd_clips

        self.clips = fsdd_clips(root, speakers)
        self.min_digits, self.max_digits = min_digits, max_digits

    def sample(self, rng: np.random.Generator, rate: int) -> tuple[np.ndarray, str]:
        from .digits_data import connected_utterance

        return connected_utterance(self.clips, rng, rate, self.min_digits, self.max_digits)


def make_source(spec: dict):
    """A source of (audio, text) by the spec's `type`; the corpora users bring are in tools/corpora.py."""
    from .corpora import SOURCES

    spec = dict(spec)
    kind = spec.pop("type")
    spec.pop("weight", None)
    if kind == "manifest":
        return ManifestSource(**spec)
    if kind == "fsdd_connected":
        return FsddConnectedSource(**spec)
    if kind in SOURCES:  # speech_commands, librispeech, common_voice, audiomnist, nemo
        return SOURCES[kind](**spec)
    raise ValueError(f"unknown data source type {kind!r} (known: manifest, fsdd_connected, {', '.join(SOURCES)})")


@dataclass
class Batch:
    features: torch.Tensor  # [batch, frames, n_mels], zero padded
    frames: torch.Tensor  # [batch] valid frames
    targets: torch.Tensor  # [sum of target lengths]
    target_lengths: torch.Tensor
    texts: list[str]


class BatchStream(torch.utils.data.IterableDataset):
    """Endless batches from `start` on; each batch a pure function of (seed, index).

    `join_p`: chance that an item is two utterances with a pause between them, so the model learns to
    carry its state through silence into the next utterance, as a live stream does. With several loader
    workers each one makes every pool it takes batches from: with `bucket` > 1, one worker is cheaper.
    """

    def __init__(
        self,
        sources: list[dict],
        logmel: LogMel,
        tokenizer: Tokenizer,
        batch_size: int,
        seed: int,
        augment: AugmentConfig | None,
        start: int = 0,
        bucket: int = 1,
        join_p: float = 0.0,
        join_pause_s: tuple[float, float] = (0.3, 3.0),
        stack: int = 1,  # the model's frames per step (the lead-in rule, FeatureConfig.lead_in_dbfs)
    ):
        self.specs = sources
        self.logmel, self.tokenizer = logmel, tokenizer
        self.batch_size, self.seed, self.augment, self.start = batch_size, seed, augment, start
        self.bucket, self.join_p, self.join_pause_s, self.stack = bucket, join_p, join_pause_s, stack
        self._sources = None
        self._pool: tuple[tuple[int, int], list[list[tuple[torch.Tensor, str]]]] | None = None

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        index = self.start + worker
        while True:
            yield self.batch(index)
            index += workers

    def batch(self, index: int, purpose: int = 0) -> Batch:
        """purpose 0: training batches; other values draw independent batches (e.g. for statistics)."""
        pool = index // self.bucket
        if self._pool is None or self._pool[0] != (purpose, pool):
            self._pool = ((purpose, pool), self._make_pool(np.random.default_rng([self.seed, purpose, pool])))
        items = self._pool[1][index % self.bucket]
        targets = [torch.tensor(self.tokenizer.encode(t), dtype=torch.long) for _, t in items]
        return Batch(
            features=torch.nn.utils.rnn.pad_sequence([f for f, _ in items], batch_first=True),
            frames=torch.tensor([len(f) for f, _ in items]),
            targets=torch.cat(targets),
            target_lengths=torch.tensor([len(t) for t in targets]),
            texts=[t for _, t in items],
        )

    def _make_pool(self, rng: np.random.Generator) -> list[list[tuple[torch.Tensor, str]]]:
        """`bucket` batches of (features, text), utterances of like length together, in random order."""
        items = [self._item(rng) for _ in range(self.batch_size * self.bucket)]
        items.sort(key=lambda item: len(item[0]))
        batches = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _item(self, rng: np.random.Generator) -> tuple[torch.Tensor, str]:
        rate = self.logmel.cfg.sample_rate
        audio, text = self._utterance(rng, rate)
        if rng.random() < self.join_p:
            second, text2 = self._utterance(rng, rate)
            pause = rng.standard_normal(int(rng.uniform(*self.join_pause_s) * rate)).astype(np.float32)
            pause *= np.float32(10 ** (rng.uniform(-75, -50) / 20))
            audio, text = np.concatenate([audio, pause, second]), f"{text} {text2}"
        if self.augment is not None:
            audio = augment_audio(audio, rate, self.augment, rng)
        with torch.no_grad():
            features = utterance_frames(self.logmel, torch.from_numpy(np.require(audio, requirements="CW")), self.stack)
            if self.augment is not None:
                features = augment_features(features, self.augment, rng)
        return features, normalize_text(text)

    def _utterance(self, rng: np.random.Generator, rate: int) -> tuple[np.ndarray, str]:
        if self._sources is None:
            self._sources = [make_source(s) for s in self.specs]
        weights = np.array([s.get("weight", 1.0) for s in self.specs], dtype=np.float64)
        return self._sources[rng.choice(len(weights), p=weights / weights.sum())].sample(rng, rate)
