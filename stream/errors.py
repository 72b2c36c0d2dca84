"""The one-line error report every command prints: `rnnstream: error: <what>: <why>` on stderr."""

from __future__ import annotations

import sys
from typing import IO


def report(message: object, kind: str = "error", file: IO[str] | None = None) -> None:
    """Print `rnnstream: <kind>: <message>` (message: text or an exception naming its input) and flush."""
    print(f"rnnstream: {kind}: {message}", file=file or sys.stderr, flush=True)
