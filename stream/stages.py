"""The in-process core applied to every stream of a tick: the stages the Ray actors wrap.

A tick carries the audio of many streams. FeatureStage runs their FrontEnds (one log-mel call for all),
ModelStage steps all of them in ONE batched LSTM call through a SequenceBatcher, DecodeStage runs their
BackEnds. Each stream sees exactly the calls an in-process Session makes, so it gets the same events.
Bad input fails its own stream only. LocalPipeline chains the three in one process: the baseline the
Ray pipeline is measured against.
"""

from __future__ import annotations

import logging
import tempfile
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.audio import AudioError
from models.decoding import DecodeOptions

from .batcher import SequenceBatcher, SlotsFull
from .pipeline import EndpointConfig, Event, FrontEnd, stack_many
from .session import Recognizer

log = logging.getLogger(__name__)

Key = Hashable  # a stream: (producer id, number)


# ---------------------------------------------------------------------------------------------
# Messages: one per tick between stages, each covering many streams.


@dataclass
class Chunk:
    """One stream's audio in one tick; `rate` is set on the first chunk only (it opens the stream)."""

    samples: np.ndarray
    last: bool = False
    rate: int | None = None
    channels: int | None = None


@dataclass
class Audio:
    """A tick's chunks for the wire: streams with the same sample layout share one array (one buffer to
    serialise, not one per stream)."""

    keys: list
    lengths: list[int]
    group: list[int]  # index into data
    data: list[np.ndarray]
    last: list  # streams whose last chunk this is
    opens: dict  # stream -> (rate, channels) on its first chunk

    @classmethod
    def pack(cls, chunks: dict[Key, Chunk]) -> Audio:
        layouts: dict[tuple, int] = {}
        parts: list[list[np.ndarray]] = []
        audio = cls(list(chunks), [], [], [], [], {})
        for key, c in chunks.items():
            g = layouts.setdefault((c.samples.dtype.str, c.samples.shape[1:]), len(layouts))
            if g == len(parts):
                parts.append([])
            parts[g].append(c.samples)
            audio.lengths.append(len(c.samples))
            audio.group.append(g)
            if c.last:
                audio.last.append(key)
            if c.rate is not None:
                audio.opens[key] = (c.rate, c.channels)
        audio.data = [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]
        return audio

    def unpack(self) -> dict[Key, Chunk]:
        offsets = [0] * len(self.data)
        last, out = set(self.last), {}
        for key, n, g in zip(self.keys, self.lengths, self.group):
            rate, channels = self.opens.get(key, (None, None))
            out[key] = Chunk(self.data[g][offsets[g] : offsets[g] + n], key in last, rate, channels)
            offsets[g] += n
        return out


@dataclass
class Packed:
    """Many streams' [n_i, dim] tensors as one array: one buffer to serialise instead of one per stream."""

    keys: list
    lengths: list[int]
    data: np.ndarray

    @classmethod
    def pack(cls, tensors: dict, dim: int) -> Packed:
        keys = list(tensors)
        data = torch.cat([tensors[k] for k in keys]).numpy() if keys else np.zeros((0, dim), np.float32)
        return cls(keys, [len(tensors[k]) for k in keys], data)

    def unpack(self) -> dict:
        if not self.keys:
            return {}
        data = torch.from_numpy(np.require(self.data, requirements="W"))  # Ray hands out read-only views
        return dict(zip(self.keys, data.split(self.lengths)))


@dataclass
class Frames:
    """features -> model."""

    features: Packed
    opened: list = field(default_factory=list)
    closed: list = field(default_factory=list)  # their last chunk: end after this step
    errors: dict = field(default_factory=dict)  # stream -> one-line reason; the stream is dropped


@dataclass
class Probs:
    """model -> decoder."""

    log_probs: Packed
    closed: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    expired: dict = field(default_factory=dict)  # streams freed by the idle timeout -> why


@dataclass
class Update:
    """decoder -> ingest: one stream's new events, and whether it is over."""

    events: list[Event] = field(default_factory=list)
    done: bool = False
    error: str | None = None
    expired: bool = False


def _reason(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ---------------------------------------------------------------------------------------------
# Stages: the in-process core applied to all streams of a tick. The actors wrap these.


class FeatureStage:
    """FrontEnds of many streams: a tick's audio chunks -> model-ready frames. Bad audio fails one stream."""

    def __init__(self, recognizer: Recognizer):
        self.recognizer = recognizer
        self.n_mels = recognizer.logmel.cfg.n_mels
        self.fronts: dict[Key, FrontEnd] = {}
        self.gone: OrderedDict[Key, str] = OrderedDict()  # recently dropped streams and why

    def process(self, chunks: dict[Key, Chunk] | Audio) -> Frames:
        if isinstance(chunks, Audio):
            chunks = chunks.unpack()
        out = Frames(Packed([], [], np.zeros((0, self.n_mels), np.float32)))
        cut: list[tuple[Key, FrontEnd, torch.Tensor]] = []
        for key, chunk in chunks.items():
            try:
                if chunk.rate is not None:
                    self.fronts[key] = self.recognizer.frontend(chunk.rate, chunk.channels)
                    out.opened.append(key)
                front = self.fronts.get(key)
                if front is None:
                    raise AudioError(self.gone.pop(key, "stream is not open"))
                cut.append((key, front, front.windows(chunk.samples, last=chunk.last)))
                if chunk.last:
                    del self.fronts[key]
                    out.closed.append(key)
            except Exception as e:  # one stream's bad input must not fail the others
                self.fronts.pop(key, None)
                if key in out.opened:
                    out.opened.remove(key)
                out.errors[key] = _reason(e)
        out.features = Packed.pack(self._transform(cut), self.n_mels)
        return out

    @staticmethod
    def _transform(cut: list[tuple[Key, FrontEnd, torch.Tensor]]) -> dict[Key, torch.Tensor]:
        """One log-mel call over every stream's new frames (FrontEnd.accept's two halves, batched)."""
        ready = stack_many([front for _, front, _ in cut], [w for _, _, w in cut])
        return {key: frames for (key, _, _), frames in zip(cut, ready)}

    def drop(self, reasons: dict[Key, str]) -> None:
        for key, why in reasons.items():
            if self.fronts.pop(key, None) is not None:
                self.gone[key] = why
        while len(self.gone) > 10_000:
            self.gone.popitem(last=False)


@dataclass(eq=False)
class _Request:
    producer: Hashable
    frames: Frames
    log_probs: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    remaining: int = 0


class ModelStage:
    """A SequenceBatcher over queued requests: every stream that has frames steps in one LSTM call per tick.

    Requests (ticks of producers) queue per stream, in order; a tick concatenates a stream's queued
    frames, steps all streams together and splits the log-probabilities back per request. Producers
    `reserve` a slot before a stream's first chunk: past max_slots a new stream waits at its producer
    (backpressure) instead of blocking a tick that other streams share.
    """

    def __init__(self, model, slots: int = 64, max_slots: int = 4096, idle_timeout: float | None = None):
        self.batcher = SequenceBatcher(model, slots=slots, max_slots=max_slots, idle_timeout=idle_timeout)
        self.stack, self.n_tokens, self.n_mels = model.cfg.stack, model.cfg.n_tokens, model.cfg.n_mels
        self._queue: dict[Key, list[tuple[_Request, torch.Tensor | None, bool]]] = {}
        self._opening: set = set()
        self._reserved: set = set()
        self._ready: list[_Request] = []
        self._expired: dict[Hashable, dict] = {}  # producer -> {stream: reason}, told on its next result
        self.calls = 0
        self.expired_total = 0

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def reserve(self, keys: list) -> list:
        """Promise slots to new streams while any are left; -> the streams that got one."""
        granted = []
        for key in keys:
            if key not in self._reserved and self.batcher.active + len(self._reserved) >= self.batcher.max_slots:
                break
            self._reserved.add(key)
            granted.append(key)
        return granted

    def submit(self, frames: Frames, producer: Hashable = None) -> _Request:
        req = _Request(producer, frames)
        closed = set(frames.closed)
        self._opening.update(frames.opened)
        for key, x in frames.features.unpack().items():
            self._queue.setdefault(key, []).append((req, x, key in closed))
            req.remaining += 1
        for key in frames.errors:  # a failed stream gives up its slot, after its earlier frames
            self._reserved.discard(key)
            if key in self.batcher or key in self._queue:
                self._queue.setdefault(key, []).append((req, None, True))
                req.remaining += 1
        if not req.remaining:
            self._ready.append(req)
        return req

    def tick(self) -> list[_Request]:
        """One batched LSTM call for every queued stream that holds or gets a slot; -> completed requests."""
        inputs, taken, touched = {}, {}, self._ready
        self._ready = []
        for key in list(self._queue):
            if key not in self.batcher:
                if key not in self._opening:
                    for req, _, _ in self._queue.pop(key):
                        req.errors[key] = "stream is not open (finished, failed or expired)"
                        req.remaining -= 1
                        touched.append(req)
                    continue
                self._opening.discard(key)
                try:
                    self.batcher.start(key)  # cannot fail when reserved
                except SlotsFull as e:
                    for req, _, _ in self._queue.pop(key):
                        req.errors[key] = _reason(e)
                        req.remaining -= 1
                        touched.append(req)
                    continue
                finally:
                    self._reserved.discard(key)
            items = taken[key] = self._queue.pop(key)
            xs = [x for _, x, _ in items if x is not None]
            if xs:
                inputs[key] = xs[0] if len(xs) == 1 else torch.cat(xs)
        outputs = self.batcher.step(inputs) if inputs else {}
        self.calls += bool(inputs)
        for key, items in taken.items():
            at = 0
            for req, x, _ in items:
                if x is not None:
                    n = len(x) // self.stack
                    req.log_probs[key] = outputs[key][at : at + n]
                    at += n
                req.remaining -= 1
                touched.append(req)
            if items[-1][2]:
                self.batcher.end(key)
        return [r for r in dict.fromkeys(touched) if r.remaining == 0]

    def expire(self) -> dict[Key, str]:
        """Free the slots of streams idle past the timeout; each producer is told on its next result."""
        keys = self.batcher.expire()
        reasons = {k: f"stream idle for more than {self.batcher.idle_timeout:g} s: its model slot was freed" for k in keys}
        for key, why in reasons.items():
            producer = key[0] if isinstance(key, tuple) else None
            self._expired.setdefault(producer, {})[key] = why
            log.warning("%s: %s", key, why)
        self.expired_total += len(keys)
        return reasons

    def result(self, req: _Request) -> Probs:
        return Probs(
            Packed.pack(req.log_probs, self.n_tokens),
            closed=req.frames.closed,
            errors={**req.frames.errors, **req.errors},
            expired=self._expired.pop(req.producer, {}),
        )

    def stats(self) -> dict:
        b = self.batcher
        return {"active": b.active, "reserved": len(self._reserved), "slots": b.slots, "max_slots": b.max_slots,
                "queued": len(self._queue), "lstm_calls": self.calls, "expired": self.expired_total}


class DecodeStage:
    """BackEnds of many streams: a tick's log-probabilities -> each stream's partial and final events.

    Decoding (beam search above all) is the costliest stage per stream, so it can be split: stage
    `shard` of `shards` handles the streams whose number falls to it.
    """

    def __init__(self, recognizer: Recognizer, shard: int = 0, shards: int = 1):
        self.recognizer = recognizer
        self.shard, self.shards = shard, shards
        self.backs: dict = {}

    def mine(self, key: Key) -> bool:
        return self.shards == 1 or (key[1] if isinstance(key, tuple) else hash(key)) % self.shards == self.shard

    def process(self, probs: Probs) -> dict[Key, Update]:
        updates: dict[Key, Update] = {}
        closed = set(probs.closed)
        for key, log_probs in probs.log_probs.unpack().items():
            if not self.mine(key):
                continue
            try:
                back = self.backs.get(key) or self.backs.setdefault(key, self.recognizer.backend())
                events = back.accept(log_probs)
                if key in closed:
                    events += self.backs.pop(key).finish()
                if events or key in closed:  # nothing to say about most streams in most ticks
                    updates[key] = Update(events, done=key in closed)
            except Exception as e:
                self.backs.pop(key, None)
                updates[key] = Update([], True, _reason(e))
        for key, why in probs.errors.items():
            if self.mine(key):
                self.backs.pop(key, None)
                updates[key] = Update(updates[key].events if key in updates else [], True, why)
        self.drop(probs.expired)
        for key, why in probs.expired.items():
            if self.mine(key):
                updates[key] = Update([], True, why, expired=True)
        return updates

    def drop(self, reasons: dict[Key, str]) -> None:
        for key in reasons:
            self.backs.pop(key, None)


# ---------------------------------------------------------------------------------------------
# The three stages chained in this process (the Ray version is stream.actors.RayPipeline).


@dataclass
class PipelineSpec:
    """What every stage needs to rebuild the recognizer: options, the model's device, the batcher's limits."""

    device: str | None = None  # for the model actor; None: cuda if its node has one
    options: DecodeOptions | None = None  # None: the decoding the checkpoint recommends
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    slots: int = 64
    max_slots: int = 4096
    idle_timeout: float | None = None
    decoders: int = 2  # decoder actors per pipeline, each with a share of the streams

    def recognizer(self, checkpoint: bytes, device: str | None = "cpu") -> Recognizer:
        """The checkpoint travels as bytes, so worker nodes need the code but not the model file."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            path.write_bytes(checkpoint)
            return Recognizer.load(path, device=device, options=self.options, endpoint=self.endpoint)


class LocalPipeline:
    """The same three stages called one after the other in this process: the in-process baseline."""

    def __init__(self, recognizer: Recognizer, spec: PipelineSpec = PipelineSpec()):
        self.features = FeatureStage(recognizer)
        self.model = ModelStage(recognizer.model, spec.slots, spec.max_slots, spec.idle_timeout)
        self.decoder = DecodeStage(recognizer)
        self.node_id = "local"

    @classmethod
    def load(cls, model: str | Path, spec: PipelineSpec, device: str | None, threads: int = 1) -> LocalPipeline:
        """The in-process pipeline for a model file, with the spec's decoding and endpointing."""
        torch.set_num_threads(threads)
        return cls(Recognizer.load(model, device=device, options=spec.options, endpoint=spec.endpoint), spec)

    def submit(self, producer: Hashable, seq: int, chunks: dict[Key, Chunk]) -> dict[Key, Update]:
        req = self.model.submit(self.features.process(chunks), producer)
        self.model.tick()
        expired = self.model.expire()
        self.features.drop(expired)
        return self.decoder.process(self.model.result(req))

    def reserve(self, keys: list) -> list:
        return self.model.reserve(keys)

    def ready(self, handles: list, timeout: float | None) -> int:
        return len(handles)  # computed at submit

    def get(self, handle) -> dict[Key, Update]:
        return handle

    def stats(self) -> dict:
        return self.model.stats()

    def close(self) -> None:
        pass
