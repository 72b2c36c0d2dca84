"""The pipeline on Ray: features, the batched acoustic model and decoding as actors, fed once per tick.

Input enters through an `Ingest` in the process where it arrives (a microphone client, the batch driver, the
benchmark): one message per tick carries the chunks of all its streams down a chain of actors on one node -
features (front ends), the acoustic model (a SequenceBatcher; its tick loop merges whatever every producer has
sent into one batched LSTM call) and decoding (BackEnds). Ray thus costs three messages per tick, not per
stream, and each actor runs a stage of the in-process core (stream.stages), so a stream gets exactly a
Session's events.

A tick's Future is made of its decoders' ObjectRefs (`ObjectRef.future()`): Ray completes such a Future with the
error `ray.get` would raise (a dead actor's `ActorDiedError` as it is, a task's error as an instance of its
cause), so a lost worker reaches the ingest as the same exception as before, and `restart` knows it by its class.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from models.errors import one_line

from ..futures import merged
from ..messages import Chunk, Chunks, Frames, Key, Probs, Update
from ..pipeline import PipelineSpec
from ..session import Recognizer, default_device
from ..stages import DecodeStage, FeatureStage, ModelStage

log = logging.getLogger(__name__)


def recognizer_from_bytes(spec: PipelineSpec, checkpoint: bytes, device: str | None = "cpu") -> Recognizer:
    """The checkpoint travels as bytes, so worker nodes need the code but not the model file."""
    return Recognizer.load(checkpoint, device=device, options=spec.options, endpoint=spec.endpoint)


class _ActorInfo:
    """Where an actor runs: its node (placement checks) and process (the benchmark reads its CPU time)."""

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()


class FeatureActor(_ActorInfo):
    def __init__(self, spec: PipelineSpec, checkpoint: bytes):
        torch.set_num_threads(1)  # the stages run side by side on the node's cores
        self.stage = FeatureStage(recognizer_from_bytes(spec, checkpoint).extractor)

    def process(self, chunks: Chunks) -> Frames:
        return self.stage.process(chunks)

    def drop(self, reasons: dict[Key, str]) -> None:
        self.stage.drop(reasons)


class DecodeActor(_ActorInfo):
    def __init__(self, spec: PipelineSpec, checkpoint: bytes, shard: int = 0):
        torch.set_num_threads(1)
        self.stage = DecodeStage(recognizer_from_bytes(spec, checkpoint).backend, shard, spec.decoders)

    def process(self, probs: Probs) -> dict[Key, Update]:
        return self.stage.process(probs)

    def drop(self, reasons: dict[Key, str]) -> None:
        self.stage.drop(reasons)


@dataclass
class _Order:
    """One producer's ticks, put back in its order (an async actor may start calls out of order)."""

    next_seq: int = 0
    waiting: dict = field(default_factory=dict)  # seq -> (frames, future)


class ModelActor(_ActorInfo):
    """Owns the slot-indexed state on its device; a tick loop steps whatever all producers have sent.

    While one LSTM call runs, the next ticks queue up, so the batch grows with the load. Streams idle past the
    timeout are expired on a timer; the features and decoder actors drop them too.
    """

    def __init__(self, spec: PipelineSpec, checkpoint: bytes, peers: list):
        torch.set_num_threads(1)
        model = recognizer_from_bytes(spec, checkpoint, device=spec.device or default_device()).model
        self.stage = ModelStage(model, spec.slots, spec.max_slots, spec.idle_timeout)
        self.peers = peers
        self.idle_timeout = spec.idle_timeout
        self._order: dict[Hashable, _Order] = {}
        self._futures: dict = {}  # request -> the future its producer awaits
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None

    async def step(self, producer: Hashable, seq: int, frames: Frames) -> Probs:
        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
            self._loop_task = loop.create_task(self._run())
        future = loop.create_future()
        order = self._order.setdefault(producer, _Order())
        order.waiting[seq] = (frames, future)
        while order.next_seq in order.waiting:
            ready, fut = order.waiting.pop(order.next_seq)
            order.next_seq += 1
            self._futures[self.stage.submit(ready, producer)] = fut
        self._wake.set()
        return await future

    async def _run(self) -> None:
        period = self.idle_timeout / 4 if self.idle_timeout else None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), period)
            except TimeoutError:
                pass
            self._wake.clear()
            await asyncio.sleep(0)  # let calls that have already arrived join this tick
            try:
                done = self.stage.tick()
                expired = self.stage.expire()
            except Exception as e:  # a bug, not bad input: fail the waiting ticks rather than hang them
                log.exception("model tick failed")
                for fut in self._futures.values():
                    fut.set_exception(e)
                self._futures.clear()
                continue
            for req in done:
                self._futures.pop(req).set_result(self.stage.result(req))
            if expired:
                for peer in self.peers:
                    peer.drop.remote(expired)
            if self.stage.pending:
                if not done:
                    await asyncio.sleep(0.005)  # every slot taken: wait for one to free
                self._wake.set()

    async def reserve(self, keys: list) -> list:
        return self.stage.reserve(keys)

    async def stats(self) -> dict:
        return self.stage.stats()

    async def stop(self) -> None:
        """End the tick loop before the actor goes (a killed actor with a pending task logs 'Task was destroyed')."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None


def lost_worker_errors() -> tuple[type, ...]:
    """Ray's errors for an actor, its process or its node gone (not a bug in a stage: those are not retried)."""
    from ray import exceptions as ex

    return (ex.RayActorError, ex.ActorUnavailableError, ex.ObjectLostError, ex.NodeDiedError, ex.WorkerCrashedError)


STANDBY_DELAY = 10.0  # seconds after a restart before a new standby is started (see _keep_standby)

_REMOTE: dict[type, object] = {}


def _remote(cls: type):
    """Ray actor classes, made once per process (and only when Ray is used)."""
    if cls not in _REMOTE:
        import ray

        _REMOTE[cls] = ray.remote(cls)
    return _REMOTE[cls]


@dataclass
class _Actors:
    """One set of the pipeline's actors."""

    features: object
    model: object
    decoders: list

    @property
    def all(self) -> list:
        return [self.features, self.model, *self.decoders]


class RayPipeline:
    """A features actor, a model actor and `spec.decoders` decoder actors on one node; `submit` chains them
    for one tick (the decoders each take their share of the tick's streams). A `Pipeline`.

    With `spec.standby`, a second set of actors waits warm (model loaded), on another node if there is one:
    `restart` after a lost worker swaps it in at once, instead of starting processes and loading the model (~10 s
    on 2 busy cores).
    """

    restartable = True

    def __init__(self, spec: PipelineSpec, checkpoint, node_id: str | None = None):
        self.spec, self.checkpoint = spec, checkpoint
        self.restarts = 0
        self._respawn_at = 0.0
        self.node_id = node_id
        self.active = self._spawn(node_id)
        self.standby = self._spawn(self._standby_node()) if spec.standby else None

    def _spawn(self, node_id: str | None) -> _Actors:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        spec, checkpoint = self.spec, self.checkpoint
        opts: dict = {"num_cpus": 0, "max_restarts": 0}  # a lost actor is replaced by `restart`, with its streams
        if node_id is not None:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        gpu = {"num_gpus": 1} if (spec.device or "").startswith("cuda") else {}
        features = _remote(FeatureActor).options(**opts).remote(spec, checkpoint)
        decoders = [_remote(DecodeActor).options(**opts).remote(spec, checkpoint, i) for i in range(spec.decoders)]
        model = _remote(ModelActor).options(**opts, **gpu).remote(spec, checkpoint, [features, *decoders])
        return _Actors(features, model, decoders)

    def restart(self, error: BaseException, timeout: float = 120.0) -> bool:
        """A lost actor or node: every actor replaced (they hold no stream once the producer reopens its streams),
        by the warm standby if it is alive, else by new ones on the same node if it is alive, else where Ray can."""
        import ray

        if not isinstance(error, lost_worker_errors()):
            return False
        log.warning("pipeline on node %s lost a worker (%s): restarting it", self.node_id, one_line(error))
        _stop(self.active.all, timeout=1.0)
        if self.standby is not None and _alive(self.standby.all):
            self.active = self.standby
        else:
            if self.standby is not None:
                _stop(self.standby.all, timeout=1.0)
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            self.active = self._spawn(self.node_id if self.node_id in alive else None)
        self.wait_ready(timeout)
        self.standby = None
        self._respawn_at = time.monotonic() + STANDBY_DELAY
        self.restarts += 1
        return True

    def warm(self, timeout: float = 120.0) -> bool:
        """Start the standby now if there is none, and wait until it is ready; -> whether it is."""
        if not self.spec.standby:
            return False
        if self.standby is None:
            self.standby = self._spawn(self._standby_node())
        return _alive(self.standby.all, timeout)

    def _standby_node(self) -> str | None:
        """Another node than the active actors' if the cluster has one (a lost node then takes only one set with
        it), else theirs."""
        import ray

        others = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive") and n["NodeID"] != self.node_id)
        return others[0] if others and self.node_id is not None else self.node_id

    def _keep_standby(self) -> None:
        """A new standby once the streams have replayed: its four processes' start and model load take ~8
        CPU-seconds, which on 2 cores the replay needs (not measured apart: the first trials changed this and
        the snapshot point together, next event after a kill 3.3-5.5 s -> 0.9-1.1 s)."""
        if self.spec.standby and self.standby is None and time.monotonic() >= self._respawn_at:
            self.standby = self._spawn(self._standby_node())

    @property
    def features(self):
        return self.active.features

    @property
    def model(self):
        return self.active.model

    @property
    def decoders(self) -> list:
        return self.active.decoders

    @property
    def actors(self) -> list:
        return self.active.all

    def wait_ready(self, timeout: float = 120.0) -> str:
        """Block until the actors are up (model loaded); -> the node they run on."""
        import ray

        nodes = ray.get([a.node.remote() for a in self.actors], timeout=timeout)
        self.node_id = nodes[1]
        return self.node_id

    def reserve(self, keys: list) -> list:
        import ray

        return ray.get(self.model.reserve.remote(keys))

    def submit(self, producer: Hashable, seq: int, chunks: dict[Key, Chunk]) -> Future[dict[Key, Update]]:
        """-> the tick's Future: every decoder's share of the updates (it fails as soon as one of them does)."""
        self._keep_standby()
        frames = self.features.process.remote(Chunks.pack(chunks))
        probs = self.model.step.remote(producer, seq, frames)
        return merged([d.process.remote(probs).future() for d in self.decoders])

    def stats(self) -> dict:
        import ray

        return ray.get(self.model.stats.remote())

    def pids(self) -> list[int]:
        import ray

        standby = self.standby.all if self.standby is not None else []  # idle, but its memory counts
        return ray.get([a.pid.remote() for a in self.actors + standby])

    def close(self, timeout: float = 10.0) -> None:
        _stop(self.active.all, timeout)
        if self.standby is not None:
            _stop(self.standby.all, timeout)


def _stop(actors: list, timeout: float) -> None:
    """End the model's tick loop (a killed actor with a pending task logs 'Task was destroyed'), then kill them all."""
    import ray

    try:
        ray.get(actors[1].stop.remote(), timeout=timeout)
    except Exception:  # already dead: nothing left to stop
        pass
    for actor in actors:
        try:
            ray.kill(actor)
        except Exception:
            pass


def _alive(actors: list, timeout: float = 5.0) -> bool:
    import ray

    try:
        ray.get([a.node.remote() for a in actors], timeout=timeout)
        return True
    except Exception:
        return False
