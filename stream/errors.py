"""A stream's error as one typed value, and the one-line report every command prints.

Invariant: what ended a stream travels from the stage that saw it to the edge as one `StreamError` (a kind and
a one-line message); each edge maps the kind once: the server to a close code (stream.serve.hub), a session to an
exception (stream.shared, stream.session), batch to its error record. Commands print `rnnstream: error: <what>:
<why>` on stderr (`report`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from typing import IO


class Kind(Enum):
    INPUT = "input"  # the stream's own input is bad (corrupt, NaN, a wrong layout, a stream not open)
    EXPIRED = "expired"  # idle past the model's timeout: its slot was freed
    LOST = "lost"  # the pipeline died and could not be restarted
    CLOSED = "closed"  # the ingest (a server shutting down) was closed under it
    OVERLOADED = "overloaded"  # no model slot was free for it (the producer did not reserve one)
    INTERNAL = "internal"  # what nobody foresaw in a stage: a bug, said in one line


@dataclass(frozen=True)
class StreamError:
    kind: Kind
    message: str

    def __str__(self) -> str:
        return self.message


def report(message: object, kind: str = "error", file: IO[str] | None = None) -> None:
    """Print `rnnstream: <kind>: <message>` (message: text or an exception naming its input) and flush."""
    print(f"rnnstream: {kind}: {message}", file=file or sys.stderr, flush=True)
