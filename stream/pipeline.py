"""The pipeline: the core's three stages chained for every stream of a tick, behind one protocol.

`Pipeline` is what a producer (a Session, the Ingest of a microphone client, the batch driver) talks to. Its
implementations are `LocalPipeline` here (the stages called one after the other in this process),
`stream.process.ProcessPipeline` (LocalPipelines in child processes) and `stream.distributed.actors.RayPipeline`
(the same stages in Ray actors); no caller tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.decoding import DecodeOptions
from models.frontend import Extractor
from models.model import AcousticModel

from .backend import BackEnd, EndpointConfig
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

    def submit(self, producer: Hashable, seq: int, chunks: dict[Key, Chunk]) -> Any:
        """Send one tick (the producer's `seq`-th); -> a handle for `ready` / `get`."""
        ...

    def ready(self, handles: list, timeout: float | None) -> int:
        """How many of the oldest ticks are done, waiting up to `timeout` (None: forever) for the first."""
        ...

    def get(self, handle: Any) -> dict[Key, Update]:
        ...

    def wait(self, handles: list, timeout: float | None) -> None:
        """Until any of the ticks (of this or other pipelines of its kind) is done, or `timeout`."""
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
    """The three stages called one after the other in this process; a tick is done when `submit` returns."""

    def __init__(
        self, extractor: Extractor, model: AcousticModel, make_backend: Callable[[], BackEnd], spec: PipelineSpec = PipelineSpec()
    ):
        self.features = FeatureStage(extractor)
        self.model = ModelStage(model, spec.slots, spec.max_slots, spec.idle_timeout)
        self.decoder = DecodeStage(make_backend)
        self.node_id = "local"
        self.restartable = False  # nothing here can be lost without this process

    def submit(self, producer: Hashable, seq: int, chunks: dict[Key, Chunk]) -> dict[Key, Update]:
        req = self.model.submit(self.features.process(chunks), producer)
        self.model.tick()
        self.features.drop(self.model.expire())
        return self.decoder.process(self.model.result(req))

    def reserve(self, keys: list) -> list:
        return self.model.reserve(keys)

    def ready(self, handles: list, timeout: float | None) -> int:
        return len(handles)  # computed at submit

    def get(self, handle: dict[Key, Update]) -> dict[Key, Update]:
        return handle

    def wait(self, handles: list, timeout: float | None) -> None:
        pass

    def restart(self, error: BaseException) -> bool:
        return False

    def stats(self) -> dict:
        return self.model.stats()

    def pids(self) -> list[int]:
        return []

    def close(self) -> None:
        pass
