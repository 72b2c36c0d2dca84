"""Many pen streams framed at once: the pen front end's steady state as array operations over streams.

Stream by stream, `PenFrontEnd._run` costs Python per point and `_row` per pen-down frame: at 400 writers the pen
front end was ~30% of a tick's CPU (`tools/bench_pen`'s profile, BENCHMARKS.md), and it grew with the writers.
Here the streams' states are gathered into arrays and the chunk is walked one point index at a time: the j-th point
of every stream, then each frame that point closes, of every stream at once. Python loops over a chunk's point
indices (16 at 100 points a second) and the frames one point closes (0 or 1 at 100 points a second), not over
streams. So the walk's cost is set by its longest chunk and by the most frames one point closes: the caller walks
only chunks of at most `models.pen.WALK_MAX_POINTS` points, and a stream whose next point would close more than
MAX_FRAMES_A_POINT frames (a pause, a slow tablet) leaves the walk there and goes on alone through
`PenFrontEnd._run` from the state it had reached: one pause then costs its own stream, not every stream's tick.

Invariant: every value is the float64 operation `PenFrontEnd._run` and `_row` do for one stream, in the same order
(+, -, *, /, sqrt and comparisons, which numpy and Python round alike; `PenConfig` keeps every divisor positive),
so a stream's frames and carried state do not depend on which path cut them (tests/test_handwriting.py checks both,
bit for bit).
"""

from __future__ import annotations

import operator

import numpy as np

from .pen_layout import DOWN, FEATURES, UP, UP_END

# A stream's carried state as one row of floats (booleans and counts as 0/1), read from these attributes of its
# PenFrontEnd; the first _MOVING of them move in a chunk and are written back, the last four are set when it starts.
_FIELDS = ("t", "fe", "skipped", "px", "py", "down", "has_lift", "lift_x", "lift_y", "f_down", "f_start", "f_end",
           "f_dx", "f_dy", "f_path", "f_jx", "f_jy", "w", "sy", "syy", "sl", "sxy", "sdd", "t0", "dt", "ox", "oy")
_MOVING = 23
MAX_FRAMES_A_POINT = 2  # more, and the stream leaves the walk (every frame of a walk step costs ~50 numpy calls)
_READ = operator.attrgetter(*_FIELDS)  # (a C call a stream: 400 streams read in ~0.7 ms)
_UP, _UP_END, _DOWN = np.array(UP), np.array(UP_END), np.array(DOWN)


class _State:
    """The streams' states as arrays, one field an array over streams (attribute names as in `_FIELDS`)."""

    def __init__(self, fronts: list):
        table = np.array(list(map(_READ, fronts)), np.float64)
        for k, name in enumerate(_FIELDS):
            setattr(self, name, table[:, k])  # (views: a field is written only as a whole new array or at `_rows`' rows)
        for name in ("down", "has_lift", "f_down", "f_start", "f_end"):
            setattr(self, name, getattr(self, name) > 0.5)

    def scatter(self, fronts: list) -> None:
        """Each stream's moved state back into its attributes (as floats: 1.0 reads as True and as 1 there)."""
        table = np.stack([getattr(self, n) for n in _FIELDS[:_MOVING]], 1).astype(np.float64)
        names = _FIELDS[:_MOVING]
        for f, row in zip(fronts, table.tolist()):
            f.__dict__.update(zip(names, row))


def run_many(fronts: list, points: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Started streams' next points (float64 [n, 4], checked as `PenFrontEnd.cut` checks them) -> (their new frames
    [k, 11] in float64, not yet clipped, stream after stream; how many each has). The streams' states move on as
    `PenFrontEnd._run` moves them."""
    n = len(fronts)
    if not n:
        return np.zeros((0, len(FEATURES))), []
    lengths = np.fromiter((len(p) for p in points), np.int64, n)
    grid = np.zeros((n, int(lengths.max()), 4))
    place = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    grid[np.repeat(np.arange(n), lengths), place] = np.concatenate(points)
    state = _State(fronts)
    walk = _Walk(fronts[0], state)
    left = np.full(n, -1)  # the point index at which a stream left the walk (-1: it did not)
    with np.errstate(all="ignore"):  # (the arrays hold every stream: values outside a mask are never kept)
        for j in range(grid.shape[1]):
            leaving = walk.point(grid[:, j], (lengths > j) & (left < 0))
            left[leaving] = j
    state.scatter(fronts)
    owners = np.concatenate(walk.streams) if walk.streams else np.zeros(0, np.int64)
    rows = np.concatenate(walk.rows)[np.argsort(owners, kind="stable")] if walk.streams else np.zeros((0, len(FEATURES)))
    counts = np.bincount(owners, minlength=n)
    if not (left >= 0).any():
        return rows, counts.tolist()
    # (the streams that left: their rows so far, then the rest of their points' rows cut alone)
    parts = np.split(rows, np.cumsum(counts)[:-1])
    for i in np.flatnonzero(left >= 0).tolist():
        alone: list[list[float]] = []
        fronts[i]._run(points[i][left[i] :].tolist(), alone)
        parts[i] = np.concatenate([parts[i], np.array(alone, np.float64).reshape(-1, len(FEATURES))])
    return np.concatenate(parts), [len(r) for r in parts]


class _Walk:
    """The per-point and per-frame steps of `PenFrontEnd._run` and `_row`, over every stream's arrays; collects the
    frames each step closes (which streams, and their values)."""

    def __init__(self, front, state: _State):
        self.s = state
        cfg = front.cfg
        self.T, self.decay, self.prior_w, self.max_gap = front.T, front.decay, front.prior_w, cfg.max_gap_seconds
        self.prior_size, self.slant_prior = cfg.prior_size_seconds, cfg.slant_prior
        self.streams: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []

    def point(self, p: np.ndarray, act: np.ndarray) -> np.ndarray:
        """Each active stream's next point [streams, 4]: the frames it closes, then what it does to the pen; -> the
        streams that leave the walk before this point (it would close too many frames), untouched by it."""
        s = self.s
        t = p[:, 2]
        nan = np.isnan(t)
        shifted = t - s.skipped
        back = shifted < s.t  # times never go back
        gap = ~back & (shifted - s.t > self.max_gap)  # a gap counts at most max_gap
        t = np.where(nan, s.t + s.dt, np.where(back, s.t, np.where(gap, s.t + self.max_gap, shifted)))
        # a bound first (more than MAX frames needs t >= fe + MAX * T): the exact count, ~10 numpy calls, only where
        # a stream may pass it, after a pause (points 10 ms apart close at most one 20 ms frame)
        leaving = act & (t - s.fe >= (MAX_FRAMES_A_POINT - 0.5) * self.T)
        if leaving.any():
            leaving &= self._frames(t) > MAX_FRAMES_A_POINT
        act = act & ~leaving
        s.skipped = np.where(act & ~nan & gap, s.skipped + (shifted - s.t - self.max_gap), s.skipped)
        x, y, down = p[:, 0] - s.ox, p[:, 1] - s.oy, p[:, 3] > 0.5
        stroke = down & s.down
        closing = act & (t >= s.fe)
        if closing.any():
            sx, sy = s.px.copy(), s.py.copy()
            while closing.any():
                self._close(closing, stroke, sx, sy, x, y, t)
                closing &= t >= s.fe
        moved = act & stroke  # a pen-down segment from the last point to this one
        ddx, ddy = x - s.px, y - s.py
        s.f_dx, s.f_dy = np.where(moved, s.f_dx + ddx, s.f_dx), np.where(moved, s.f_dy + ddy, s.f_dy)
        s.f_path = np.where(moved, s.f_path + np.sqrt(ddx * ddx + ddy * ddy), s.f_path)
        starts = act & ~stroke & down  # a stroke starts: the jump from the last lift
        jumped = starts & s.has_lift
        s.f_jx = np.where(jumped, s.f_jx + (x - s.lift_x), s.f_jx)
        s.f_jy = np.where(jumped, s.f_jy + (y - s.lift_y), s.f_jy)
        s.f_down |= moved | starts
        s.f_start |= starts
        s.px, s.py = np.where(moved | starts, x, s.px), np.where(moved | starts, y, s.py)
        lifts = act & ~stroke & ~down & s.down  # the pen lifts
        s.f_end |= lifts
        s.lift_x, s.lift_y = np.where(lifts, s.px, s.lift_x), np.where(lifts, s.py, s.lift_y)
        s.has_lift |= lifts
        s.down, s.t = np.where(act, down, s.down), np.where(act, t, s.t)
        return leaving

    def _frames(self, t: np.ndarray) -> np.ndarray:
        """How many frames a point at time t closes: the n with fe <= t0 + T * n <= t, where fe = t0 + T * k is the
        open frame's end (`_close` opens frames at exactly these ends, so the count is the loop's, not an estimate)."""
        s, T = self.s, self.T
        k = np.round((s.fe - s.t0) / T)
        n = np.floor((t - s.t0) / T)
        for _ in range(2):  # (the division's rounding: n within one of the last end at or before t)
            n = np.where(s.t0 + T * (n + 1) <= t, n + 1, n)
            n = np.where(s.t0 + T * n > t, n - 1, n)
        return np.where(t >= s.fe, n - k + 1, 0)

    def _close(self, m: np.ndarray, stroke: np.ndarray, sx: np.ndarray, sy: np.ndarray, x: np.ndarray,
               y: np.ndarray, t: np.ndarray) -> None:
        """The open frame of each stream in `m` ends: the stroke cut at its end, its row, the next frame opened."""
        s = self.s
        cut = m & stroke
        a = (s.fe - s.t) / (t - s.t)
        mx, my = sx + a * (x - sx), sy + a * (y - sy)
        ddx, ddy = mx - s.px, my - s.py
        s.f_dx, s.f_dy = np.where(cut, s.f_dx + ddx, s.f_dx), np.where(cut, s.f_dy + ddy, s.f_dy)
        s.f_path = np.where(cut, s.f_path + np.sqrt(ddx * ddx + ddy * ddy), s.f_path)
        s.f_down |= cut
        s.px, s.py = np.where(cut, mx, s.px), np.where(cut, my, s.py)
        drawn = m & (s.f_down | s.down)  # the pen was on the paper in this frame
        resting = np.flatnonzero(m & ~drawn)
        if len(resting):  # a resting pen: nothing moves, no estimate changes
            ended = (s.f_end[resting] & (s.w[resting] > 0.0))[:, None]
            self.streams.append(resting)
            self.rows.append(np.where(ended, _UP_END, _UP))
        drawn = np.flatnonzero(drawn)
        if len(drawn):
            self.streams.append(drawn)
            self.rows.append(self._rows(drawn))
        s.f_down, s.f_start, s.f_end = s.f_down & ~m, s.f_start & ~m, s.f_end & ~m
        for name in ("f_dx", "f_dy", "f_path", "f_jx", "f_jy"):
            setattr(s, name, np.where(m, 0.0, getattr(s, name)))
        s.fe = np.where(m, s.t0 + self.T * (np.round((s.fe - s.t0) / self.T) + 1), s.fe)  # no drift

    def _rows(self, i: np.ndarray) -> np.ndarray:
        """`PenFrontEnd._row` for the streams `i`: the running estimates move, and their frames' values."""
        s, d = self.s, self.decay
        fdx, fdy, path, y = s.f_dx[i], s.f_dy[i], s.f_path[i], s.py[i]
        w = s.w[i] = d * s.w[i] + 1.0
        sy = s.sy[i] = d * s.sy[i] + y
        syy = s.syy[i] = d * s.syy[i] + y * y
        sl = s.sl[i] = d * s.sl[i] + path
        upright = (np.abs(fdy) > 2.0 * np.abs(fdx)) & (fdy != 0.0)  # near-vertical travel shows the slant
        sxy = s.sxy[i] = np.where(upright, d * s.sxy[i] + fdx * fdy, s.sxy[i])
        sdd = s.sdd[i] = np.where(upright, d * s.sdd[i] + fdy * fdy, s.sdd[i])
        mean = sy / w
        var = np.maximum(syy / w - mean * mean, 0.0)
        speed = sl / w / self.T * self.prior_size
        prior = speed * speed
        size = np.sqrt((w * var + self.prior_w * prior) / (w + self.prior_w))
        slant = np.clip(sxy / (sdd + self.slant_prior * size * size), -1.0, 1.0)
        dx, dy = (fdx - slant * fdy) / size, fdy / size
        norm = np.sqrt(dx * dx + dy * dy)
        far = norm > 1e-6
        ux, uy = np.where(far, dx / norm, 0.0), np.where(far, dy / norm, 0.0)
        rows = np.stack([np.ones_like(dx), dx, dy, path / size, (s.f_jx[i] - slant * s.f_jy[i]) / size,
                         s.f_jy[i] / size, s.f_start[i].astype(np.float64), s.f_end[i].astype(np.float64),
                         (y - mean) / size, ux, uy], 1)
        rows[~(size > 0.0)] = _DOWN
        return rows
