"""`rnnstream batch`: many files through the Ray pipeline, resumable, every input in the output exactly once.

Files are just streams: the driver reads each in large chunks and sends, per tick, one chunk of every
file in flight to a pipeline (features, model, decoder actors on one node), so many files share each
batched LSTM call. Only the driver writes the output, one flushed record per finished file, so a rerun
after a crash skips what is already there. A pipeline whose node dies loses only unwritten files: they
are sent again, from the start, to the pipelines that remain.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.audio import AudioError, audio_info, read_blocks

from .formats import render
from .ingest import PipelineFailed
from .transcribe import Transcript, segments_from_events

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64"}
MANIFEST_SUFFIXES = {".txt", ".lst", ".list", ".jsonl"}
BATCH_FORMATS = ("jsonl", "srt", "vtt")


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass
class Inputs:
    paths: list[str]  # audio files, in order, each once
    errors: dict[str, str] = field(default_factory=dict)  # inputs that name nothing usable -> why


def expand_inputs(inputs: list[str]) -> Inputs:
    """Directories (recursively, audio files), globs, manifests (.txt/.lst: a path per line; .jsonl: objects
    with "path", "audio_filepath" or "audio") and plain files; duplicates are kept once."""
    out = Inputs([])
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            out.paths.append(path)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file():
                    add(str(f))
        elif p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            try:
                for path in _manifest(p):
                    add(path)
            except (OSError, ValueError) as e:
                out.errors[item] = f"{item}: unreadable manifest ({' '.join(str(e).split())})"
        elif p.exists():
            add(item)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            files = [m for m in matches if Path(m).is_file()]
            if not files:
                out.errors[item] = f"{item}: no file matches"
            for m in files:
                add(m)
        else:
            out.errors[item] = f"{item}: no such file"
    return out


def _manifest(path: Path) -> Iterator[str]:
    base = path.parent
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if path.suffix.lower() == ".jsonl":
            row = json.loads(line)
            entry = next((row[k] for k in ("path", "audio_filepath", "audio") if k in row), None)
            if not isinstance(entry, str):
                raise ValueError(f"line {n} has no path")
            line = entry
        yield line if os.path.isabs(line) else str(base / line)


# ---------------------------------------------------------------------------------------------
# Output: append-only, one flushed record per input; what is there is done.


class JsonlSink:
    """One JSON line per input: a transcript, or {"path", "error"}."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done = _recover(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, path: str, transcript: Transcript | None = None, error: str | None = None) -> None:
        record = render(transcript, "jsonl") if transcript else json.dumps({"path": path, "error": error}, ensure_ascii=False)
        self._file.write(record + "\n")
        self._file.flush()
        self.done.add(os.path.abspath(path))

    def close(self) -> None:
        self._file.close()


class SubtitleSink:
    """A directory with one .srt/.vtt per input and index.jsonl saying which input went where (or failed)."""

    def __init__(self, directory: str | Path, fmt: str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.index = JsonlIndex(self.dir / "index.jsonl")
        self.done = self.index.done
        self._names = {Path(r).name for r in self.index.outputs}

    def write(self, path: str, transcript: Transcript | None = None, error: str | None = None) -> None:
        output = None
        if transcript is not None:
            name = f"{Path(path).stem}.{self.fmt}"
            if name in self._names:
                name = f"{Path(path).stem}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]}.{self.fmt}"
            tmp = self.dir / (name + ".tmp")
            tmp.write_text(render(transcript, self.fmt) + "\n", encoding="utf-8")
            tmp.replace(self.dir / name)
            self._names.add(name)
            output = name
        self.index.write(path, output, error)

    def close(self) -> None:
        self.index.close()


class JsonlIndex:
    def __init__(self, path: Path):
        self.path = path
        self.outputs: list[str] = []
        self.done = _recover(path, self.outputs)
        self._file = open(path, "a", encoding="utf-8")

    def write(self, path: str, output: str | None, error: str | None) -> None:
        row = {"path": path, "output": output} if output else {"path": path, "error": error}
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        self.done.add(os.path.abspath(path))

    def close(self) -> None:
        self._file.close()


def _recover(path: Path, outputs: list[str] | None = None) -> set[str]:
    """The inputs already in an output file; a line cut short by a crash is removed first."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    done = set()
    for line in data[:end].decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("path"), str):
            done.add(os.path.abspath(row["path"]))
            if outputs is not None and row.get("output"):
                outputs.append(row["output"])
    return done


def open_sink(output: str | Path, fmt: str) -> JsonlSink | SubtitleSink:
    return JsonlSink(output) if fmt == "jsonl" else SubtitleSink(output, fmt)


# ---------------------------------------------------------------------------------------------
# Workers: one pipeline each, fed by the driver.


@dataclass
class _File:
    path: str
    duration: float
    blocks: Iterator[np.ndarray]
    error: str | None = None
    attempts: int = 1


class Worker:
    """One pipeline and the files it is transcribing; the driver reads them chunk by chunk into its ingest."""

    def __init__(self, pipeline, streams: int = 64, chunk_seconds: float = 8.0, window: int = 2):
        from .ingest import Ingest

        self.pipeline = pipeline
        self.streams = streams
        self.chunk_seconds = chunk_seconds
        self.ingest = Ingest(pipeline, min_chunk=0.1, max_chunk=chunk_seconds, window=window)
        self.files: dict = {}  # stream key -> _File

    @property
    def full(self) -> bool:
        return len(self.files) >= self.streams

    def add(self, path: str, attempts: int = 1) -> str | None:
        """Start a file; -> the reason it cannot be read, if so."""
        try:
            rate, channels, duration = audio_info(path)
            key = self.ingest.open(rate, channels)
        except AudioError as e:
            return str(e)
        blocks = read_blocks(path, block_frames=max(1, int(self.chunk_seconds * rate)))
        self.files[key] = _File(path, duration, blocks, attempts=attempts)
        return None

    def feed(self) -> bool:
        """Read the next chunk of every file whose previous one has gone out, and send a tick if the window has room."""
        ingest = self.ingest
        if len(ingest.inflight) >= ingest.window:
            return False
        for key, f in self.files.items():
            s = ingest.streams[key]
            if s.finishing or s.done or ingest.ready(key):  # (a short last block waits for the end of file)
                continue
            try:
                ingest.push(key, next(f.blocks))
            except StopIteration:
                ingest.finish(key)
            except AudioError as e:  # truncated mid-file: close the stream, report the file
                f.error = str(e)
                ingest.finish(key)
        try:
            return ingest.submit(block=False)
        except PipelineFailed:  # the fleet sees it on its next collect
            return False

    def harvest(self) -> list[tuple[_File, Transcript | None]]:
        """Files whose stream is over: (file, transcript), or (file with .error, None)."""
        out = []
        for key in [k for k in self.files if self.ingest.streams[k].done and not self.ingest.streams[k].inflight]:
            f = self.files.pop(key)
            events, state = self.ingest.take(key)
            f.error = f.error or state.error
            if f.error:
                out.append((f, None))
                continue
            segments = segments_from_events(events)
            out.append((f, Transcript(f.path, " ".join(s.text for s in segments), f.duration, segments)))
        return out

    def abandon(self) -> list[_File]:
        """The files a dead pipeline had not finished: to be started again elsewhere."""
        streams = self.ingest.streams
        lost = [k for k in self.files if k not in streams or streams[k].lost or not streams[k].done]
        return [self.files.pop(k) for k in lost]


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
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
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    per_worker: dict = field(default_factory=dict)  # node id -> files transcribed there
    cpu_seconds: float = 0.0  # CPU time of this process and the workers' actors on this machine

    @property
    def rtfx(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0


def run_batch(
    inputs: list[str],
    output: str | Path,
    recognizer_model: str = "digits",
    opts: BatchOptions = BatchOptions(),
    spec=None,
    on_file: Callable[[BatchSummary], None] | None = None,
    errors=sys.stderr,
) -> BatchSummary:
    """Transcribe every input not yet in `output`; `on_file` is called after each record is written."""
    from .stages import PipelineSpec

    spec = spec or PipelineSpec()
    expanded = expand_inputs(inputs)
    sink = open_sink(output, opts.fmt)
    summary = BatchSummary(files=len(expanded.paths) + len(expanded.errors))
    todo: deque[tuple[str, int]] = deque()
    for path in expanded.paths:
        if os.path.abspath(path) in sink.done:
            summary.skipped += 1
        else:
            todo.append((path, 1))
    for item, why in expanded.errors.items():
        if os.path.abspath(item) in sink.done:
            summary.skipped += 1
        else:
            _record(sink, summary, item, None, why, errors, on_file)
    if not todo:
        sink.close()
        return summary

    fleet = _Fleet(recognizer_model, spec, opts)
    bar, t0 = None, time.monotonic()
    try:
        fleet.start()
        bar, t0 = _progress(len(todo), opts.progress), time.monotonic()
        fleet.cpu_seconds()  # from here
        while todo or fleet.busy():
            for worker in fleet.workers:
                while todo and not worker.full:
                    path, attempts = todo.popleft()
                    why = worker.add(path, attempts)
                    if why:
                        _record(sink, summary, path, None, why, errors, on_file, bar)
                while worker.files and worker.feed():
                    pass
            fleet.wait()
            for worker, lost in fleet.collect():
                for f in lost:
                    if f.attempts >= opts.max_attempts:
                        _record(sink, summary, f.path, None, f"{f.path}: failed on {f.attempts} workers", errors, on_file, bar)
                    else:
                        todo.appendleft((f.path, f.attempts + 1))
                        summary.resubmitted += 1
            for worker in fleet.workers + fleet.dead:  # (a dead worker's finished files still count)
                for f, transcript in worker.harvest():
                    if transcript is not None:
                        summary.audio_seconds += f.duration
                        summary.per_worker[worker.pipeline.node_id] = summary.per_worker.get(worker.pipeline.node_id, 0) + 1
                    summary.wall_seconds = time.monotonic() - t0
                    _record(sink, summary, f.path, transcript, f.error, errors, on_file, bar)
            fleet.dead.clear()
    finally:
        summary.wall_seconds = time.monotonic() - t0
        summary.cpu_seconds = fleet.cpu_seconds()
        if bar is not None:
            bar.close()
        sink.close()
        fleet.close()
    return summary


def _record(sink, summary: BatchSummary, path: str, transcript, error, errors, on_file, bar=None) -> None:
    if os.path.abspath(path) in sink.done:  # exactly once, whatever happened on the way
        return
    sink.write(path, transcript, error)
    if transcript is None:
        summary.failed += 1
        if errors is not None:
            print(f"rnnstream: error: {error}", file=errors, flush=True)
    else:
        summary.transcribed += 1
    if bar is not None:
        bar.update(1)
        hours = summary.audio_seconds / 3600
        bar.set_postfix_str(f"{hours:.2f} h audio, RTF {1 / summary.rtfx if summary.rtfx else 0:.4f} ({summary.rtfx:.0f}x)", refresh=False)
    if on_file is not None:
        on_file(summary)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="batch", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def cpu_times(pids: list[int]) -> list[float]:
    """CPU seconds used so far by each process (0 for one that is gone or on another machine)."""
    import ray  # noqa: F401  (Ray ships psutil)
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

    def __init__(self, model: str, spec, opts: BatchOptions):
        self.model, self.spec, self.opts = model, spec, opts
        self.workers: list[Worker] = []
        self.dead: list[Worker] = []
        self.started_ray = False
        self._checkpoint = None
        self._respawns = 0
        self._cpu: dict[int, float] = {}

    def start(self) -> None:
        from .actors import checkpoint_bytes, init_ray
        from .stages import LocalPipeline

        if self.opts.in_process:
            self.workers = [self._worker(LocalPipeline.load(self.model, self.spec, self.spec.device, self.opts.threads))]
            return
        import ray

        data = checkpoint_bytes(self.model)  # fail early on a bad model, before starting Ray
        self.started_ray = init_ray(self.opts.address)
        self._checkpoint = ray.put(data)
        self._spawn(self.opts.workers)

    def _spawn(self, count: int | None) -> None:
        from .actors import RayPipeline, alive_nodes

        nodes = alive_nodes()
        count = count or len(nodes)
        pipelines = [RayPipeline(self.spec, self._checkpoint, nodes[i % len(nodes)]) for i in range(count)]
        for p in pipelines:
            try:
                p.wait_ready()
                self.workers.append(self._worker(p))
            except Exception as e:
                print(f"rnnstream: a worker on node {p.node_id} did not start ({' '.join(str(e).split())[:200]})", file=sys.stderr)
                p.close()
        if not self.workers:
            raise RuntimeError("no Ray worker could start")

    def _worker(self, pipeline) -> Worker:
        return Worker(pipeline, self.opts.streams, self.opts.chunk_seconds, self.opts.window)

    def busy(self) -> bool:
        return any(w.files for w in self.workers)

    def wait(self, timeout: float = 1.0) -> None:
        """Until some tick is done (Ray) - nothing to wait for in process."""
        if self.opts.in_process:
            return
        handles = [ref for w in self.workers if w.ingest.inflight for ref in w.ingest.inflight[0].handle]
        if handles:
            import ray

            ray.wait(handles, num_returns=1, timeout=timeout)
        else:
            time.sleep(0.005)  # new files wait for a model slot

    def collect(self) -> list[tuple[Worker, list[_File]]]:
        """Deliver finished ticks; -> the files lost with each worker that died."""
        lost = []
        for worker in list(self.workers):
            try:
                worker.ingest.collect(timeout=0)
            except PipelineFailed as e:
                print(f"rnnstream: worker on node {worker.pipeline.node_id} lost ({e}); resubmitting its files", file=sys.stderr)
                self.workers.remove(worker)
                self.dead.append(worker)
                worker.pipeline.close()
                lost.append((worker, worker.abandon()))
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
                pids += w.pipeline.pids() if hasattr(w.pipeline, "pids") else []
            except Exception:  # a worker dying right now: its CPU time is not counted
                pass
        used = 0.0
        for pid, now in zip(pids, cpu_times(pids)):
            used += now - self._cpu.setdefault(pid, now)
        return used

    def close(self) -> None:
        for w in self.workers:
            w.pipeline.close()
        if self.started_ray:
            import ray

            ray.shutdown()


# ---------------------------------------------------------------------------------------------
# CLI


def add_batch_parser(sub) -> None:
    from .cli import _add_model_args

    p = sub.add_parser("batch", help="transcribe many files through Ray (resumable: reruns skip what is done)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, directories, globs or manifests (.txt/.lst/.jsonl)")
    p.add_argument("--output", "-o", required=True, help="a .jsonl file; for srt/vtt a directory (with index.jsonl)")
    p.add_argument("--format", choices=BATCH_FORMATS, default="jsonl")
    p.add_argument("--address", help="an existing Ray cluster (host:port); default: start Ray on this machine")
    p.add_argument("--workers", type=int, help="pipelines (model actors); default: one per node")
    p.add_argument("--streams", type=int, default=64, help="files in flight per worker (default 64)")
    p.add_argument("--decoders", type=int, default=2, help="decoder actors per worker (default 2)")
    p.add_argument("--chunk-seconds", type=float, default=8.0, help="seconds of audio per file per tick (default 8)")
    p.add_argument("--in-process", action="store_true", help="no Ray: run the same stages in this process")
    p.add_argument("--no-progress", action="store_true")
    _add_model_args(p)
    p.set_defaults(func=cmd_batch)


def decode_options(args: argparse.Namespace):
    """As `rnnstream transcribe` decides (flags on top of the model's recommendation); portable to any node."""
    from dataclasses import replace

    from models.checkpoint import load_checkpoint

    from .cli import decoding_changes
    from .session import recommended_options

    return replace(recommended_options(load_checkpoint(args.model)), **decoding_changes(args))


def cmd_batch(args: argparse.Namespace) -> int:
    from .stages import PipelineSpec

    spec = PipelineSpec(device=args.compute_device, options=decode_options(args), decoders=args.decoders)
    opts = BatchOptions(
        fmt=args.format, address=args.address, workers=args.workers, streams=args.streams,
        chunk_seconds=args.chunk_seconds, in_process=args.in_process, progress=not args.no_progress,
    )
    summary = run_batch(args.inputs, args.output, args.model, opts, spec)
    print(
        f"rnnstream: {summary.transcribed} transcribed, {summary.skipped} already done, {summary.failed} failed; "
        f"{summary.audio_seconds / 3600:.3f} h of audio in {summary.wall_seconds:.1f} s ({summary.rtfx:.0f}x real time)",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0
