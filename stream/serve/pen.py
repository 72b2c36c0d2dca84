"""The pen extension of the protocol, for a handwriting model: text messages of JSON points instead of PCM.

Client -> server: an optional first `{"config": {"sample_rate": P, "words": true}}` (P: points per second,
assumed only for points without a time; default the model's); then text messages, each one point `{"x", "y",
"t", "pen"}` or a JSON list of them (the JSON-lines ink form `models.ink` reads: x right, y down, any units; `t`
seconds, absent or null: unknown; `pen` "down" or "up", "down" if absent); `{"eof" : 1}` ends. Answers are the
audio ones (`{"partial"}`, `{"result", "text"}`, times in ink seconds). A Vosk client never sees any of it: pen
messages go to a pen model only (`serve --model handwriting`, or the path `/pen` beside a speech model).

Bad pen input is a `ProtocolError`: binary data (audio sent to a pen model, 1003), a message that is not points
(1007). NaN coordinates are the front end's to refuse (`models.pen`): the stream ends with its error, 1007.
"""

from __future__ import annotations

import numpy as np

from models.ink import point_row

from . import protocol
from .protocol import INVALID, UNSUPPORTED, Config, Message, ProtocolError, Rates

POINT_RATES = Rates(1, 100_000, required=False)  # points a second (UNIPEN's tablets: 60 to 9,600); default the model's
MAX_POINTS = 100_000  # per message: 1,000 s of ink at 100 points a second


def parse_pen(message: str | bytes, config: Config, started: bool) -> Message:
    """One client message to a pen model -> a new Config, Eof, or points [n, 4]; raises ProtocolError."""
    if isinstance(message, bytes):
        raise ProtocolError("binary data sent to a pen model: send points as JSON text", UNSUPPORTED)
    obj = protocol.decode(message)
    if isinstance(obj, dict) and ("config" in obj or obj.keys() == {"eof"}):
        return protocol.control(obj, config, started, POINT_RATES)
    rows = obj if isinstance(obj, list) else [obj]
    if len(rows) > MAX_POINTS:
        raise ProtocolError(f"{len(rows)} points in one message: at most {MAX_POINTS}", INVALID)
    points = []
    for n, p in enumerate(rows, 1):
        try:
            points.append(point_row(p))
        except ValueError as e:
            where = f"point {n} of the message" if isinstance(obj, list) else "the message"
            raise ProtocolError(f"{where} is not a point ({e}): send {{\"x\", \"y\", \"t\", \"pen\"}}", INVALID) from None
    return np.array(points, dtype=np.float64).reshape(-1, 4)
