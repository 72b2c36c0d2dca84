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

from . import pen_many
from .errors import InputError
from .frontend import cut_rest_and_step, whole_steps
from .ink import INK_SUFFIXES, read_ink
from .pen_layout import DOWN, FEATURES, UP, UP_END
from .tokens import PEN_CHARACTERS

# Bounds on a point, so every number stays exact enough in float64: at t = 1e11 s a step of 0.02 s is still 1,300
# of t's units in the last place (past ~1e15 a frame's end stopped moving and the framing loop never ended), and
# differences of coordinates up to 1e9 never overflow. Milliseconds since 1970 (1.7e12) sent as seconds are refused.
MAX_TIME = 1e11
MAX_COORDINATE = 1e9
# Fewer steady streams than this are cut one by one: a walk costs ~100 numpy calls a point index whatever the
# number of streams (a 160 ms tick of 16 points, one thread: 32 streams 3.3 ms cut one by one against 6.5 walked,
# 64: 8.0 against 10.2, 100: 14.5 against 10.7, 200: 31 against 11.5; BENCHMARKS.md). A longer chunk than
# WALK_MAX_POINTS is cut alone: the walk's steps are its longest chunk's points (a 1,000-point chunk among 100
# streams of 16 made their tick 216 ms walked, against 23 ms cut one by one).
WALK_TOGETHER_FROM = 80
WALK_MAX_POINTS = 64


@dataclass(frozen=True)
class PenConfig:
    frame_seconds: float = 0.02  # 50 frames a second: a fast character (~0.15 s) still gets ~7 frames
    rate: int = 100  # points per second assumed where a point's time is NaN
    norm_seconds: float = 4.0  # pen-down seconds the size, slant and baseline estimates forget over (~2 words)
    prior_seconds: float = 0.5  # weight of the size prior, in pen-down seconds
    prior_size_seconds: float = 0.04  # prior size = pen speed x this (a 0.3 s letter travels ~8 sizes a second)
    slant_prior: float = 1.0  # weight of the upright prior, in squared sizes of near-vertical travel
    tail_seconds: float = 0.3  # pen-up frames after the end: a unidirectional model reads the last letter on them
    # A longer time between two points counts as this long (the ink is read as if the writer had come back sooner).
    # Every frame of a gap is made, so one point at t = 100000 s made 5 million frames (3.4 GB, a stalled service).
    # 3 s is over the ink endpoint's longest silence rule (2.4 s), so a capped pause still ends its line as before.
    max_gap_seconds: float = 3.0
    clip: float = 5.0  # every value is held to +-clip (a jump across the page is still "far")

    def __post_init__(self) -> None:
        # (the frames divide by these: a zero made the scalar path raise and the walked one write NaN)
        positive = ("frame_seconds", "rate", "norm_seconds", "slant_prior", "clip")
        others = ("prior_seconds", "prior_size_seconds", "tail_seconds", "max_gap_seconds")
        if not (all(getattr(self, k) > 0 for k in positive) and all(getattr(self, k) >= 0 for k in others)):
            raise ValueError(f"pen settings out of range: {positive} must be > 0 and the rest >= 0 ({self})")

    def to_dict(self) -> dict:
        return asdict(self)


def checked(data: np.ndarray) -> np.ndarray:
    """Points as float64 [n, 4]; InputError for another shape, NaN or infinite coordinates, or values out of bounds."""
    points = np.asarray(data, dtype=np.float64)
    if points.size == 0:
        points = points.reshape(0, 4)
    if points.ndim != 2 or points.shape[1] != 4:
        raise InputError(f"pen input is points [n, 4] (x, y, t, pen), not an array of shape {list(points.shape)}")
    if not np.isfinite(points[:, [0, 1, 3]]).all() or np.isinf(points[:, 2]).any():
        raise InputError("pen points with NaN or infinite coordinates")
    times = points[:, 2]
    if (np.abs(points[:, :2]) > MAX_COORDINATE).any() or (np.abs(times[~np.isnan(times)]) > MAX_TIME).any():
        raise InputError(f"pen points beyond +-{MAX_COORDINATE:g} in x or y, or +-{MAX_TIME:g} s in t")
    return points


def _same(frames: torch.Tensor) -> torch.Tensor:
    """The pen's cuts are its frames already (audio's are windows still to be transformed)."""
    return frames


def clipped(rows: np.ndarray, clip: float) -> torch.Tensor:
    """Frames' values held to +-clip (a jump across the page is still "far"), in float32: the same as in float64,
    since rounding is monotonic and the clip is a float32 number (numpy builds and clips 8 rows in 6 us, torch.tensor
    and clamp_ in 12)."""
    return torch.from_numpy(np.clip(rows.astype(np.float32, copy=False), -clip, clip))


class PenExtractor:
    """The pen front end of a model (see models.frontend): the work is per stream (`PenFrontEnd.cut`), or walked over
    a tick's steady streams at once (`extract_many`); `transform` passes frames on."""

    Config = PenConfig
    dim = len(FEATURES)
    tokens = PEN_CHARACTERS  # a new model's default: both cases, digits, punctuation
    feature_floor = 0.0  # a resting pen's frame: every value 0
    medium = "ink"
    self_timed = True
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

    def extract_many(self, fronts: list[PenFrontEnd], inputs: list[np.ndarray],
                     lasts: list[bool]) -> list[torch.Tensor | Exception]:
        """`frontend.extract_all` for ink: the steady streams (started, not ending, their points valid) walked
        together (models.pen_many) when there are enough of them, the others cut one by one; then each stream's
        whole steps."""
        steady = [i for i, (f, x, last) in enumerate(zip(fronts, inputs, lasts))
                  if f.started and not last and isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 4
                  and len(x) <= WALK_MAX_POINTS]
        points = None
        if len(steady) >= WALK_TOGETHER_FROM:
            try:  # (one check for all: where one fails, stream by stream, so that its stream alone fails)
                points = checked(np.concatenate([inputs[i] for i in steady]))
            except Exception:  # (any: an object array's element may raise what it likes; cut names it, alone)
                points = None
        out: list[torch.Tensor | Exception | None] = [None] * len(fronts)
        done: list[int] = []
        parts: list[torch.Tensor] = []
        sizes: list[int] = []
        if points is not None:
            counts = [inputs[i].shape[0] for i in steady]
            rows, sizes = pen_many.run_many([fronts[i] for i in steady], np.split(points, np.cumsum(counts)[:-1]))
            done, parts = steady, [clipped(rows, self.config.clip)]
        return cut_rest_and_step(fronts, inputs, lasts, out, done, parts, sizes, _same, self.stack)

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
        self.ox = self.oy = 0.0  # the first point: coordinates are taken from it (float64 keeps the digits)
        self.t0 = 0.0  # its time
        self.fe = 0.0  # end time of the open frame
        self.down = False  # the last point was pen-down
        self.px = self.py = 0.0  # the pen's last pen-down position (interpolated to frame ends)
        self.has_lift = False  # a stroke has ended, at (lift_x, lift_y)
        self.lift_x = self.lift_y = 0.0
        self.skipped = 0.0  # seconds of over-long gaps taken out so far (`max_gap_seconds`): ink time = t - skipped
        self._reset_frame()
        # running estimates (decayed sums over pen-down frames)
        self.w = self.sy = self.syy = self.sl = 0.0
        self.sxy = self.sdd = 0.0

    def _reset_frame(self) -> None:
        self.f_down = self.f_start = self.f_end = 0
        self.f_dx = self.f_dy = self.f_path = self.f_jx = self.f_jy = 0.0

    def cut(self, data: np.ndarray, last: bool = False) -> torch.Tensor:
        points = checked(data)
        rows: list[list[float]] = []
        if len(points):
            self._run(points.tolist(), rows)
        if last and self.started:
            rows.append(self._close())
            rows.extend([UP] * self.tail)
        if not rows:
            return torch.zeros(0, PenExtractor.dim)
        return clipped(np.array(rows, dtype=np.float32), self.cfg.clip)

    def steps(self, frames: torch.Tensor) -> torch.Tensor:
        ready, self._pending = whole_steps(self._pending, frames, self.stack)
        return ready

    def snapshot(self) -> dict:
        """Every field of the stream (scalars, the open frame, the running estimates, the frames short of a step)."""
        return copy.deepcopy(vars(self))

    def restore(self, state: dict) -> None:
        state = copy.deepcopy(state)
        if "pos" in state:  # (a snapshot from before the state was flat: a failover across an upgrade)
            (state["px"], state["py"]), (state["ox"], state["oy"]) = state.pop("pos"), state.pop("origin")
            lift = state.pop("lift")
            state["has_lift"], (state["lift_x"], state["lift_y"]) = lift is not None, lift or (0.0, 0.0)
        vars(self).update(state)

    def _run(self, points: list[list[float]], rows: list[list[float]]) -> None:
        """Each point in order: the frames its time has passed are closed (a stroke's segment cut at their ends),
        then the point moves the pen, starts a stroke (the jump from the last lift) or lifts it. The stream's state
        is held in locals through the loop and stored back after it (with the clip done once a chunk: 5.6-6.0 ->
        3.1-3.8 us a point on tools/bench_pen.py's tape, three alternating runs; the frames are bit-identical)."""
        if not self.started:
            x, y, t, _ = points[0]
            t = 0.0 if math.isnan(t) else t
            self.started, self.ox, self.oy, self.t0 = True, x, y, t
            self.t, self.fe = t, t + self.T
            points[0][2] = t
        ox, oy, T, t0, dt, sqrt = self.ox, self.oy, self.T, self.t0, self.dt, math.sqrt
        t_last, fe, was_down, px, py = self.t, self.fe, self.down, self.px, self.py
        lift = (self.lift_x, self.lift_y) if self.has_lift else None
        max_gap, skipped = self.cfg.max_gap_seconds, self.skipped
        fd, fs, fen = self.f_down, self.f_start, self.f_end
        fdx, fdy, fpath, fjx, fjy = self.f_dx, self.f_dy, self.f_path, self.f_jx, self.f_jy
        for x, y, t, pen in points:
            if t != t:  # NaN: the point comes 1/rate after the one before
                t = t_last + dt
            else:
                t -= skipped
                if t < t_last:  # times never go back
                    t = t_last
                elif t - t_last > max_gap:  # a gap counts at most max_gap (no float change without one)
                    skipped += t - t_last - max_gap
                    t = t_last + max_gap
            x, y, down = x - ox, y - oy, pen > 0.5
            stroke = down and was_down  # a pen-down segment from the last point to this one
            if t >= fe:
                sx, sy = px, py
                while t >= fe:
                    if stroke:
                        a = (fe - t_last) / (t - t_last)
                        mx, my = sx + a * (x - sx), sy + a * (y - sy)
                        ddx, ddy = mx - px, my - py
                        fdx, fdy, fpath, fd, px, py = fdx + ddx, fdy + ddy, fpath + sqrt(ddx * ddx + ddy * ddy), 1, mx, my
                    if fd or was_down:  # the pen was on the paper in this frame
                        rows.append(self._row(fdx, fdy, fpath, fjx, fjy, fs, fen, py))
                    else:  # a resting pen: nothing moves, no estimate changes (most pen-up frames: kept cheap)
                        rows.append(UP_END if fen and self.w > 0.0 else UP)
                    fd = fs = fen = 0
                    fdx = fdy = fpath = fjx = fjy = 0.0
                    fe = t0 + T * (round((fe - t0) / T) + 1)  # no drift over long streams
            if stroke:
                ddx, ddy = x - px, y - py
                fdx, fdy, fpath, fd, px, py = fdx + ddx, fdy + ddy, fpath + sqrt(ddx * ddx + ddy * ddy), 1, x, y
            elif down:  # a stroke starts: the jump from the last lift
                fs = fd = 1
                if lift is not None:
                    fjx, fjy = fjx + (x - lift[0]), fjy + (y - lift[1])
                px, py = x, y
            elif was_down:  # the pen lifts
                fen, lift = 1, (px, py)
            was_down, t_last = down, t
        self.t, self.fe, self.down, self.px, self.py, self.skipped = t_last, fe, was_down, px, py, skipped
        if lift is not None:
            self.has_lift, (self.lift_x, self.lift_y) = True, lift
        self.f_down, self.f_start, self.f_end = fd, fs, fen
        self.f_dx, self.f_dy, self.f_path, self.f_jx, self.f_jy = fdx, fdy, fpath, fjx, fjy

    def _close(self) -> list[float]:
        """The open frame's values (at the end of a stream)."""
        if self.f_down or self.down:
            row = self._row(self.f_dx, self.f_dy, self.f_path, self.f_jx, self.f_jy, self.f_start, self.f_end,
                            self.py)
        else:
            row = UP_END if self.f_end and self.w > 0.0 else UP
        self._reset_frame()
        return row

    def _row(self, fdx: float, fdy: float, path: float, jx: float, jy: float, start: int, end: int,
             y: float) -> list[float]:
        """A pen-down frame's values, not yet held to +-clip (`cut` clips the whole chunk in one call); the frame
        first moves the running estimates (causal: this frame and the ink before it). `y`: the pen's height at the
        frame's end."""
        d = self.decay
        w = self.w = d * self.w + 1.0
        sy = self.sy = d * self.sy + y
        syy = self.syy = d * self.syy + y * y
        sl = self.sl = d * self.sl + path
        if abs(fdy) > 2.0 * abs(fdx) and fdy != 0.0:  # near-vertical travel shows the slant
            self.sxy = d * self.sxy + fdx * fdy
            self.sdd = d * self.sdd + fdy * fdy
        mean = sy / w
        var = max(syy / w - mean * mean, 0.0)
        speed = sl / w / self.T * self.cfg.prior_size_seconds
        prior = speed * speed
        size = math.sqrt((w * var + self.prior_w * prior) / (w + self.prior_w))
        if not size > 0.0:
            return DOWN
        slant = max(-1.0, min(1.0, self.sxy / (self.sdd + self.cfg.slant_prior * size * size)))
        dx, dy = (fdx - slant * fdy) / size, fdy / size
        norm = math.sqrt(dx * dx + dy * dy)
        ux, uy = (dx / norm, dy / norm) if norm > 1e-6 else (0.0, 0.0)
        return [1.0, dx, dy, path / size, (jx - slant * jy) / size, jy / size, float(start), float(end),
                (y - mean) / size, ux, uy]
