"""What an ingest counts, for its owner's reports and the benchmarks.

Invariant: every field only grows. A second of input is counted once in `audio_seconds` when pushed, whatever
becomes of it after (dropped, replayed); `max_inflight` never exceeds the ingest's window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class IngestStats:
    ticks: int = 0
    chunks: int = 0
    audio_seconds: float = 0.0  # input seconds pushed
    max_inflight: int = 0  # ticks in the pipeline at once (never above the window)
    blocked: int = 0  # times a producer waited for the window: backpressure at work
    blocked_seconds: float = 0.0
    dropped_seconds: float = 0.0  # input dropped by the "drop" overflow policy (never silently)
    max_buffered_seconds: float = 0.0
    snapshots: int = 0  # stream states received (failover)
    snapshot_bytes: int = 0
    recoveries: int = 0  # pipelines restarted after a lost worker
    recovery_seconds: float = 0.0  # spent restarting them
    replayed_seconds: float = 0.0  # input sent again after a restart
    replayed_finals: int = 0  # finals given again by a replay, not delivered twice
    refused: int = 0  # new streams refused past the latency budget (Overloaded)

    def to_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}
