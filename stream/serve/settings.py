"""`rnnstream serve`'s settings, and the memory bound per connection they set (README, "Memory").

Invariant: `connection_bound` counts every place a connection's bytes can wait (frames read ahead, its audio queued
for the hub and in the ingest, its unsent answers, its config, the lead-in rule's wait); tools/soak.py holds the
server to it under abusive clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import protocol

INGEST_SECONDS = 35.0  # a stream's input the ingest holds at most: 30 s buffered (overflow="drop") + 5 s for failover
READ_AHEAD = 16  # frames read ahead of the handler, then TCP backpressure on that client alone (websockets' default)

@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 2700  # the Vosk server's port
    max_clients: int = 1000
    token: str | None = None
    idle_timeout: float | None = 30.0  # seconds without a message before the stream is ended (its final sent)
    sample_rate: int = 8000  # without a config message: the Vosk server's default (VOSK_SAMPLE_RATE)
    # bytes per frame (websockets' default): 32 s of 16 kHz PCM, 10,000 pen points; past it 1009, unread.
    # With READ_AHEAD frames it bounds a connection's read-ahead to 16 MiB.
    max_message: int = 1 << 20
    max_queued: float = 10.0  # seconds of a connection's audio waiting for the hub past which it is dropped
    max_unread: int = 200  # answers unsent past which a client is a slow reader if it stays so...
    slow_after: float = 5.0  # ...for this many seconds (a reading client drains a tick's batch in ms)
    max_unread_bytes: int = 1 << 20  # unsent answer text past which it is cut at once: the outbox's memory bound
    # Messages read from one client a second, in bursts of as many (then it waits: TCP backpressure, nothing lost).
    # Each costs the server ~70 us with its answer (measured: 96,000 1-sample messages, 7 s of CPU), so a client
    # flooding them takes at most 7% of a core (at 2,000/s four such took honest partials' p95 from 0.1 to 2.3 s
    # on this 2-core machine); 1 ms messages still go at 1x, 100 ms messages at 100x.
    message_rate: float = 1000.0
    tick: float = 0.04  # seconds between ticks at most once per: larger batches, ~tick/2 more latency


def connection_bound(options: ServeOptions, rate: int = 16000) -> int:
    """Bytes one connection may hold at most, its client sending audio at `rate` (README, "Memory"): frames read
    ahead, its audio waiting for the hub and in the ingest (30 s, as float32, + 5 s kept for failover), its unsent
    answers (~3x their text in objects), its config, the lead-in rule's wait: 23 MiB at 8 kHz, 24 MiB at 16 kHz, 30 MiB at 48 kHz (16 of
    them the read-ahead, full only while the event loop falls behind); a client reading and keeping up holds
    well under 1 MB."""
    audio = int((options.max_queued + INGEST_SECONDS) * rate * 4) + options.max_message
    lead_in = 8 * 16000 * 4  # a stream waiting for the lead-in rule's gate holds its 8 s of 16 kHz audio (models/leadin.py)
    return READ_AHEAD * options.max_message + audio + lead_in + 3 * options.max_unread_bytes + 4 * protocol.MAX_TEXT
