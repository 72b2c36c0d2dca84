"""Where input enters: each stream's data is coalesced into chunks of >= 100 ms (pen points: any number) and, once
per tick, the ready chunks of ALL streams go to the pipeline as one message.

At most `window` ticks are in flight, so a slow stage slows the producer (or, with overflow="drop",
input past a bound is dropped and counted, never silently). Results come back per tick, in order, and
are routed to their streams. Works with any `Pipeline` (Ray or in-process) alike.

One job a module: `buffer` (a stream's input until it is sent), `admission` (the overload policy and the model's
slots), `journal` (failover: the input since the last snapshot, replayed after a restart, no final twice),
`phase` (a stream's life as one value, and the `StreamStatus` its producer sees), `streams` (the records by key:
a tick's chunks cut, its updates delivered), `window` (the ticks in flight, as Futures: the one place that waits
on a pipeline), `stats`, `errors`, and `coordinator` (the `Ingest` that holds them under one lock). Callers
import from here only.
"""

from .coordinator import Ingest, IngestOptions
from .errors import Overloaded, PipelineFailed, StreamExpired
from .phase import StreamStatus
from .stats import IngestStats

__all__ = ["Ingest", "IngestOptions", "IngestStats", "Overloaded", "PipelineFailed", "StreamExpired", "StreamStatus"]
