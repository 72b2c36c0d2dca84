"""The command line's option types: every number is finite and in a range --help shows, every file exists; a bad
value is argparse's one-line usage error naming the option (exit status 2), before anything loads.

Only `stream.cli` and the tools' own command lines import this module; the library takes typed values.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from models.checkpoint import DEFAULT_MODEL
from models.decoding import CHARSETS


def bounded(kind: type, low: int | float, high: int | float):
    """The argparse type of every numeric option: a finite `kind` (int or float) from `low` to `high`, both included.
    NaN fails every comparison, so `value < low` alone let `--max-lag nan` through and turned the overload check
    off; inf and 1e999 are refused by the same finiteness test."""

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):  # (int('9' * 5000) is a ValueError: Python's digit limit)
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text[:40]!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be from {_show(low)} to {_show(high)}, not {text[:40]}")
        return value

    parse.bounds = (kind, low, high)  # the range --help shows (and the tests read)
    parse.__name__ = kind.__name__
    return parse


def add_number(p: argparse.ArgumentParser, flag: str, kind: type, low: int | float, high: int | float, help: str, **kw) -> None:
    """A numeric option, its range checked by `bounded` and shown in --help."""
    p.add_argument(flag, type=bounded(kind, low, high), help=f"{help} [{_show(low)} to {_show(high)}]", **kw)


def _show(bound: int | float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


def lm_argument(text: str) -> str:
    from .options import lm_choice

    try:
        return lm_choice(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def lexicon_file(text: str) -> str:
    return text if text == "none" else existing_file(text)


positive_int = bounded(int, 1, 1 << 20)  # the tools' counts (clients, streams, threads)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name or checkpoint path (default: {DEFAULT_MODEL})")
    add_number(p, "--beam", int, 0, 1024, "beam width; 0 = greedy (default: what the model recommends; 16 with --lexicon/--lm)")
    p.add_argument("--lexicon", type=lexicon_file,
                   help="lexicon file for beam search (words the output may contain); 'none': no lexicon")
    p.add_argument("--lm", type=lm_argument,
                   help="language model: chars (English characters: a pen model's default for words), words (English "
                        "lexicon + word LM), none, or a KenLM/ARPA file; not with --charset")
    p.add_argument("--compute-device", default=None, help="torch device for the model (default: cuda if present)")
    p.add_argument("--charset", choices=list(CHARSETS),
                   help="the only characters the output may hold (fields of digits or letters; default: all)")


def checkpoint_and_options(args: argparse.Namespace, device: str | None = "cpu"):
    """The model, loaded once, and the decoding the flags ask for on top of its recommendation."""
    from models.checkpoint import load_checkpoint

    from .errors import report
    from .options import resolve_options
    from .session import default_device

    checkpoint = load_checkpoint(args.model, device or default_device())
    try:
        return checkpoint, resolve_options(checkpoint, beam=args.beam, lexicon=args.lexicon, lm=args.lm, charset=args.charset)
    except ValueError as e:  # options that do not go together (--lm with --charset): a usage error
        report(str(e))
        raise SystemExit(2) from None
