"""Errors of bad input, shared by every front end: one line, naming what was wrong.

A stream's bad input (a corrupt file, NaN samples, broken ink) must fail that stream alone, with a message a
person can act on; the pipeline stages catch `InputError` per stream and carry its one-line reason.
"""

from __future__ import annotations


class InputError(ValueError):
    """Input that a front end cannot turn into model frames (missing, empty, corrupt, NaN, wrong layout)."""


def one_line(e: BaseException) -> str:
    """An exception's message on one line (libsndfile's and XML parsers' messages span several)."""
    return " ".join(str(e).split()) or type(e).__name__
