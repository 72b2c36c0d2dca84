"""The pen extension of the protocol, for a handwriting model: text messages of JSON points instead of PCM.

Client -> server: an optional first `{"config": {"sample_rate": P, "words": true}}` (P: points per second,
assumed only for points without a time; default the model's); then text messages, each one point `{"x", "y",
"t", "pen"}` or a JSON list of them (the JSON-lines ink form `models.ink` reads: x right, y down, any units; `t`
seconds, absent or null: unknown; `pen` "down" or "up", "down" if absent); `{"eof" : 1}` ends. Answers are the
audio ones (`{"partial"}`, `{"result", "text"}`, times in ink seconds). A Vosk client never sees any of it: pen
messages go to a pen model only (`serve --model handwriting`, or the path `/pen` beside a speech model).

Bad pen input is a `ProtocolError`: binary data (audio sent to a pen model, 1003), a message that is not points
(1007), more than MAX_POINTS points in one message (1009, counted before the JSON is parsed; the bytes of a
message are bounded by the server's `max_message`, 1 MiB, also 1009). NaN coordinates are the front end's to
refuse (`models.pen`): the stream ends with its error, 1007.
"""

from __future__ import annotations

import numpy as np

from models.ink import point_row

from . import protocol
from .protocol import INVALID, TOO_BIG, UNSUPPORTED, Config, Message, ProtocolError, Rates


class InkClock:
    """A pen stream's messages weighed in ink time (points at `rate`, the hub's unit): each gap counts as the pen
    front end counts it (at most `max_gap` seconds, models.pen), from the last point of the message before. Without
    it 2,000 points 3 s apart weighed 20 s at 100 a second but made 300,000 frames (4.5 s of one core's front end
    alone): the hub's queue bound, in input seconds, never saw them."""

    def __init__(self, rate: int, max_gap: float):
        self.rate, self.max_gap = rate, max_gap
        self.last: float | None = None  # the time of the last timed point

    def weigh(self, points: np.ndarray) -> int:
        if not len(points):
            return 0
        times = points[:, 2]
        timed = times[~np.isnan(times)]
        seconds = (len(times) - len(timed)) / self.rate  # untimed points come 1/rate apart
        if len(timed):
            steps = np.diff(timed, prepend=timed[0] if self.last is None else self.last)
            seconds += float(np.clip(steps, 0.0, self.max_gap).sum())
            self.last = float(timed[-1])
        return max(len(points), round(seconds * self.rate))


POINT_RATES = Rates(1, 100_000, required=False)  # points a second (UNIPEN's tablets: 60 to 9,600); default the model's
MAX_POINTS = 10_000  # per message: 100 s of ink at 100 points a second (the page sends 50 ms a message)


def parse_pen(message: str | bytes, config: Config, started: bool) -> Message:
    """One client message to a pen model -> a new Config, Eof, or points [n, 4]; raises ProtocolError."""
    if isinstance(message, bytes):
        raise ProtocolError("binary data sent to a pen model: send points as JSON text", UNSUPPORTED)
    if message.count("{") > MAX_POINTS:  # each point is an object: refused before 10^5 of them are parsed
        raise ProtocolError(f"more than {MAX_POINTS} points in one message", TOO_BIG)
    obj = protocol.decode(message)
    if isinstance(obj, dict) and ("config" in obj or obj.keys() == {"eof"}):
        return protocol.control(obj, config, started, POINT_RATES)
    rows = obj if isinstance(obj, list) else [obj]
    if len(rows) > MAX_POINTS:  # points were counted as objects above: this holds for a list of other things
        raise ProtocolError(f"{len(rows)} points in one message: at most {MAX_POINTS}", TOO_BIG)
    points = []
    for n, p in enumerate(rows, 1):
        try:
            points.append(point_row(p))
        except (ValueError, OverflowError) as e:  # OverflowError: an integer past a float, 1e400 written out
            where = f"point {n} of the message" if isinstance(obj, list) else "the message"
            raise ProtocolError(f"{where} is not a point ({e}): send {{\"x\", \"y\", \"t\", \"pen\"}}", INVALID) from None
    return np.array(points, dtype=np.float64).reshape(-1, 4)
