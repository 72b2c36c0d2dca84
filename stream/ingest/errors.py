"""The errors a producer gets from the ingest: each names what happened to its streams, not how the ingest works.

Invariant: `PipelineFailed` is raised only once failover has given up (or was never on), and every stream not
over is then marked lost; `Overloaded` refuses a stream before anything of it exists, so there is nothing to undo.
"""

from __future__ import annotations


class StreamExpired(RuntimeError):
    """The stream sent nothing for longer than the idle timeout: the model freed its slot."""


class PipelineFailed(RuntimeError):
    """An actor of the pipeline died (its node went away) and it could not be restarted: the streams are lost."""


class Overloaded(RuntimeError):
    """The pipeline is behind by more than its latency budget: new streams are refused until it catches up (the
    streams already open go on, at the pipeline's pace)."""
