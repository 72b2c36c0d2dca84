"""The `rnnstream` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.audio import AudioError
from models.checkpoint import DEFAULT_MODEL, CheckpointError

from .formats import FORMATS, render


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name or checkpoint path (default: {DEFAULT_MODEL})")
    p.add_argument("--beam", type=int, help="beam width; 0 = greedy (default: what the model recommends; 16 with --lexicon/--lm)")
    p.add_argument("--lexicon", help="lexicon file for beam search (words the output may contain); 'none': no lexicon")
    p.add_argument("--lm", help="KenLM language model for beam search")
    p.add_argument("--compute-device", default=None, help="torch device for the model (default: cuda if present)")


def decoding_changes(args: argparse.Namespace) -> dict:
    """The decoding flags as changes to the model's recommended decoding (the same for every command)."""
    changes = {}
    if args.beam is not None:
        changes["beam"] = args.beam
    if args.lexicon:
        changes.update(lexicon=None if args.lexicon == "none" else args.lexicon, words=None)
    if args.lm:
        changes["lm"] = args.lm
    if (args.lexicon not in (None, "none") or args.lm) and args.beam is None:
        changes["beam"] = 16  # a lexicon or an LM is used by the beam search
    return changes


def load_recognizer(args: argparse.Namespace):
    from .session import Recognizer

    recognizer = Recognizer.load(args.model, device=args.compute_device)  # with the model's recommended decoding
    changes = decoding_changes(args)
    return recognizer.with_options(**changes) if changes else recognizer


def cmd_transcribe(args: argparse.Namespace) -> int:
    from .transcribe import transcribe_file

    recognizer = load_recognizer(args)
    failed = 0
    for path in args.paths:
        try:
            transcript = transcribe_file(recognizer, path, chunk_ms=args.chunk_ms)
        except AudioError as e:
            print(f"rnnstream: error: {e}", file=sys.stderr)
            failed += 1
            continue
        out = render(transcript, args.format, with_path=len(args.paths) > 1)
        if args.output_dir and args.format != "text":
            target = Path(args.output_dir) / (Path(path).stem + "." + args.format)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(out + "\n")
        else:
            print(out, flush=True)
    if failed:
        print(f"rnnstream: {failed} of {len(args.paths)} files failed", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnstream", description="Streaming LSTM-CTC speech recognition")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="transcribe audio files (wav, flac, ogg, mp3; any rate and channels)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _add_model_args(p)
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--chunk-ms", type=int, default=160, help="feed the file in chunks of this length; 0 = whole file")
    p.add_argument("--output-dir", help="write one srt/vtt/jsonl file per input here instead of stdout")
    p.set_defaults(func=cmd_transcribe)

    from .listen import add_listen_parsers  # listen, devices (issue 5)

    add_listen_parsers(sub)

    from .batch import add_batch_parser  # batch (issue 4)
    from .bench import add_bench_parser  # bench streams|offline (issue 4)

    add_batch_parser(sub)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CheckpointError as e:
        print(f"rnnstream: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
