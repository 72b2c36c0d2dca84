"""The one constructor of the engine's runtimes: where a tick's stages run.

Kept apart from stream.engine so that the engine (which every session imports) imports none of the runtimes: the
Ray runtime's actors build sessions themselves. Invariant: whatever the runtime, an engine's streams read alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from models.checkpoint import DEFAULT_MODEL, Checkpoint, load_checkpoint

from .engine import Engine
from .ingest import IngestOptions
from .pipeline import PipelineSpec
from .process import ProcessPipeline
from .session import Recognizer

Runtime = Literal["thread", "process", "ray"]
RUNTIMES: tuple[str, ...] = ("thread", "process", "ray")


def create_engine(
    model: str | Path | Checkpoint = DEFAULT_MODEL,
    runtime: Runtime = "thread",
    spec: PipelineSpec = PipelineSpec(),
    ingest: IngestOptions = IngestOptions(),
    processes: int = 1,
    threads: int = 1,
    address: str | None = None,
    num_cpus: int | None = None,
) -> Engine:
    """The one constructor of the runtimes. "thread": the stages run in this process, in the thread that polls;
    "process": in `processes` child processes (`threads` torch threads each), off this process's GIL, a lost
    child replaced and its streams replayed; "ray": in Ray actors on this node (joining `address`, else starting
    Ray with `num_cpus`), a lost worker replaced likewise. `spec.options` None: the checkpoint's recommended
    decoding."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
    checkpoint = model if isinstance(model, Checkpoint) else load_checkpoint(model, spec.device or "cpu")
    if runtime == "thread":
        recognizer = Recognizer(checkpoint, spec.options, spec.endpoint)
        return Engine(checkpoint, recognizer.pipeline(spec), ingest, options=spec.options)
    if runtime == "process":
        return Engine(checkpoint, ProcessPipeline(checkpoint, spec, threads, processes), ingest, options=spec.options)
    from .distributed.cluster import start_pipeline  # (Ray is imported only for this runtime)

    if isinstance(model, Checkpoint):
        raise ValueError("the ray runtime ships the model by its name or file: give that, not a loaded checkpoint")
    cluster, pipeline = start_pipeline(model, spec, address, num_cpus)
    return Engine(checkpoint, pipeline, ingest, on_close=cluster.close, options=spec.options)
