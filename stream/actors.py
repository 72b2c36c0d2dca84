"""The recognizer on Ray: features, a batched acoustic model and decoding as actors, fed once per tick.

Audio enters through an `Ingest` in the process where it arrives (a microphone client, the batch
driver, the benchmark): one message per tick carries the chunks of all its streams down a chain of
three actors on one node - features (FrontEnds), the acoustic model (a SequenceBatcher; its tick loop
merges whatever every producer has sent into one batched LSTM call) and decoding (BackEnds). Ray thus
costs three messages per tick, not per stream, and each actor runs a stage of the in-process core
(stream.stages), so a stream gets exactly a Session's events.

Ray's token authentication stays on: see `init_ray`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Hashable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from models.audio import AudioError
from models.checkpoint import DEFAULT_MODEL, resolve_model
from models.decoding import DecodeOptions

from .ingest import Ingest, PipelineFailed, StreamExpired
from .pipeline import EndpointConfig, Event
from .session import Recognizer
from .stages import (
    Audio, DecodeStage, FeatureStage, Frames, Key, ModelStage, PipelineSpec, Probs, Update, _reason, _Request,
)

log = logging.getLogger(__name__)

__all__ = ["RayRecognizer", "RaySession", "RayPipeline", "Ingest", "PipelineFailed", "StreamExpired", "init_ray"]


# ---------------------------------------------------------------------------------------------
# Actors: one stage each.


class _ActorInfo:
    """Where an actor runs: its node (placement checks) and process (the benchmark reads its CPU time)."""

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()


class _StageActor(_ActorInfo):
    """One stage of the core in its own process; 1 torch thread, since the stages run side by side."""

    stage: FeatureStage | DecodeStage

    def process(self, batch: Audio | Probs) -> Frames | dict[Key, Update]:
        return self.stage.process(batch)

    def drop(self, reasons: dict[Key, str]) -> None:
        self.stage.drop(reasons)


class FeatureActor(_StageActor):
    def __init__(self, spec: PipelineSpec, checkpoint: bytes):
        torch.set_num_threads(1)
        self.stage = FeatureStage(spec.recognizer(checkpoint))


class DecodeActor(_StageActor):
    def __init__(self, spec: PipelineSpec, checkpoint: bytes, shard: int = 0):
        torch.set_num_threads(1)
        self.stage = DecodeStage(spec.recognizer(checkpoint), shard, spec.decoders)


class ModelActor(_ActorInfo):
    """Owns the slot-indexed state on its device; a tick loop steps whatever all producers have sent.

    While one LSTM call runs, the next ticks queue up, so the batch grows with the load. Ticks are put
    back in each producer's order (async actors may start calls out of order). Streams idle past the
    timeout are expired on a timer; the features and decoder actors drop them too.
    """

    def __init__(self, spec: PipelineSpec, checkpoint: bytes, peers: list):
        torch.set_num_threads(1)
        from .session import default_device

        model = spec.recognizer(checkpoint, device=spec.device or default_device()).model
        self.stage = ModelStage(model, spec.slots, spec.max_slots, spec.idle_timeout)
        self.peers = peers
        self.idle_timeout = spec.idle_timeout
        self._order: dict[Hashable, list] = {}  # producer -> [next seq, {seq: (frames, future)}]
        self._futures: dict[_Request, asyncio.Future] = {}
        self._wake: asyncio.Event | None = None

    async def step(self, producer: Hashable, seq: int, frames: Frames) -> Probs:
        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
            loop.create_task(self._run())
        future = loop.create_future()
        order = self._order.setdefault(producer, [0, {}])
        order[1][seq] = (frames, future)
        while order[0] in order[1]:
            ready, fut = order[1].pop(order[0])
            order[0] += 1
            self._futures[self.stage.submit(ready, producer)] = fut
        self._wake.set()
        return await future

    async def _run(self) -> None:
        period = self.idle_timeout / 4 if self.idle_timeout else None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), period)
            except asyncio.TimeoutError:
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


_REMOTE: dict[type, object] = {}


def _remote(cls: type):
    """Ray actor classes, made once per process (and only when Ray is used)."""
    if cls not in _REMOTE:
        import ray

        _REMOTE[cls] = ray.remote(cls)
    return _REMOTE[cls]


class RayPipeline:
    """A features actor, a model actor and `spec.decoders` decoder actors on one node; `submit` chains them
    for one tick (the decoders each take their share of the tick's streams)."""

    def __init__(self, spec: PipelineSpec, checkpoint, node_id: str | None = None):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts: dict = {"num_cpus": 0, "max_restarts": 0}
        if node_id is not None:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        gpu = {"num_gpus": 1} if (spec.device or "").startswith("cuda") else {}
        self.features = _remote(FeatureActor).options(**opts).remote(spec, checkpoint)
        self.decoders = [_remote(DecodeActor).options(**opts).remote(spec, checkpoint, i) for i in range(spec.decoders)]
        self.model = _remote(ModelActor).options(**opts, **gpu).remote(spec, checkpoint, [self.features, *self.decoders])
        self.node_id = node_id

    @property
    def actors(self) -> list:
        return [self.features, self.model, *self.decoders]

    def wait_ready(self, timeout: float = 120.0) -> str:
        """Block until the actors are up (model loaded); -> the node they run on."""
        import ray

        nodes = ray.get([a.node.remote() for a in self.actors], timeout=timeout)
        self.node_id = nodes[1]
        return self.node_id

    def reserve(self, keys: list) -> list:
        import ray

        return ray.get(self.model.reserve.remote(keys))

    def submit(self, producer: Hashable, seq: int, chunks: dict[Key, Chunk]) -> list:
        """-> the tick's handle: one result per decoder."""
        frames = self.features.process.remote(Audio.pack(chunks))
        probs = self.model.step.remote(producer, seq, frames)
        return [d.process.remote(probs) for d in self.decoders]

    def ready(self, handles: list, timeout: float | None) -> int:
        """How many of the oldest ticks are done, waiting up to `timeout` (None: forever) for the first."""
        import ray

        ray.wait(handles[0], num_returns=len(handles[0]), timeout=timeout, fetch_local=True)
        refs = [r for h in handles for r in h]
        done = set(ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)[0])
        n = 0
        while n < len(handles) and all(r in done for r in handles[n]):
            n += 1
        return n

    def get(self, handle: list) -> dict[Key, Update]:
        import ray

        updates: dict[Key, Update] = {}
        for part in ray.get(handle):
            updates.update(part)
        return updates

    def stats(self) -> dict:
        import ray

        return ray.get(self.model.stats.remote())

    def pids(self) -> list[int]:
        """The actors' processes (the benchmark reads their CPU time)."""
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:
                pass


def checkpoint_bytes(model: str | Path = DEFAULT_MODEL) -> bytes:
    return resolve_model(model).read_bytes()


# ---------------------------------------------------------------------------------------------
# Ray itself: start or join, with token authentication on.


def enable_token_auth() -> None:
    """Keep Ray's token authentication on for clusters we start and send the token to clusters we join.

    Ray reads the token from RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
    An explicit RAY_AUTH_MODE set by the user is respected.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config

        Config.initialize("")  # this process may have read the mode already
    except Exception:
        pass


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray on 127.0.0.1; -> True if started.

    A new local Ray creates ~/.ray/auth_token if there is none; joining needs the head's token.
    """
    import ray

    if ray.is_initialized():
        return False
    enable_token_auth()
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        try:
            ray.init(address=address, **quiet)
        except Exception as e:
            if "auth" in str(e).lower() or "token" in str(e).lower():
                raise RuntimeError(
                    f"cannot join Ray at {address}: {_reason(e)}. Its token authentication needs the head "
                    "node's token: run `ray get-auth-token` there and put it in RAY_AUTH_TOKEN or ~/.ray/auth_token"
                ) from None
            raise
        return False
    with loopback_only():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    return True


@contextmanager
def loopback_only():
    """Let Ray bind and dial 127.0.0.1 as it does on macOS (on Linux it swaps loopback for the LAN address):
    a Ray started for this machine alone is then not reachable from the network."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def alive_nodes() -> list[str]:
    import ray

    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))


# ---------------------------------------------------------------------------------------------
# The Session API on Ray (the microphone's `listen --ray` uses it).


class RayRecognizer:
    """Open streaming sessions whose audio is recognised by the Ray pipeline; same API as Recognizer.session."""

    def __init__(self, local: Recognizer, pipeline: RayPipeline, ingest: Ingest, started_ray: bool):
        self.local = local  # the model's metadata (rates, tokens); it does no recognition here
        self.pipeline = pipeline
        self.ingest = ingest
        self.started_ray = started_ray

    @classmethod
    def connect(
        cls,
        model: str | Path = DEFAULT_MODEL,
        address: str | None = None,
        device: str | None = None,
        options: DecodeOptions | None = None,
        endpoint: EndpointConfig = EndpointConfig(),
        idle_timeout: float | None = None,
        window: int = 4,
        min_chunk: float = 0.1,
        overflow: str = "block",
        num_cpus: int | None = None,
    ) -> RayRecognizer:
        """Start (or join `address`) Ray and place one pipeline on this node; the model ships as bytes."""
        import ray

        local = Recognizer.load(model, device="cpu", options=options, endpoint=endpoint)
        started = init_ray(address, num_cpus)
        spec = PipelineSpec(device=device, options=options, endpoint=endpoint, idle_timeout=idle_timeout)
        here = ray.get_runtime_context().get_node_id()
        pipeline = RayPipeline(spec, ray.put(checkpoint_bytes(model)), node_id=here)
        pipeline.wait_ready()
        ingest = Ingest(pipeline, min_chunk=min_chunk, window=window, overflow=overflow)
        return cls(local, pipeline, ingest, started)

    @property
    def sample_rate(self) -> int:
        return self.local.sample_rate

    @property
    def step_seconds(self) -> float:
        return self.local.step_seconds

    def session(self, sample_rate: int | None = None, channels: int | None = None) -> RaySession:
        return RaySession(self.ingest, sample_rate or self.sample_rate, channels)

    def stats(self) -> dict:
        return {**self.ingest.stats.to_dict(), "model": self.pipeline.stats()}

    def close(self) -> None:
        self.pipeline.close()
        if self.started_ray:
            import ray

            ray.shutdown()

    def __enter__(self) -> RayRecognizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RaySession:
    """One stream through the Ray pipeline: `accept` chunks of any size, then `finish`; both return events.

    With overflow="block" (default) a call returns once the pipeline has answered for the audio it
    sent, so the events are those a Session would return. With overflow="drop" it never waits: events
    arrive on later calls and `finish` returns the rest.
    """

    def __init__(self, ingest: Ingest, sample_rate: int, channels: int | None = None):
        self.ingest = ingest
        self.key = ingest.open(sample_rate, channels)
        self.closed = False

    def accept(self, samples: np.ndarray) -> list[Event]:
        if self.closed:
            raise RuntimeError("session is finished")
        self.ingest.push(self.key, samples)
        return self._pump(final=False)

    def finish(self) -> list[Event]:
        if self.closed:
            raise RuntimeError("session is finished")
        self.ingest.finish(self.key)
        events = self._pump(final=True)
        self.closed = True
        return events

    def _pump(self, final: bool) -> list[Event]:
        """Send what is ready; when blocking, wait (without the ingest's lock, so other sessions' audio
        can join the next ticks) until the pipeline has answered for all of it."""
        ing = self.ingest
        blocking = final or ing.overflow == "block"
        while True:
            with ing.lock:
                while ing.ready(self.key) and ing.submit(block=False):
                    pass
                ing.collect(timeout=0)
                if not (blocking and ing.busy(self.key)):
                    events, state = ing.take(self.key)
                    break
                oldest = ing.inflight[0].handle if ing.inflight else None
            if oldest is None:
                time.sleep(0.005)  # waiting for a model slot
            else:
                ing.pipeline.ready([oldest], 0.05)
        if state.error:
            self.closed = True
            raise (StreamExpired if state.expired else AudioError)(state.error)
        return events
