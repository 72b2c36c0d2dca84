"""The in-process core applied to every stream of a tick: the stages a pipeline chains.

A tick carries the input of many streams. FeatureStage runs their front ends (one batched transform for all),
ModelStage steps all of them in ONE batched LSTM call through a SequenceBatcher, DecodeStage runs their
BackEnds. A stream sees exactly the calls it would see alone, so it gets the same events with one stream or
many, in this process (stream.pipeline.LocalPipeline) or in Ray actors (stream.distributed). Bad input fails
its own stream only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np
import torch

from models.decoding import DecodeOptions
from models.errors import InputError, one_line
from models.frontend import Extractor, FrontEnd, extract_all
from models.model import AcousticModel

from .backend import BackEnd
from .batcher import SequenceBatcher, SlotsFull
from .errors import Kind, StreamError
from .messages import Chunk, Chunks, Frames, Key, Packed, Probs, Update
from .snapshot import StreamState
from .tick_decoding import accept_many

log = logging.getLogger(__name__)


class FeatureStage:
    """Front ends of many streams: a tick's chunks -> model-ready frames. Bad input fails one stream."""

    def __init__(self, extractor: Extractor):
        self.extractor = extractor
        self.fronts: dict[Key, FrontEnd] = {}
        self.gone: OrderedDict[Key, str] = OrderedDict()  # recently dropped streams and why

    def process(self, chunks: dict[Key, Chunk] | Chunks) -> Frames:
        if isinstance(chunks, Chunks):
            chunks = chunks.unpack()
        out = Frames({})
        keys, fronts, inputs, lasts = [], [], [], []
        for key, chunk in chunks.items():
            try:
                if chunk.rate is not None:
                    self._open(key, chunk, out)
                front = self.fronts.get(key)
                if front is None:
                    raise InputError(self.gone.pop(key, "stream is not open"))
            except Exception as e:  # one stream's bad input must not fail the others
                self._fail(key, e, out)
                continue
            keys.append(key)
            fronts.append(front)
            inputs.append(chunk.data)
            lasts.append(chunk.last)
        snap = []
        for key, front, last, frames in zip(keys, fronts, lasts, extract_all(self.extractor, fronts, inputs, lasts)):
            if isinstance(frames, Exception):
                self._fail(key, frames, out)
                continue
            out.features[key] = frames
            if last:
                del self.fronts[key]
                out.closed.append(key)
            elif chunks[key].snapshot:
                snap.append((key, front))
        for key, front in snap:
            if (state := front.snapshot()) is not None:
                out.snapshots[key] = state
        return out

    def _fail(self, key: Key, e: BaseException, out: Frames) -> None:
        self.fronts.pop(key, None)
        if key in out.opened:
            out.opened.remove(key)
        out.restores.pop(key, None)
        out.options.pop(key, None)
        out.errors[key] = _error(e)

    def _open(self, key: Key, chunk: Chunk, out: Frames) -> None:
        front = self.extractor.open(chunk.rate, chunk.channels)
        if chunk.restore is not None:
            front.restore(chunk.restore.front)
            out.restores[key] = chunk.restore
        if chunk.options is not None:
            out.options[key] = chunk.options
        self.fronts[key] = front
        out.opened.append(key)

    def drop(self, reasons: dict[Key, str]) -> None:
        for key, why in reasons.items():
            if self.fronts.pop(key, None) is not None:
                self.gone[key] = why
        while len(self.gone) > 10_000:
            self.gone.popitem(last=False)


@dataclass(eq=False)
class _Request:
    """One producer's tick at the model: done when every stream of it has been stepped."""

    producer: Hashable
    frames: Frames
    log_probs: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)  # stream -> (front end's, model's state) after this request
    remaining: int = 0


@dataclass
class _Queued:
    """A stream's part of one request, waiting for the next step; `frames` None: the stream failed."""

    request: _Request
    frames: torch.Tensor | None
    closes: bool


class ModelStage:
    """A SequenceBatcher over queued requests: every stream that has frames steps in one LSTM call per tick.

    Requests (ticks of producers) queue per stream, in order; a tick admits new streams to slots, concatenates
    each stream's queued frames, steps all streams together and scatters the log-probabilities back per request.
    Producers `reserve` a slot before a stream's first chunk: past max_slots a new stream waits at its producer
    (backpressure) instead of blocking a tick that other streams share.
    """

    def __init__(self, model: AcousticModel, slots: int = 64, max_slots: int = 4096, idle_timeout: float | None = None):
        self.batcher = SequenceBatcher(model, slots=slots, max_slots=max_slots, idle_timeout=idle_timeout)
        self.stack, self.n_tokens = model.cfg.stack, model.cfg.n_tokens
        self._queue: dict[Key, list[_Queued]] = {}
        self._opening: set = set()
        self._restoring: dict = {}  # stream -> the model State it opens at (failover)
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
        self._restoring.update({k: st.model for k, st in frames.restores.items()})
        for key, x in frames.features.items():
            self._queue.setdefault(key, []).append(_Queued(req, x, key in closed))
            req.remaining += 1
        for key in frames.errors:  # a failed stream gives up its slot, after its earlier frames
            self._reserved.discard(key)
            if key in self.batcher or key in self._queue:
                self._queue.setdefault(key, []).append(_Queued(req, None, True))
                req.remaining += 1
        if not req.remaining:
            self._ready.append(req)
        return req

    def tick(self) -> list[_Request]:
        """One batched LSTM call for every queued stream that holds or gets a slot; -> completed requests."""
        touched, self._ready = self._ready, []
        taken = self._admit(touched)
        inputs = {}
        for key, items in taken.items():
            xs = [q.frames for q in items if q.frames is not None]
            if xs:
                inputs[key] = xs[0] if len(xs) == 1 else torch.cat(xs)
        outputs = self.batcher.step(inputs) if inputs else {}
        self.calls += bool(inputs)
        self._scatter(taken, outputs, touched)
        return [r for r in dict.fromkeys(touched) if r.remaining == 0]

    def _admit(self, touched: list[_Request]) -> dict[Key, list[_Queued]]:
        """Take every queued stream that holds a slot or gets one now; fail those that cannot be stepped."""
        taken = {}
        for key in list(self._queue):
            if key not in self.batcher:
                why = None
                if key not in self._opening:
                    why = StreamError(Kind.INPUT, "stream is not open (finished, failed or expired)")
                else:
                    self._opening.discard(key)
                    self._reserved.discard(key)
                    try:
                        self.batcher.start(key, self._restoring.pop(key, None))  # cannot fail when reserved
                    except SlotsFull as e:
                        why = StreamError(Kind.OVERLOADED, one_line(e))
                if why is not None:
                    for q in self._queue.pop(key):
                        q.request.errors[key] = why
                        q.request.remaining -= 1
                        touched.append(q.request)
                    continue
            taken[key] = self._queue.pop(key)
        return taken

    def _scatter(self, taken: dict[Key, list[_Queued]], outputs: dict, touched: list[_Request]) -> None:
        """Each request gets its own steps of each stream's log-probabilities; closed streams free their slot."""
        for key, items in taken.items():
            at = 0
            for q in items:
                if q.frames is not None:
                    n, out = q.frames.shape[0] // self.stack, outputs[key]
                    q.request.log_probs[key] = out if at == 0 and n == out.shape[0] else out[at : at + n]
                    at += n
                q.request.remaining -= 1
                touched.append(q.request)
            last = items[-1]
            if last.closes:
                self.batcher.end(key)
            elif key in last.request.frames.snapshots:  # (asked of an earlier request: later frames are in the state)
                last.request.snapshots[key] = (last.request.frames.snapshots[key], self.batcher.snapshot(key))

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
            snapshots=req.snapshots,
            restores={k: st.back for k, st in req.frames.restores.items()},
            options=req.frames.options,
        )

    def stats(self) -> dict:
        b = self.batcher
        return {"active": b.active, "reserved": len(self._reserved), "slots": b.slots, "max_slots": b.max_slots,
                "queued": len(self._queue), "lstm_calls": self.calls, "expired": self.expired_total}


def shard_of(key: Key, shards: int) -> int:
    """Which of `shards` equal parts a stream falls to: by its number (an Ingest's keys count up), so balanced."""
    return (key[1] if isinstance(key, tuple) else hash(key)) % shards


class DecodeStage:
    """BackEnds of many streams: a tick's log-probabilities -> each stream's partial and final events.

    Decoding (beam search above all) is the costliest stage per stream, so it can be split: stage
    `shard` of `shards` handles the streams whose number falls to it. `make_backend(options)` makes a stream's
    BackEnd: with the stream's own DecodeOptions (from its opening chunk), or None for the pipeline's.
    """

    def __init__(self, make_backend: Callable[[DecodeOptions | None], BackEnd], shard: int = 0, shards: int = 1):
        self.make_backend = make_backend
        self.shard, self.shards = shard, shards
        self.backs: dict = {}

    def mine(self, key: Key) -> bool:
        return self.shards == 1 or shard_of(key, self.shards) == self.shard

    def process(self, probs: Probs) -> dict[Key, Update]:
        updates: dict[Key, Update] = {}
        closed = set(probs.closed)
        keys, backs, spans, at = [], [], [], 0
        for key, n in zip(probs.log_probs.keys, probs.log_probs.lengths):
            at += n
            if not self.mine(key):
                continue
            try:
                if key in probs.options or key in probs.restores:  # (a stream opens: with its own options or not)
                    self.backs[key] = back = self.make_backend(probs.options.get(key))
                    if key in probs.restores:
                        back.restore(probs.restores[key])
                backs.append(self.backs.get(key) or self.backs.setdefault(key, self.make_backend(None)))
                keys.append(key)
                spans.append((at - n, n))
            except Exception as e:
                self.backs.pop(key, None)
                updates[key] = Update([], True, _error(e))
        data = torch.from_numpy(np.require(probs.log_probs.data, requirements="W"))  # Ray hands out read-only views
        for key, back, events in zip(keys, backs, accept_many(backs, data, spans)):
            if isinstance(events, Exception):  # (its decoding failed: the stream alone ends)
                self.backs.pop(key, None)
                updates[key] = Update([], True, _error(events))
                continue
            try:
                if key in closed:
                    events += self.backs.pop(key).finish()
                if key in probs.snapshots:
                    updates[key] = Update(events, snapshot=StreamState(*probs.snapshots[key], back.snapshot()))
                elif events or key in closed:  # nothing to say about most streams in most ticks
                    updates[key] = Update(events, done=key in closed)
            except Exception as e:
                self.backs.pop(key, None)
                updates[key] = Update([], True, _error(e))
        for key, why in probs.errors.items():
            if self.mine(key):
                self.backs.pop(key, None)
                updates[key] = Update(updates[key].events if key in updates else [], True, why)
        self.drop(probs.expired)
        for key, why in probs.expired.items():
            if self.mine(key):
                updates[key] = Update([], True, StreamError(Kind.EXPIRED, why))
        return updates

    def drop(self, reasons: dict[Key, str]) -> None:
        for key in reasons:
            self.backs.pop(key, None)


def _error(e: BaseException) -> StreamError:
    """A stage's exception for one stream: bad input (an InputError, or a decoding option it cannot take: both are
    ValueErrors) or a bug."""
    kind = Kind.INPUT if isinstance(e, ValueError) else Kind.INTERNAL
    return StreamError(kind, one_line(e))
