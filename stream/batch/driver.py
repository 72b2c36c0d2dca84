"""`rnnstream batch`: many files through pipelines, resumable, every input in the output exactly once.

Files are just streams: the driver reads each in large chunks and sends, per tick, one chunk of every
file in flight to a pipeline (features, model, decoder actors on one node, or the same stages in this process),
so many files share each batched LSTM call. Only the driver writes the output, one flushed record per finished
file, so a rerun after a crash skips what is already there. A pipeline whose node dies loses only unwritten
files: they are sent again, from the start, to the pipelines that remain.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from models.checkpoint import DEFAULT_MODEL, Checkpoint, load_checkpoint
from models.errors import InputError, one_line

from ..backend import Event
from ..engine import Engine
from ..errors import report
from ..formats import printable
from ..ingest import IngestOptions, PipelineFailed, StreamStatus
from ..messages import Key
from ..pipeline import Pipeline, PipelineSpec
from ..transcribe import Transcript
from .inputs import expand_inputs
from .sinks import Sink, open_sink

# ---------------------------------------------------------------------------------------------
# Workers: one engine each, fed by the driver.


@dataclass
class _File:
    path: str
    duration: float
    blocks: Iterator[np.ndarray]
    error: str | None = None
    attempts: int = 1
    events: list[Event] = field(default_factory=list)  # delivered so far
    status: StreamStatus | None = None  # once its stream is over


class Worker:
    """One engine (its pipeline on one node, or in this process) and the files it is transcribing; the driver
    reads them chunk by chunk into it."""

    def __init__(self, engine: Engine, streams: int = 64, chunk_seconds: float = 8.0):
        self.engine = engine
        self.pipeline = engine.pipeline
        self.extractor = engine.extractor  # reads the files (audio, or what the model's front end takes)
        self.streams = streams
        self.chunk_seconds = chunk_seconds
        self.files: dict[Key, _File] = {}

    @property
    def full(self) -> bool:
        return len(self.files) >= self.streams

    def add(self, path: str, attempts: int = 1) -> str | None:
        """Start a file; -> the reason it cannot be read, if so."""
        try:
            rate, channels, duration = self.extractor.info(path)
            key = self.engine.open(rate, channels)
        except InputError as e:
            return str(e)
        blocks = self.extractor.blocks(path, max(1, int(self.chunk_seconds * rate)))
        self.files[key] = _File(path, duration, blocks, attempts=attempts)
        return None

    def feed(self) -> bool:
        """Read the next chunk of every file whose previous one has gone out, and send a tick if the window has room."""
        engine = self.engine
        if not engine.has_room:
            return False
        for key, f in self.files.items():
            if f.status is not None:
                continue
            s = engine.status(key)
            if s.finishing or s.done or s.ready:  # (a short last block waits for the end of file)
                continue
            try:
                engine.push(key, next(f.blocks))
            except StopIteration:
                engine.finish(key)
            except InputError as e:  # truncated mid-file: close the stream, report the file
                f.error = str(e)
                engine.finish(key)
        try:
            return engine.send()
        except PipelineFailed:  # the fleet sees it on its next collect
            return False

    def collect(self) -> None:
        """Deliver the finished ticks to their files (PipelineFailed: the worker is lost)."""
        for key, result in self.engine.poll(send=False).items():
            f = self.files[key]
            f.events += result.events
            if result.status.over:
                f.status = result.status

    def harvest(self) -> list[tuple[_File, Transcript | None]]:
        """Files whose stream is over: (file, transcript), or (file with .error, None)."""
        out = []
        for key in [k for k, f in self.files.items() if f.status is not None]:
            f = self.files.pop(key)
            f.error = f.error or (f.status.error and f.status.error.message)
            out.append((f, None if f.error else Transcript.from_events(f.path, f.duration, f.events)))
        return out

    def abandon(self) -> list[_File]:
        """The files a dead pipeline had not finished: to be started again elsewhere."""
        return [self.files.pop(k) for k in [k for k, f in self.files.items() if f.status is None]]


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class BatchOptions:
    fmt: str = "jsonl"
    address: str | None = None  # an existing Ray cluster; None: a local Ray on this machine
    workers: int | None = None  # pipelines; None: one per node
    streams: int = 64  # files in flight per pipeline
    chunk_seconds: float = 8.0
    window: int = 2  # ticks in flight per pipeline
    in_process: bool = False  # no Ray: the same stages in this process (the baseline)
    threads: int = 1  # torch threads with in_process (more threads fight over 2 cores)
    progress: bool = True
    max_attempts: int = 3  # a file is retried on another worker this many times at most


@dataclass
class BatchSummary:
    files: int = 0  # inputs named by this run
    skipped: int = 0  # already in the output
    transcribed: int = 0
    failed: int = 0
    resubmitted: int = 0  # files restarted after their worker died
    audio_seconds: float = 0.0  # seconds of input transcribed: audio, or ink time for a pen model
    medium: str = "audio"  # what the input is (the model front end's word: "audio", "ink")
    wall_seconds: float = 0.0
    per_worker: dict = field(default_factory=dict)  # node id -> files transcribed there
    cpu_seconds: float = 0.0  # CPU time of this process and the workers' actors on this machine

    @property
    def rtfx(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0


def run_batch(
    inputs: list[str],
    output: str | Path | Sink,
    model: str | Path = DEFAULT_MODEL,
    opts: BatchOptions = BatchOptions(),
    spec: PipelineSpec = PipelineSpec(),
    on_file: Callable[[BatchSummary], None] | None = None,
    errors: IO[str] | None = sys.stderr,
    checkpoint: Checkpoint | None = None,
) -> BatchSummary:
    """Transcribe every input not yet in `output` (a path, or a sink `open_sink` made: closed here); `on_file` is
    called after each record is written. `checkpoint`: `model` already loaded (the driver reads the files with its
    front end). A write that fails is an OutputError, and the run stops."""
    sink = open_sink(output, opts.fmt) if isinstance(output, str | Path) else output
    try:
        checkpoint = checkpoint or load_checkpoint(model)
    except BaseException:
        sink.close()
        raise
    extractor = checkpoint.extractor()  # which files a directory holds for this model, and what to call them
    run = _Run(sink, errors, on_file)
    run.summary.medium = extractor.medium
    try:
        todo = run.plan(inputs, extractor.suffixes)
        if todo:
            fleet = _Fleet(model, spec, opts, checkpoint)
            try:
                fleet.start()
                run.loop(fleet, todo, opts.max_attempts, opts.progress)
            finally:
                run.summary.cpu_seconds = fleet.cpu_seconds()
                fleet.close()
    finally:
        run.close()
    return run.summary


class _Run:
    """One run's output and counts: every input is recorded once, whatever happens on the way."""

    def __init__(self, sink, errors: IO[str] | None, on_file: Callable[[BatchSummary], None] | None):
        self.sink, self.errors, self.on_file = sink, errors, on_file
        self.summary = BatchSummary()
        self.bar = None
        self.t0 = time.monotonic()

    def plan(self, inputs: list[str], suffixes: frozenset[str]) -> deque[tuple[str, int]]:
        """The inputs still to do, as (path, attempt); inputs that name nothing are recorded as errors.
        `suffixes`: the files the model's front end reads (what a directory is searched for)."""
        expanded = expand_inputs(inputs, suffixes)
        self.summary.files = len(expanded.paths) + len(expanded.errors)
        todo: deque[tuple[str, int]] = deque()
        for path in expanded.paths:
            if os.path.abspath(path) in self.sink.done:
                self.summary.skipped += 1
            else:
                todo.append((path, 1))
        for item, why in expanded.errors.items():
            if os.path.abspath(item) in self.sink.done:
                self.summary.skipped += 1
            else:
                self.record(item, None, why)
        return todo

    def loop(self, fleet: _Fleet, todo: deque[tuple[str, int]], max_attempts: int, progress: bool) -> None:
        self.bar, self.t0 = _progress(len(todo), progress), time.monotonic()
        fleet.cpu_seconds()  # from here
        while todo or fleet.busy():
            for worker in fleet.workers:
                while todo and not worker.full:
                    path, attempts = todo.popleft()
                    why = worker.add(path, attempts)
                    if why:
                        self.record(path, None, why)
                while worker.files and worker.feed():
                    pass
            fleet.wait()
            for f in fleet.collect():
                if f.attempts >= max_attempts:
                    self.record(f.path, None, f"{f.path}: failed on {f.attempts} workers")
                else:
                    todo.appendleft((f.path, f.attempts + 1))
                    self.summary.resubmitted += 1
            for worker in fleet.workers + fleet.dead:  # (a dead worker's finished files still count)
                for f, transcript in worker.harvest():
                    if transcript is not None:
                        node = worker.pipeline.node_id
                        self.summary.audio_seconds += f.duration
                        self.summary.per_worker[node] = self.summary.per_worker.get(node, 0) + 1
                    self.summary.wall_seconds = time.monotonic() - self.t0
                    self.record(f.path, transcript, f.error)
            fleet.dead.clear()

    def record(self, path: str, transcript: Transcript | None, error: str | None) -> None:
        if os.path.abspath(path) in self.sink.done:  # exactly once, whatever happened on the way
            return
        self.sink.write(path, transcript, error)
        summary = self.summary
        if transcript is None:
            summary.failed += 1
            if self.errors is not None:
                report(printable(str(error)), file=self.errors)  # one line whatever a file name holds
        else:
            summary.transcribed += 1
        if self.bar is not None:
            self.bar.update(1)
            rtf = 1 / summary.rtfx if summary.rtfx else 0
            hours = f"{summary.audio_seconds / 3600:.2f} h {summary.medium}"
            self.bar.set_postfix_str(f"{hours}, RTF {rtf:.4f} ({summary.rtfx:.0f}x)", refresh=False)
        if self.on_file is not None:
            self.on_file(summary)

    def close(self) -> None:
        self.summary.wall_seconds = time.monotonic() - self.t0
        if self.bar is not None:
            self.bar.close()
        self.sink.close()


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="batch", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def cpu_times(pids: list[int]) -> list[float]:
    """CPU seconds used so far by each process (0 for one that is gone or on another machine)."""
    import ray  # noqa: F401  (Ray ships psutil and puts it on the path: first)

    # isort: split
    import psutil

    out = []
    for pid in pids:
        try:
            out.append(sum(psutil.Process(pid).cpu_times()[:2]))
        except psutil.Error:
            out.append(0.0)
    return out


class _Fleet:
    """The workers: one pipeline per node (or `workers` of them), replaced when a node dies."""

    def __init__(self, model: str | Path, spec: PipelineSpec, opts: BatchOptions, checkpoint: Checkpoint):
        self.model, self.spec, self.opts, self.checkpoint = model, spec, opts, checkpoint
        self.workers: list[Worker] = []
        self.dead: list[Worker] = []
        self.cluster = None
        self._respawns = 0
        self._cpu: dict[int, float] = {}

    def start(self) -> None:
        if self.opts.in_process:
            import torch

            from ..runtimes import create_engine
            from ..session import default_device

            torch.set_num_threads(self.opts.threads)
            device = self.spec.device or default_device()
            checkpoint = self.checkpoint if device == "cpu" else load_checkpoint(self.model, device)
            self.workers = [Worker(create_engine(checkpoint, "thread", self.spec, self._ingest()), self.opts.streams,
                                   self.opts.chunk_seconds)]
            return
        from ..distributed.cluster import RayCluster

        self.cluster = RayCluster.start(self.model, self.opts.address)
        self._spawn(self.opts.workers)

    def _spawn(self, count: int | None) -> None:
        nodes = self.cluster.nodes()
        for i in range(count or len(nodes)):
            try:
                self.workers.append(self._worker(self.cluster.pipeline(self.spec, nodes[i % len(nodes)])))
            except Exception as e:
                report(f"a worker on node {nodes[i % len(nodes)]} did not start ({one_line(e)[:200]})", "warning")
        if not self.workers:
            raise RuntimeError("no Ray worker could start")

    def _ingest(self) -> IngestOptions:
        # A lost node's files are redone whole by the fleet (run_batch), elsewhere: no live replay needed.
        return IngestOptions(window=self.opts.window, min_chunk=0.1, max_chunk=self.opts.chunk_seconds, failover=False)

    def _worker(self, pipeline: Pipeline) -> Worker:
        engine = Engine(self.checkpoint, pipeline, self._ingest(), options=self.spec.options)
        return Worker(engine, self.opts.streams, self.opts.chunk_seconds)

    def busy(self) -> bool:
        return any(w.files for w in self.workers)

    def wait(self, timeout: float = 1.0) -> None:
        """Until some worker's oldest tick is done (nothing to wait for in process)."""
        if any(w.engine.inflight for w in self.workers):
            Engine.wait_any([w.engine for w in self.workers], timeout)
        elif self.workers and not self.opts.in_process:
            time.sleep(0.005)  # new files wait for a model slot

    def collect(self) -> list[_File]:
        """Deliver finished ticks; -> the files lost with the workers that died."""
        lost = []
        for worker in list(self.workers):
            try:
                worker.collect()
            except PipelineFailed as e:
                report(f"worker on node {worker.pipeline.node_id} lost ({e}); resubmitting its files", "warning")
                self.workers.remove(worker)
                self.dead.append(worker)
                worker.engine.close()
                lost += worker.abandon()
        if lost and not self.workers:
            if self._respawns >= 3:
                raise RuntimeError("every Ray worker died")
            self._respawns += 1
            self._spawn(None)
        return lost

    def cpu_seconds(self) -> float:
        """CPU time used by this process and the local actors since the first call."""
        pids = [os.getpid()]
        for w in self.workers:
            try:
                pids += w.pipeline.pids()
            except Exception:  # a worker dying right now: its CPU time is not counted
                pass
        used = 0.0
        for pid, now in zip(pids, cpu_times(pids)):
            used += now - self._cpu.setdefault(pid, now)
        return used

    def close(self) -> None:
        for w in self.workers:
            w.engine.close()
        if self.cluster is not None:
            self.cluster.close()
