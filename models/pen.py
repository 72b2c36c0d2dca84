"""The pen front end: points (x, y, t, pen) -> frames of fixed ink time, normalised causally; streaming-exact.

Input: float arrays [n, 4] of points in writing order, one row (x, y, t, pen): x to the right and y down (as on
screens and in InkML), in any units; t in seconds, or NaN (the point then comes 1/rate after the one before);
pen 1 while the pen touches (down), 0 when it is up. Consecutive pen-down points are a stroke; a pen-up point
ends it (its position is not used). `models.ink` reads InkML, JSON lines and the UCI trajectories into this form.

Frames: one per `frame_seconds` of ink time from the first point, so the tablet's rate drops out (the path is
interpolated at frame boundaries). Sizes are divided by a running estimate of the writer's size (the spread of
pen-down heights, forgetting over `norm_seconds`, started from a prior made of the pen's speed), x is deslanted
by a running slant estimate, and heights are taken from a running baseline: only ink already written moves them.
Pen-up time gives pen-up frames (input 0 but the pen-up flag), so a long lift makes the model's blank steps that
the back end's silence rules end a line on (EndpointConfig.silence_after_speech: the ink endpoint).

Invariant: every number is computed point by point and frame by frame in float64 from carried state, so any split
of a stream's points into chunks gives the same frames (tests/test_handwriting.py checks it with hypothesis).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .frontend import whole_steps
from .ink import INK_SUFFIXES, read_ink

# The frame's values, in order (dim = 11).
FEATURES = ("down", "dx", "dy", "path", "jump_x", "jump_y", "start", "end", "height", "dir_x", "dir_y")


@dataclass(frozen=True)
class PenConfig:
    frame_seconds: float = 0.02  # 50 frames a second: a fast character (~0.15 s) still gets ~7 frames
    rate: int = 100  # points per second assumed where a point's time is NaN
    norm_seconds: float = 4.0  # pen-down seconds the size, slant and baseline estimates forget over (~2 words)
    prior_seconds: float = 0.5  # weight of the size prior, in pen-down seconds
    prior_size_seconds: float = 0.04  # prior size = pen speed x this (a 0.3 s letter travels ~8 sizes a second)
    slant_prior: float = 1.0  # weight of the upright prior, in squared sizes of near-vertical travel
    tail_seconds: float = 0.3  # pen-up frames after the end: a unidirectional model reads the last letter on them
    clip: float = 5.0  # every value is held to +-clip (a jump across the page is still "far")

    def to_dict(self) -> dict:
        return asdict(self)


class PenExtractor:
    """The pen front end of a model (see models.frontend): the work is per stream, `transform` passes frames on."""

    Config = PenConfig
    dim = len(FEATURES)
    medium = "ink"
    suffixes = frozenset(INK_SUFFIXES)

    def __init__(self, config: PenConfig, stack: int):
        self.config = config
        self.stack = stack
        self.rate = config.rate
        self.frame_seconds = config.frame_seconds

    @property
    def tail_steps(self) -> int:
        return round(self.config.tail_seconds / (self.frame_seconds * self.stack))

    def open(self, rate: int | None = None, channels: int | None = None) -> PenFrontEnd:
        if channels not in (None, 4):
            raise InputError(f"pen input has 4 values a point (x, y, t, pen), not {channels}")
        if rate is not None and not rate > 0:
            raise InputError(f"points per second must be positive, not {rate}")
        return PenFrontEnd(self, rate or self.rate)

    def transform(self, cuts: list[torch.Tensor]) -> list[torch.Tensor]:
        return cuts

    def info(self, path: str | Path) -> tuple[int, int | None, float]:
        ink = read_ink(path)
        return self.rate, 4, ink.duration(self.rate)

    def blocks(self, path: str | Path, size: int) -> Iterator[np.ndarray]:
        points = read_ink(path).points
        for i in range(0, len(points), max(1, size)):
            yield points[i : i + size]


class PenFrontEnd:
    """One pen stream -> frames [n, 11], a multiple of `stack` at a time."""

    def __init__(self, extractor: PenExtractor, rate: int):
        c = self.cfg = extractor.config
        self.stack = extractor.stack
        self.dt = 1.0 / rate
        self.T = c.frame_seconds
        self.decay = math.exp(-c.frame_seconds / c.norm_seconds)
        self.prior_w = c.prior_seconds / c.frame_seconds
        self.tail = round(extractor.tail_steps * self.stack)
        self._pending = torch.zeros(0, PenExtractor.dim)
        # stream state
        self.started = False
        self.t = 0.0  # time of the last point
        self.origin = (0.0, 0.0)  # the first point: coordinates are taken from it (float64 keeps the digits)
        self.fe = 0.0  # end time of the open frame
        self.down = False  # the last point was pen-down
        self.pos = (0.0, 0.0)  # the pen's last pen-down position (interpolated to frame ends)
        self.lift: tuple[float, float] | None = None  # where the last stroke ended
        self._reset_frame()
        # running estimates (decayed sums over pen-down frames)
        self.w = self.sy = self.syy = self.sl = 0.0
        self.sxy = self.sdd = 0.0

    def _reset_frame(self) -> None:
        self.f_down = self.f_start = self.f_end = 0
        self.f_dx = self.f_dy = self.f_path = self.f_jx = self.f_jy = 0.0

    def cut(self, data: np.ndarray, last: bool = False) -> torch.Tensor:
        points = np.asarray(data, dtype=np.float64)
        if points.size == 0:
            points = points.reshape(0, 4)
        if points.ndim != 2 or points.shape[1] != 4:
            raise InputError(f"pen input is points [n, 4] (x, y, t, pen), not an array of shape {list(points.shape)}")
        if not np.isfinite(points[:, [0, 1, 3]]).all() or np.isinf(points[:, 2]).any():
            raise InputError("pen points with NaN or infinite coordinates")
        rows: list[list[float]] = []
        for x, y, t, pen in points.tolist():
            self._point(x, y, t, pen > 0.5, rows)
        if last and self.started:
            rows.append(self._close())
            rows.extend([[0.0] * PenExtractor.dim] * self.tail)
        if not rows:
            return torch.zeros(0, PenExtractor.dim)
        return torch.tensor(rows, dtype=torch.float32)

    def steps(self, frames: torch.Tensor) -> torch.Tensor:
        ready, self._pending = whole_steps(self._pending, frames, self.stack)
        return ready

    def snapshot(self) -> dict:
        """Every field of the stream (scalars, the open frame, the running estimates, the frames short of a step)."""
        return copy.deepcopy(vars(self))

    def restore(self, state: dict) -> None:
        vars(self).update(copy.deepcopy(state))

    def _point(self, x: float, y: float, t: float, down: bool, rows: list[list[float]]) -> None:
        if not self.started:
            t = 0.0 if math.isnan(t) else t
            self.started, self.origin, self.t0 = True, (x, y), t
            self.t, self.fe = t, t + self.T
        else:
            t = self.t + self.dt if math.isnan(t) else max(t, self.t)  # times never go back
        x, y = x - self.origin[0], y - self.origin[1]
        stroke = down and self.down  # a pen-down segment from the last point to this one
        t_prev, (px, py) = self.t, self.pos
        while t >= self.fe:  # close the frames this point's time has passed, the segment cut at their ends
            if stroke:
                a = (self.fe - t_prev) / (t - t_prev)
                self._move(px + a * (x - px), py + a * (y - py))
            rows.append(self._close())
            self.fe = self.t0 + self.T * (round((self.fe - self.t0) / self.T) + 1)  # no drift over long streams
        if stroke:
            self._move(x, y)
        elif down:  # a stroke starts: the jump from the last lift
            self.f_start, self.f_down = 1, 1
            if self.lift is not None:
                self.f_jx += x - self.lift[0]
                self.f_jy += y - self.lift[1]
            self.pos = (x, y)
        elif self.down:  # the pen lifts
            self.f_end = 1
            self.lift = self.pos
        self.down, self.t = down, t

    def _move(self, x: float, y: float) -> None:
        dx, dy = x - self.pos[0], y - self.pos[1]
        self.f_dx += dx
        self.f_dy += dy
        self.f_path += math.hypot(dx, dy)
        self.f_down = 1
        self.pos = (x, y)

    def _close(self) -> list[float]:
        """The open frame's values; pen-down frames first move the running estimates (causal: this frame and
        the ink before it)."""
        down = self.f_down or self.down  # the pen rests on the paper through the frame
        if not down:  # pen-up: nothing moves, no estimate changes (most frames of a resting pen: kept cheap)
            row = [0.0] * PenExtractor.dim
            if self.f_end and self.w > 0.0:
                row[7] = 1.0
            self._reset_frame()
            return row
        c, d = self.cfg, self.decay
        y = self.pos[1]
        self.w = d * self.w + 1.0
        self.sy = d * self.sy + y
        self.syy = d * self.syy + y * y
        self.sl = d * self.sl + self.f_path
        if abs(self.f_dy) > 2.0 * abs(self.f_dx) and self.f_dy != 0.0:  # near-vertical travel shows the slant
            self.sxy = d * self.sxy + self.f_dx * self.f_dy
            self.sdd = d * self.sdd + self.f_dy * self.f_dy
        row = [1.0] + [0.0] * (PenExtractor.dim - 1)
        mean = self.sy / self.w
        var = max(self.syy / self.w - mean * mean, 0.0)
        prior = (self.sl / self.w / self.T * c.prior_size_seconds) ** 2
        size = math.sqrt((self.w * var + self.prior_w * prior) / (self.w + self.prior_w))
        if size > 0.0:
            lim = c.clip
            slant = max(-1.0, min(1.0, self.sxy / (self.sdd + c.slant_prior * size * size)))
            dx, dy = (self.f_dx - slant * self.f_dy) / size, self.f_dy / size
            norm = math.hypot(dx, dy)
            row = [
                1.0, max(-lim, min(lim, dx)), max(-lim, min(lim, dy)), min(lim, self.f_path / size),
                max(-lim, min(lim, (self.f_jx - slant * self.f_jy) / size)), max(-lim, min(lim, self.f_jy / size)),
                float(self.f_start), float(self.f_end), max(-lim, min(lim, (y - mean) / size)),
                dx / norm if norm > 1e-6 else 0.0, dy / norm if norm > 1e-6 else 0.0,
            ]
        self._reset_frame()
        return row
