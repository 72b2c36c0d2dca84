"""The pipeline in a process of its own: a LocalPipeline in a child process, fed a tick a message over a pipe.

Why: in one process a server's event loop and the stages share one GIL, so together they use at most one core.
On this 2-core machine the bare pipeline carries 500 greedy streams at p95 101 ms, and the server in one process
did not (p95 5.7 s; BENCHMARKS.md, issue 16). Here the stages run in the child, on a core of their own, and the
parent only moves ticks: one pickled message per tick each way, never one per stream.

Invariants:
- The child runs exactly `LocalPipeline` (the same stages, batcher and model), so a stream gets the events it
  would get in process. One thread in the child answers the requests in the order they were sent.
- Nothing blocks on the pipe while holding what the other side needs: a reader thread here takes every answer as
  it arrives, so a large tick can never deadlock against a large answer (a pipe buffers ~64 KB).
- A child that dies (killed, out of memory) is a lost worker: every call then raises `PipelineProcessLost` and
  `restart` starts a fresh child, so an Ingest with failover replays its streams from their snapshots, as on Ray.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Hashable
from typing import Any

from models.checkpoint import Checkpoint, checkpoint_bytes
from models.errors import one_line

from .ingest import Ingest
from .messages import Chunk, Chunks, Key, Update
from .pipeline import PipelineSpec
from .shared import SharedRecognizer

log = logging.getLogger(__name__)

_NO_START = ("the pipeline process exited at start (exit code {}): a script that starts one needs an "
             "`if __name__ == '__main__':` guard (multiprocessing's spawn)")
START_TIMEOUT = 120.0  # s: a spawned child imports torch and loads the model (~3 s here; far more on a loaded box)
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
        try:
            if op == "submit":
                args = (args[0], args[1], args[2].unpack())
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


class ProcessPipeline:
    """A `Pipeline` whose stages run in a child process on this machine (see the module's notes)."""

    node_id = "local"
    restartable = True  # a lost child is replaced by a fresh one

    def __init__(self, checkpoint: Checkpoint | bytes, spec: PipelineSpec = PipelineSpec(), threads: int = 1):
        """`spec.options` / `spec.endpoint`: the decoding (None: the checkpoint's recommendation); `threads`: the
        child's torch threads."""
        self.spec, self.threads = spec, threads
        self._checkpoint = checkpoint if isinstance(checkpoint, bytes) else checkpoint_bytes(checkpoint)
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads (loop, hub)
        self._cond = threading.Condition()  # guards the replies; the reader notifies on each
        self._send_lock = threading.Lock()  # one request on the pipe at a time, numbered in sending order
        self._generation = 0
        self._start()

    # -- the child's life

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_child, args=(child, self.spec, self.threads), name="rnnstream-pipeline", daemon=True)
        proc.start()
        child.close()  # the child's end lives in the child only: its death is EOF here
        try:  # the model over the pipe, not in the spawn arguments: a child that dies while starting (a script
            parent.send(self._checkpoint)  # without a __main__ guard) would leave a 2 MB argument write blocked forever
        except OSError:
            proc.join(5)
            raise PipelineProcessLost(_NO_START.format(proc.exitcode)) from None
        if not parent.poll(START_TIMEOUT):
            proc.kill()
            raise PipelineProcessLost(f"the pipeline process did not start in {START_TIMEOUT:.0f} s")
        try:
            kind, value = parent.recv()
        except EOFError:
            proc.join(5)
            raise PipelineProcessLost(_NO_START.format(proc.exitcode)) from None
        if kind != "ready":
            proc.join(5)
            raise value
        with self._send_lock, self._cond:
            self._generation += 1
            self._proc, self._conn, self._sent, self._replies, self._lost = proc, parent, 0, {}, None
        threading.Thread(target=self._read, args=(parent, proc, self._generation), name="rnnstream-pipeline-reader",
                         daemon=True).start()

    def _read(self, conn, proc, generation: int) -> None:
        """Every answer, in order, into `_replies` by request number; EOF marks the child lost."""
        n = 0
        while True:
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                proc.join(1)
                with self._cond:
                    if generation == self._generation and self._lost is None:
                        self._lost = PipelineProcessLost(f"the pipeline process {proc.pid} is gone (exit code {proc.exitcode})")
                    self._cond.notify_all()
                return
            with self._cond:
                if generation != self._generation:
                    return
                self._replies[n] = reply
                n += 1
                self._cond.notify_all()

    def _request(self, op: str, *args) -> tuple[int, int]:
        with self._send_lock:
            handle = (self._generation, self._sent)
            try:
                self._conn.send((op, args))
            except (OSError, ValueError) as e:  # a broken pipe: the child died
                raise PipelineProcessLost(f"the pipeline process is gone ({one_line(e)})") from None
            self._sent += 1
        return handle

    def _done(self, handle: tuple[int, int]) -> bool:
        """(Under the condition.) Answered, or never to be: its child is lost or replaced."""
        generation, n = handle
        return generation != self._generation or n in self._replies or self._lost is not None

    def _result(self, handle: tuple[int, int], timeout: float | None = None) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: self._done(handle), timeout)
            generation, n = handle
            if generation == self._generation and n in self._replies:
                kind, value = self._replies.pop(n)
                if kind == "error":
                    raise value
                return value
            raise self._lost or PipelineProcessLost("the pipeline process was replaced")

    # -- the Pipeline protocol

    def reserve(self, keys: list) -> list:
        return self._result(self._request("reserve", keys))

    def submit(self, producer: Hashable, seq: int, chunks: dict[Key, Chunk]) -> tuple[int, int]:
        return self._request("submit", producer, seq, Chunks.pack(chunks))

    def ready(self, handles: list, timeout: float | None) -> int:
        with self._cond:
            if handles:
                self._cond.wait_for(lambda: self._done(handles[0]), timeout)
            n = 0
            while n < len(handles) and self._done(handles[n]):
                n += 1
            return n

    def get(self, handle: tuple[int, int]) -> dict[Key, Update]:
        return self._result(handle)

    def wait(self, handles: list, timeout: float | None) -> None:
        with self._cond:
            self._cond.wait_for(lambda: any(self._done(h) for h in handles), timeout)

    def restart(self, error: BaseException) -> bool:
        """A fresh child after a lost one (its streams reopen from the producer's snapshots); other errors: False."""
        if not isinstance(error, PipelineProcessLost):
            return False
        log.warning("%s; starting a fresh one", one_line(error))
        self._stop_child(timeout=1.0)
        self._start()
        return True

    def stats(self) -> dict:
        return self._result(self._request("stats"))

    def pids(self) -> list[int]:
        return [self._proc.pid]

    def close(self, timeout: float = 10.0) -> None:
        self._stop_child(timeout)

    def _stop_child(self, timeout: float) -> None:
        with self._cond:
            self._generation += 1  # the reader of this child stops; calls on its handles fail
            self._cond.notify_all()
        try:
            with self._send_lock:
                self._conn.send(("stop", ()))
        except (OSError, ValueError):
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout)
        self._conn.close()


def process_recognizer(
    checkpoint: Checkpoint,
    spec: PipelineSpec = PipelineSpec(),
    threads: int = 1,
    window: int = 4,
    min_chunk: float = 0.1,
    overflow: str = "block",
    admit_latency: float | None = None,
) -> SharedRecognizer:
    """Sessions (from any threads) that share one pipeline in a child process: `Recognizer.shared`, with the
    stages off this process's GIL. A lost child is replaced and the streams replayed (the Ingest's failover)."""
    pipeline = ProcessPipeline(checkpoint, spec, threads)
    ingest = Ingest(pipeline, min_chunk, window=window, overflow=overflow, admit_latency=admit_latency)
    return SharedRecognizer(checkpoint, pipeline, ingest)
