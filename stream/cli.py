"""The `rnnstream` command line: parses and validates every option, then calls the library with typed options.

The library never imports this module. Ray and PortAudio are imported only by the commands that use them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from models.checkpoint import CheckpointError
from models.errors import one_line

from .batch.sinks import BATCH_FORMATS, OutputError, output_directory, write_file
from .cli_options import add_model_args, add_number, checkpoint_and_options, positive_int  # noqa: F401  (the tools' imports)
from .errors import report as _report
from .formats import FORMATS, printable

# 500 clients on 2 cores: 2 children p95 279 ms, 1 child 4.7 s (BENCHMARKS.md, issue 16); a child costs ~125 MB (PSS).
SERVE_PROCESSES = min(os.cpu_count() or 1, 4)


def report(message: object, kind: str = "error") -> None:
    _report(printable(str(message)), kind)  # one line whatever a file name holds (a newline, bytes not UTF-8)


def load_recognizer(args: argparse.Namespace):
    from .session import Recognizer

    checkpoint, options = checkpoint_and_options(args, args.compute_device)
    return Recognizer(checkpoint, options)


# ---------------------------------------------------------------------------------------------
# commands


def cmd_transcribe(args: argparse.Namespace) -> int:
    from models.errors import InputError

    from .formats import render
    from .transcribe import transcribe_file

    out_dir = output_directory(args.output_dir) if args.output_dir and args.format != "text" else None  # fails fast
    recognizer = load_recognizer(args)
    failed = 0
    for path in args.paths:
        try:
            transcript = transcribe_file(recognizer, path, chunk_ms=args.chunk_ms)
        except InputError as e:
            report(e)
            failed += 1
            continue
        out = render(transcript, args.format, with_path=len(args.paths) > 1)
        if out_dir is not None:
            write_file(out_dir / (Path(path).stem + "." + args.format), out + "\n")
        else:
            _print(out)
    if failed:
        print(f"rnnstream: {failed} of {len(args.paths)} files failed", file=sys.stderr)
    return 1 if failed else 0


def _print(text: str) -> None:
    try:
        print(text, flush=True)
    except OSError as e:  # `> /dev/full`, a full disk; a reader gone (`| head -1`) is main's: a quiet stop
        raise e if isinstance(e, BrokenPipeError) else OutputError(f"<stdout>: cannot write ({e.strerror})") from None


def _listen_recognizer(args: argparse.Namespace):
    if not args.ray:
        import torch

        # One stream of small steps: extra intra-op threads only add sync cost, and under CPU
        # contention they made recognition 10-30x slower than real time here (BENCHMARKS.md).
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        return load_recognizer(args)
    from .distributed.session import RayRecognizer

    # The decoding a local run would use (flags, else the model's recommendation), so both agree.
    checkpoint, options = checkpoint_and_options(args)
    return RayRecognizer.connect(args.model, device=args.compute_device, options=options, checkpoint=checkpoint)


def cmd_listen(args: argparse.Namespace) -> int:
    from models.errors import InputError

    from .live.listen import ListenError, StopOnSignals, make_display, recording, run
    from .live.microphone import Microphone, MicrophoneError, find_device

    display = make_display(args.format)
    recognizer = None
    try:
        device = find_device(args.device)  # before loading the model: a wrong name fails fast
        recognizer = _listen_recognizer(args)
        mic = Microphone(device)
        session = recognizer.session(mic.sample_rate, mic.channels)
        with StopOnSignals() as stop, recording(args.save_audio, mic) as record, mic:
            display.note(
                f"rnnstream: listening on {device.index}: {device.name} ({device.hostapi}), "
                f"{mic.sample_rate} Hz, {mic.channels} ch; Ctrl-C to stop"
            )
            heard = run(mic, session, display, stop, args.max_seconds, on_audio=record)
    except MicrophoneError as e:
        report(e)
        return 2
    except (ListenError, InputError) as e:
        display.close()
        report(e)
        return 1
    finally:  # (a reader that went away, `listen | head -3`, is main's: a quiet stop)
        if recognizer is not None:  # the Ray pipeline (and Ray, if it started it)
            recognizer.close()
    lost = mic.stats.problems()
    summary = f"AUDIO LOST: {lost}" if lost else "no audio lost"
    display.note(f"rnnstream: stopped after {heard:.2f} s of audio; {summary}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    import json

    from .live.microphone import MicrophoneError, input_devices

    try:
        devices = input_devices()
    except MicrophoneError as e:
        report(e)
        return 2
    if args.format == "jsonl":
        for d in devices:
            row = {"index": d.index, "name": d.name, "hostapi": d.hostapi, "channels": d.max_channels}
            print(json.dumps({**row, "sample_rate": d.sample_rate, "default": d.is_default}))
        return 0
    if not devices:
        print("no audio input devices found", file=sys.stderr)
        return 1
    width = max(len(d.name) for d in devices)
    print(f"  {'index':>5}  {'name':<{width}}  {'host API':<8}  {'channels':>8}  native rate")
    for d in devices:
        mark = "*" if d.is_default else " "
        print(f"{mark} {d.index:>5}  {d.name:<{width}}  {d.hostapi:<8}  {d.max_channels:>8}  {d.sample_rate} Hz")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch.driver import BatchOptions, run_batch
    from .batch.sinks import open_sink
    from .pipeline import PipelineSpec

    with open_sink(args.output, args.format) as sink:  # before the model: a place that cannot be written fails fast
        checkpoint, options = checkpoint_and_options(args)  # options: portable to any node
        spec = PipelineSpec(device=args.compute_device, options=options, decoders=args.decoders)
        opts = BatchOptions(
            fmt=args.format, address=args.address, workers=args.workers, streams=args.streams,
            chunk_seconds=args.chunk_seconds, in_process=args.in_process, progress=not args.no_progress,
        )
        summary = run_batch(args.inputs, sink, args.model, opts, spec, checkpoint=checkpoint)
    print(
        f"rnnstream: {summary.transcribed} transcribed, {summary.skipped} already done, {summary.failed} failed; "
        f"{summary.audio_seconds / 3600:.3f} h of {summary.medium} in {summary.wall_seconds:.1f} s ({summary.rtfx:.0f}x real time)",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0


def _shared(args: argparse.Namespace, model: str, checkpoint, options, processes: int = 1):
    """A SharedRecognizer of `checkpoint` that connections are sessions of: in `processes` child processes
    (--pipeline process), in a thread of this process (--pipeline thread), or on Ray (--ray)."""
    from .ingest import IngestOptions
    from .pipeline import PipelineSpec

    # overflow="drop": the server never waits for a tick; a stream's input past 30 s unsent is dropped, counted.
    ingest = IngestOptions(window=args.window, overflow="drop", admit_latency=args.max_lag)
    if args.ray:
        from .distributed.session import RayRecognizer

        return RayRecognizer.connect(
            model, address=args.address, device=args.compute_device, options=options, checkpoint=checkpoint, ingest=ingest
        )
    import torch

    from .session import Recognizer

    # One intra-op thread: the event loop needs the other core (see BENCHMARKS.md, issue 16).
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    spec = PipelineSpec(device=args.compute_device, options=options)
    if args.pipeline == "process":
        from .process import process_recognizer

        return process_recognizer(checkpoint, spec, threads, processes, ingest)
    return Recognizer(checkpoint, options).shared(spec, ingest)


def _serve_recognizers(args: argparse.Namespace):
    """The main model's SharedRecognizer and, beside a speech model, the pen model's (`--pen-model`; None: none)."""
    from models.checkpoint import load_checkpoint

    from .options import resolve_options

    device = None if args.ray else (args.compute_device or "cpu")
    checkpoint, options = checkpoint_and_options(args, device)
    if args.pen_model == "none" or checkpoint.extractor().medium == "ink":  # a pen main model takes the points
        return _shared(args, args.model, checkpoint, options, args.processes), None
    pen = load_checkpoint(args.pen_model, device or "cpu")
    if (medium := pen.extractor().medium) != "ink":
        raise CheckpointError(f"--pen-model {args.pen_model}: not a pen model (its front end reads {medium})")
    main = _shared(args, args.model, checkpoint, options, args.processes)
    try:
        return main, _shared(args, args.pen_model, pen, resolve_options(pen))
    except BaseException:
        main.close()
        raise


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from .serve.server import ServeOptions, run

    if args.address and not args.ray:
        report("--address needs --ray")
        return 2
    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as e:
            report(f"--token-file: {e.strerror}: {args.token_file}")
            return 2
        except UnicodeDecodeError:
            report(f"--token-file: not UTF-8 text: {args.token_file}")
            return 2
        if not token:
            report(f"--token-file: empty: {args.token_file}")
            return 2
    logging.basicConfig(level=logging.WARNING, format="rnnstream: %(levelname)s: %(message)s")
    options = ServeOptions(
        host=args.host, port=args.port, max_clients=args.max_clients, token=token,
        idle_timeout=args.idle_timeout or None, sample_rate=args.sample_rate, tick=args.tick_ms / 1000,
    )
    recognizer, pen = _serve_recognizers(args)

    def ready(server) -> None:
        where = f"ws://{options.host}:{server.port}"
        mode = "Ray" if args.ray else f"recognizer in {args.processes} child processes" if args.pipeline == "process" else "in process"
        extra = f", pen input at {where}/pen ({args.pen_model})" if pen is not None else ""
        print(f"rnnstream: serving {where} (page: http://{options.host}:{server.port}/, metrics: /metrics), {mode}"
              f"{extra}", file=sys.stderr, flush=True)

    try:
        asyncio.run(run(recognizer, options, on_ready=ready, pen=pen))
    except OSError as e:  # the port is taken, the host is not ours
        report(f"cannot listen on {options.host}:{options.port}: {e.strerror or e}")
        return 1
    finally:
        if pen is not None:  # first: on Ray the main model's recognizer closes the Ray it started
            pen.close()
        recognizer.close()
    print("rnnstream: stopped; every open stream got its final result", file=sys.stderr, flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# the parser


def _add_transcribe(sub) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files (wav, flac, ogg, mp3; any rate and channels)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    add_model_args(p)
    p.add_argument("--format", choices=FORMATS, default="text")
    add_number(p, "--chunk-ms", int, 0, 60_000, "feed the file in chunks of this length; 0 = whole file", default=160)
    p.add_argument("--output-dir", help="write one srt/vtt/jsonl file per input here instead of stdout")
    p.set_defaults(func=cmd_transcribe)


def _add_listen(sub) -> None:
    p = sub.add_parser("listen", help="transcribe a microphone live (Ctrl-C to stop)")
    p.add_argument("--device", help="input device: index or (part of) its name; see `rnnstream devices`")
    add_model_args(p)
    p.add_argument(
        "--format", choices=("text", "jsonl"), default=None,
        help="text: live captions; jsonl: one event per line (default: text on a terminal, else jsonl)",
    )
    add_number(p, "--max-seconds", float, 0.01, 1e7, "stop after this much audio")
    p.add_argument("--ray", action="store_true", help="recognize through the Ray pipeline")
    p.add_argument("--save-audio", metavar="WAV", help="also write the audio that was recognized to this file")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("devices", help="list audio input devices and their native rates")
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.set_defaults(func=cmd_devices)


def _add_batch(sub) -> None:
    p = sub.add_parser("batch", help="transcribe many files through Ray (resumable: reruns skip what is done)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, directories, globs or manifests (.txt/.lst/.jsonl)")
    p.add_argument("--output", "-o", required=True, help="a .jsonl file; for srt/vtt a directory (with index.jsonl)")
    p.add_argument("--format", choices=BATCH_FORMATS, default="jsonl")
    p.add_argument("--address", help="an existing Ray cluster (host:port); default: start Ray on this machine")
    add_number(p, "--workers", int, 1, 1024, "pipelines (model actors); default: one per node")
    add_number(p, "--streams", int, 1, 4096, "files in flight per worker (default 64)", default=64)
    add_number(p, "--decoders", int, 1, 64, "decoder actors per worker (default 2)", default=2)
    # 0.1 s: the ingest's smallest chunk; 60 s: a block per file in flight (64 x 60 s of 48 kHz stereo is 1.5 GB)
    add_number(p, "--chunk-seconds", float, 0.1, 60, "seconds of audio per file per tick (default 8)", default=8.0)
    p.add_argument("--in-process", action="store_true", help="no Ray: run the same stages in this process")
    p.add_argument("--no-progress", action="store_true")
    add_model_args(p)
    p.set_defaults(func=cmd_batch)


def _add_serve(sub) -> None:
    from .serve.protocol import MAX_RATE, MIN_RATE

    p = sub.add_parser("serve", help="serve live streams over WebSocket (the Vosk protocol), a page at / and /metrics")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    add_number(p, "--port", int, 0, 65535, "port (default 2700, the Vosk server's; 0: any free)", default=2700)
    add_model_args(p)
    p.add_argument("--ray", action="store_true", help="recognize through a Ray pipeline (default: on this machine)")
    p.add_argument("--address", help="with --ray: an existing Ray cluster (host:port); default: start Ray here")
    p.add_argument("--pipeline", choices=("process", "thread"), default="process",
                   help="without --ray, where the recognizer runs: a child process (default; the server's event loop "
                        "keeps a core to itself, and a lost child is replaced with every stream replayed) or a thread "
                        "of the server's process (one process, one GIL)")
    add_number(p, "--processes", int, 1, 64, default=SERVE_PROCESSES,
               help="with --pipeline process: the main model's child processes, each a whole pipeline for a share "
                    "of the streams (one batched model call per child per tick; the pen model has one; default: "
                    f"the cores, at most 4: {SERVE_PROCESSES} here)")
    add_number(p, "--max-clients", int, 1, 100_000, "refuse connections past this many (default 1000)", default=1000)
    add_number(p, "--max-lag", float, 0.01, 3600, default=1.0, metavar="SECONDS",
               help="refuse new streams (close 1013) while the recognizer is this far behind (default 1.0)")
    p.add_argument("--token-file", help="a file holding a shared token clients must send (Bearer header or ?token=)")
    add_number(p, "--idle-timeout", int, 0, 86_400, default=30,
               help="seconds without a message before a stream is ended, its final sent (0: never; default 30)")
    add_number(p, "--sample-rate", int, MIN_RATE, MAX_RATE, default=8000,
               help="the rate of clients that send no config (default 8000, as the Vosk server)")
    p.add_argument("--pen-model", default="handwriting",
                   help="beside a speech model, a pen model for the page's canvas and pen clients at ws://HOST:PORT/pen "
                        "(default: handwriting; 'none': no pen input)")
    # 1 s: a tick is every answer's latency floor; --tick-ms 100000000 started a server that never answered
    add_number(p, "--tick-ms", int, 1, 1000, "at most one tick per this many ms (default 40)", default=40)
    add_number(p, "--window", int, 1, 64, "ticks in flight at most (default 4)", default=4)
    p.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnstream", description="Streaming LSTM-CTC speech recognition")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_transcribe, _add_listen, _add_batch, _add_serve):
        add(sub)
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", help="an unexpected error shows its traceback (also RNNSTREAM_DEBUG=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CheckpointError as e:
        report(e)
        return 2
    except OutputError as e:
        report(e)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`listen | head -3`): stop quietly, as a filter does
        _drop_stdout()
        return 0
    except Exception as e:  # the last resort: one line, not a traceback
        if args.debug or os.environ.get("RNNSTREAM_DEBUG") == "1":
            raise
        report(f"{one_line(e)[:500]} ({type(e).__name__}; --debug shows where)")
    try:
        sys.stdout.flush()
    except OSError:  # stdout itself failed (ENOSPC): the exit's own flush would print a traceback
        _drop_stdout()
    return 1


def _drop_stdout() -> None:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
