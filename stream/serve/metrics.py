"""What `/metrics` reports, in the Prometheus text format: one registry per server (tests run several).

Latencies are the server's part: from a message's arrival (its frame read off the socket) to its answer being
queued for sending. The real-time factor is the seconds the recognizer was busy (ticks in flight) per second
of audio pushed, over the last `RTF_WINDOW` seconds: below 1 it keeps up.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401  (re-exported for the server)
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# 10 ms to 5 s: a tick is ~40 ms, the budget for a partial 300 ms (the target).
BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
RTF_WINDOW = 10.0


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "rnnstream_serve_"
        self.open_streams = Gauge(p + "open_streams", "WebSocket connections open now", registry=r)
        self.clients = Counter(p + "clients", "connections accepted", registry=r)
        self.refused = Counter(p + "refused_clients", "connections refused", ["reason"], registry=r)
        self.errors = Counter(p + "errors", "connections closed for bad input", ["reason"], registry=r)
        self.disconnected = Counter(p + "disconnected", "connections the server ended early", ["reason"], registry=r)
        self.partial_latency = Histogram(
            p + "partial_latency_seconds", "message arrival to its partial answer", buckets=BUCKETS, registry=r
        )
        self.final_latency = Histogram(
            p + "final_latency_seconds", "message (or eof) arrival to its result", buckets=BUCKETS, registry=r
        )
        self.audio = Counter(p + "audio_seconds", "audio received", registry=r)
        self.dropped = Counter(p + "dropped_audio_seconds", "audio dropped by the bounded buffers", registry=r)
        self.dropped_answers = Counter(p + "dropped_answers", "answers not sent to clients that read nothing", registry=r)
        self.ticks = Counter(p + "ticks", "ticks sent to the recognizer", registry=r)
        self.tick_streams = Histogram(
            p + "tick_streams", "streams answered per tick (the batch)", buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
            registry=r,
        )
        self.rtf = Gauge(p + "real_time_factor", "recognizer busy seconds per audio second (last 10 s)", registry=r)
        self.rtf.set_function(self._rtf)
        self._lock = threading.Lock()
        self._busy: deque[tuple[float, float]] = deque()
        self._audio: deque[tuple[float, float]] = deque()

    def busy(self, seconds: float) -> None:
        self._add(self._busy, max(seconds, 0.0))

    def heard(self, seconds: float) -> None:
        self.audio.inc(seconds)
        self._add(self._audio, seconds)

    def _add(self, window: deque, value: float) -> None:
        now = time.monotonic()
        with self._lock:
            window.append((now, value))
            while window and window[0][0] < now - RTF_WINDOW:
                window.popleft()

    def _rtf(self) -> float:
        cut = time.monotonic() - RTF_WINDOW
        with self._lock:
            busy = sum(v for t, v in self._busy if t >= cut)
            audio = sum(v for t, v in self._audio if t >= cut)
        return busy / audio if audio else 0.0

    def text(self) -> bytes:
        return generate_latest(self.registry)
