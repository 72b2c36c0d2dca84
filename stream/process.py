"""The pipeline in processes of its own: LocalPipelines in child processes, fed a tick a message over pipes.

Why: in one process a server's event loop and the stages share one GIL, so together they use at most one core.
On this 2-core machine the bare pipeline carries 500 greedy streams at p95 101 ms, and the server in one process
did not (p95 5.7 s; BENCHMARKS.md, issue 16). Here the stages run in children, each on a core when there is one,
and the parent only moves ticks: one pickled message per tick and child each way, never one per stream. With
several children each has a share of the streams (a whole pipeline: one batched LSTM call per child per tick).

Invariants:
- A child runs exactly `LocalPipeline` (the same stages, batcher and model), so a stream gets the events it
  would get in process. One thread in each child answers its requests in the order they were sent.
- Nothing here blocks on a pipe: a reader thread per child takes every answer as it arrives, and a writer thread
  per child sends its requests, so a large tick can never deadlock against a large answer, and the caller never
  waits for a busy child to read (a pipe buffers 64 KB; a tick of 40 streams x 500 ms of 16-bit 8 kHz audio is
  320 KB, 160 KB a child of two, so a send blocked until the child had finished the tick before: the server's hub
  stalled with it, every answer late).
- Every request is a Future, completed by its child's reader thread with the answer (or the child's error), in
  the order the requests were sent. A child that dies (killed, out of memory) is a lost worker: its pending
  Futures and any later call fail with `PipelineProcessLost`, and `restart` starts fresh children, so an Ingest
  with failover replays its streams from their snapshots, as on Ray. Children replaced or closed fail theirs too.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections import deque
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from models.checkpoint import Checkpoint, checkpoint_bytes
from models.errors import one_line

from .engine import Engine
from .futures import merged
from .ingest import IngestOptions
from .messages import Chunk, Chunks, Key, Update
from .pipeline import PipelineSpec
from .shared import SharedRecognizer
from .stages import shard_of

log = logging.getLogger(__name__)

_NO_START = ("the pipeline process exited at start (exit code {}): a script that starts one needs an "
             "`if __name__ == '__main__':` guard (multiprocessing's forkserver imports the main module)")
START_TIMEOUT = 120.0  # s: the first child waits for the fork server to import torch (~2 s here; more on a loaded box)
_OPS = ("submit", "reserve", "stats")  # what the child's pipeline answers


class PipelineProcessLost(RuntimeError):
    """The pipeline's process is gone: its streams' state with it (an Ingest with failover replays them)."""


def _child(conn, spec: PipelineSpec, threads: int) -> None:
    """The child's whole life: load the model, then answer requests in order until told to stop or orphaned."""
    import torch

    from .session import Recognizer

    # Ctrl-C or a service manager's SIGTERM reach the whole process group: the parent decides when the child
    # stops (after it has flushed every stream), and the child ends on its own when the parent is gone (EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        checkpoint = conn.recv()
        recognizer = Recognizer.load(checkpoint, device=spec.device or "cpu", options=spec.options, endpoint=spec.endpoint)
        pipeline = recognizer.pipeline(spec)
    except Exception as e:
        conn.send(("error", RuntimeError(f"the pipeline process could not start: {one_line(e)}")))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):  # the parent is gone: nobody to answer
            return
        if op == "stop":
            return
        if op not in _OPS:
            conn.send(("error", ValueError(f"the pipeline process answers {', '.join(_OPS)}, not {op!r}")))
            continue
        try:
            if op == "submit":  # the tick through the stages here and now (`step`): its Future is the parent's
                op, args = "step", (args[0], args[1], args[2].unpack())
            conn.send(("ok", getattr(pipeline, op)(*args)))
        except Exception as e:  # the request's failure, answered; the child carries on
            conn.send(("error", e if _picklable(e) else RuntimeError(one_line(e))))


def _picklable(e: BaseException) -> bool:
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        return True
    except Exception:
        return False


@dataclass(eq=False)
class _Child:
    """One child process, what its writer thread is to send and the Futures its reader thread is to complete."""

    proc: Any
    conn: Any
    outbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # requests, then None: the writer ends
    waiting: deque[Future] = field(default_factory=deque)  # one per request sent and not yet answered, in order
    lost: PipelineProcessLost | None = None  # once set, never answered again: its Futures have failed


class ProcessPipeline:
    """A `Pipeline` whose stages run in child processes on this machine (see the module's notes).

    `processes` > 1: each child is a whole pipeline for a share of the streams (by key, as the decoder shards of
    stream.stages), so a tick is one batched LSTM call per child: more cores for the stages where one is too few.
    """

    node_id = "local"
    restartable = True  # lost children are replaced by fresh ones

    def __init__(self, checkpoint: Checkpoint | bytes, spec: PipelineSpec = PipelineSpec(), threads: int = 1, processes: int = 1):
        """`spec.options` / `spec.endpoint`: the decoding (None: the checkpoint's recommendation); `threads`: each
        child's torch threads."""
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.spec, self.threads, self.processes = spec, threads, processes
        self._checkpoint = checkpoint if isinstance(checkpoint, bytes) else checkpoint_bytes(checkpoint)
        # Children fork from a fresh single-threaded server that has imported torch once (never from this process,
        # which runs threads: the loop, the hub): a child starts in 0.2 s, not the 4 s of a spawned interpreter,
        # and shares torch's pages (PSS 125 MB a child, against 360 MB spawned).
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["torch", "stream.session"])
        self._lock = threading.Lock()  # guards the children's `waiting` and `lost`: a request's Future is queued
        # with the request itself, so its answer (read in order) always finds it
        self._children: list[_Child] = []
        self._start()

    # -- the children's lives

    def _start(self) -> None:
        started = []
        try:
            for _ in range(self.processes):  # all forked before any is waited for: they load the model side by side
                parent, child = self._ctx.Pipe()
                proc = self._ctx.Process(target=_child, args=(child, self.spec, self.threads), name="rnnstream-pipeline", daemon=True)
                proc.start()
                child.close()  # the child's end lives in the child only: its death is EOF here
                started.append(_Child(proc, parent))
                _send_model(started[-1], self._checkpoint)
            for c in started:
                _wait_ready(c)
        except BaseException:
            for c in started:
                c.proc.kill()
            raise
        with self._lock:
            self._children = started
        for c in started:
            threading.Thread(target=self._read, args=(c,), name="rnnstream-pipeline-reader", daemon=True).start()
            threading.Thread(target=self._write, args=(c,), name="rnnstream-pipeline-writer", daemon=True).start()

    def _write(self, child: _Child) -> None:
        """Every request of one child, in order, onto its pipe (blocking only this thread); a broken pipe marks it lost."""
        while (request := child.outbox.get()) is not None:
            try:
                child.conn.send(request)
            except (OSError, ValueError) as e:  # the child died (its reader sees EOF too)
                self._lose(child, _gone(child, one_line(e)))
                return

    def _read(self, child: _Child) -> None:
        """Every answer of one child, in order, completes the oldest of its Futures; EOF marks it lost."""
        while True:
            try:
                kind, value = child.conn.recv()
            except (EOFError, OSError):
                child.proc.join(1)
                self._lose(child, _gone(child, f"exit code {child.proc.exitcode}"))
                return
            with self._lock:
                if child.lost is not None:  # replaced or closed: its Futures have failed already
                    return
                future = child.waiting.popleft()
            if kind == "error":
                future.set_exception(value)
            else:
                future.set_result(value)

    def _lose(self, child: _Child, error: PipelineProcessLost) -> None:
        """Mark a child lost (once: its reader or its writer, whichever sees it first, or its replacement) and fail
        the Futures it will never answer."""
        with self._lock:
            if child.lost is None:
                child.lost = error
            waiting, child.waiting = child.waiting, deque()
        for future in waiting:
            future.set_exception(child.lost)

    def _request(self, i: int, op: str, *args) -> Future:
        """-> the Future of child `i`'s answer."""
        future: Future = Future()
        with self._lock:
            child = self._children[i]
            if child.lost is not None:
                raise child.lost
            child.waiting.append(future)
            child.outbox.put((op, args))
        return future

    # -- the Pipeline protocol

    def reserve(self, keys: list) -> list:
        parts = [self._request(i, "reserve", share) for i, share in self._shares(keys).items()]
        return [key for part in parts for key in part.result()]

    def submit(self, producer: Hashable, seq: int, chunks: dict[Key, Chunk]) -> Future[dict[Key, Update]]:
        """-> the tick's Future: the updates of every child that has streams in it."""
        shares = self._shares(list(chunks)) or {0: []}
        return merged([self._request(i, "submit", producer, seq, Chunks.pack({k: chunks[k] for k in share}))
                       for i, share in shares.items()])

    def _shares(self, keys: list) -> dict[int, list]:
        shares: dict[int, list] = {}
        for key in keys:
            shares.setdefault(shard_of(key, self.processes), []).append(key)
        return shares

    def restart(self, error: BaseException) -> bool:
        """Fresh children after a lost one (every stream reopens from the producer's snapshots, so the survivors
        are replaced too: no stream may be open twice); other errors: False."""
        if not isinstance(error, PipelineProcessLost):
            return False
        log.warning("%s; starting fresh ones", one_line(error))
        self._stop_children(timeout=1.0)
        self._start()
        return True

    def stats(self) -> dict:
        parts = [self._request(i, "stats") for i in range(len(self._children))]
        per_child = [part.result() for part in parts]
        return {k: sum(s[k] for s in per_child) for k in per_child[0]} | {"processes": len(per_child)}

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self._children]

    def close(self, timeout: float = 10.0) -> None:
        self._stop_children(timeout)

    def _stop_children(self, timeout: float) -> None:
        for c in self._children:  # their readers stop; their Futures not yet answered fail
            self._lose(c, PipelineProcessLost("the pipeline process was replaced"))
        for c in self._children:
            c.outbox.put(("stop", ()))  # after the requests already queued
            c.outbox.put(None)
        for c in self._children:
            c.proc.join(timeout)
            if c.proc.is_alive():
                c.proc.kill()
                c.proc.join(timeout)
            c.conn.close()


def _gone(child: _Child, why: str) -> PipelineProcessLost:
    return PipelineProcessLost(f"the pipeline process {child.proc.pid} is gone ({why})")


def _send_model(child: _Child, checkpoint: bytes) -> None:
    # The model goes over the pipe, not in the process arguments: a child that dies while starting (a script without a
    # __main__ guard) would leave a 2 MB argument write blocked forever.
    try:
        child.conn.send(checkpoint)
    except OSError:
        child.proc.join(5)
        raise PipelineProcessLost(_NO_START.format(child.proc.exitcode)) from None


def _wait_ready(child: _Child) -> None:
    if not child.conn.poll(START_TIMEOUT):
        raise PipelineProcessLost(f"the pipeline process did not start in {START_TIMEOUT:.0f} s")
    try:
        kind, value = child.conn.recv()
    except EOFError:
        child.proc.join(5)
        raise PipelineProcessLost(_NO_START.format(child.proc.exitcode)) from None
    if kind != "ready":
        child.proc.join(5)
        raise value


def process_recognizer(
    checkpoint: Checkpoint,
    spec: PipelineSpec = PipelineSpec(),
    threads: int = 1,
    processes: int = 1,
    ingest: IngestOptions = IngestOptions(),
) -> SharedRecognizer:
    """Sessions (from any threads) that share one pipeline in a child process: `Recognizer.shared`, with the
    stages off this process's GIL. A lost child is replaced and the streams replayed (the Ingest's failover)."""
    pipeline = ProcessPipeline(checkpoint, spec, threads, processes)
    return SharedRecognizer(Engine(checkpoint, pipeline, ingest, options=spec.options))
