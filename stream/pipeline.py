"""The pipeline: the core's three stages chained for every stream of a tick, behind one protocol.

`Pipeline` is what a producer (a Session, the Ingest of a microphone client, the batch driver) talks to. Its
implementations are `LocalPipeline` here (the stages called one after the other in this process),
`stream.process.ProcessPipeline` (LocalPipelines in child processes) and `stream.distributed.actors.RayPipeline`
(the same stages in Ray actors); no caller tells them apart.

Invariant: `submit` returns a `concurrent.futures.Future` of the tick's updates, which fails with the error that
undid the tick (a lost worker's among them: the ingest hands it to `restart`); the ingest alone waits on these
Futures (`concurrent.futures.wait`, `Future.done`, `Future.result`), so no pipeline reinvents waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from models.decoding import DecodeOptions
from models.frontend import Extractor
from models.model import AcousticModel

from .backend import BackEnd, EndpointConfig
from .futures import completed
from .messages import Chunk, Key, Update
from .stages import DecodeStage, FeatureStage, ModelStage


@dataclass(frozen=True)
class PipelineSpec:
    """What every stage needs to rebuild the recognizer: options, the model's device, the batcher's limits."""

    device: str | None = None  # for the model; None: cuda if its node has one
    options: DecodeOptions | None = None  # None: the decoding the checkpoint recommends
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    slots: int = 64
    max_slots: int = 4096
    idle_timeout: float | None = None
    decoders: int = 2  # decoder actors per Ray pipeline, each with a share of the streams
    standby: bool = False  # a warm second set of a Ray pipeline's actors, swapped in when a worker is lost


class Pipeline(Protocol):
    """Ticks of many streams' chunks in, each stream's events out, in order per producer."""

    node_id: str | None  # where the model runs ("local" in this process)
    restartable: bool  # whether `restart` can replace lost workers (an Ingest then keeps what failover needs)

    def reserve(self, keys: list) -> list:
        """Ask model slots for new streams; -> those granted (the rest ask again later: backpressure)."""
        ...

    def submit(self, producer: Hashable, seq: int, chunks: dict[Key, Chunk]) -> Future[dict[Key, Update]]:
        """Send one tick (the producer's `seq`-th); -> a Future of every stream's update. A call that cannot even
        be sent (its worker known lost) may raise at once instead."""
        ...

    def restart(self, error: BaseException) -> bool:
        """After `error` from a call: if it says a worker was lost, replace the pipeline's workers with fresh ones
        (they hold no stream: the producer reopens its streams) and -> True; otherwise -> False."""
        ...

    def stats(self) -> dict:
        ...

    def pids(self) -> list[int]:
        """Processes other than this one that do its work (the benchmarks read their CPU time)."""
        ...

    def close(self) -> None:
        ...


class LocalPipeline:
    """The three stages called one after the other in this process; a tick is done when `submit` returns (its
    Future already completed; a stage's failure raises from `submit` itself, as it always did)."""

    def __init__(
        self,
        extractor: Extractor,
        model: AcousticModel,
        make_backend: Callable[[DecodeOptions | None], BackEnd],
        spec: PipelineSpec = PipelineSpec(),
    ):
        self.features = FeatureStage(extractor)
        self.model = ModelStage(model, spec.slots, spec.max_slots, spec.idle_timeout)
        self.decoder = DecodeStage(make_backend)
        self.node_id = "local"
        self.restartable = False  # nothing here can be lost without this process

    def submit(self, producer: Hashable, seq: int, chunks: dict[Key, Chunk]) -> Future[dict[Key, Update]]:
        return completed(self.step(producer, seq, chunks))

    def step(self, producer: Hashable, seq: int, chunks: dict[Key, Chunk]) -> dict[Key, Update]:
        """One tick through the stages, here and now: -> every stream's update."""
        req = self.model.submit(self.features.process(chunks), producer)
        self.model.tick()
        self.features.drop(self.model.expire())
        return self.decoder.process(self.model.result(req))

    def reserve(self, keys: list) -> list:
        return self.model.reserve(keys)

    def restart(self, error: BaseException) -> bool:
        return False

    def stats(self) -> dict:
        return self.model.stats()

    def pids(self) -> list[int]:
        return []

    def close(self) -> None:
        pass
