"""The session API on Ray: `RayRecognizer` opens sessions whose input is recognised by a Ray pipeline on this
node, with the same `accept` / `finish` as in-process sessions (`rnnstream listen --ray` uses it)."""

from __future__ import annotations

from pathlib import Path

from models.checkpoint import DEFAULT_MODEL, Checkpoint, load_checkpoint
from models.decoding import DecodeOptions

from ..backend import EndpointConfig
from ..engine import Engine
from ..ingest import IngestOptions
from ..options import recommended_options
from ..pipeline import PipelineSpec
from ..shared import SharedRecognizer
from .cluster import start_pipeline


class RayRecognizer(SharedRecognizer):
    """Sessions through a Ray pipeline on this node: a SharedRecognizer that also closes the Ray it started."""

    @classmethod
    def connect(
        cls,
        model: str | Path = DEFAULT_MODEL,
        address: str | None = None,
        device: str | None = None,
        options: DecodeOptions | None = None,
        endpoint: EndpointConfig = EndpointConfig(),
        idle_timeout: float | None = None,
        ingest: IngestOptions = IngestOptions(),
        num_cpus: int | None = None,
        checkpoint: Checkpoint | None = None,
        standby: bool = True,
    ) -> RayRecognizer:
        """Start (or join `address`) Ray and place one pipeline on this node; the model ships as bytes.
        `checkpoint`: `model` already loaded (its metadata is all this process needs). Live streams survive a lost
        worker: the ingest keeps what replays them, and `standby` keeps a second set of actors warm to take over."""
        checkpoint = checkpoint or load_checkpoint(model)
        options = options if options is not None else recommended_options(checkpoint)
        spec = PipelineSpec(device=device, options=options, endpoint=endpoint, idle_timeout=idle_timeout, standby=standby)
        cluster, pipeline = start_pipeline(model, spec, address, num_cpus)
        return cls(Engine(checkpoint, pipeline, ingest, on_close=cluster.close, options=options))
