"""Ink readers: W3C InkML, a JSON-lines point stream and the UCI trajectories' velocity + force form -> points.

Every reader returns `Ink`: points [n, 4] float64 (x right, y down, t seconds or NaN, pen 1 down / 0 up) as
`models.pen` takes them, with a pen-up point after every stroke, and the truth text when the file has one.
Invariant: a file that cannot give at least two finite pen-down points raises InkError (an InputError) on one
line naming the file, so one bad file fails alone. XML is parsed with the standard library's
`xml.etree.ElementTree` (InkML needs no more than elements, attributes and text; lxml is not needed).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, one_line

INK_SUFFIXES = (".inkml", ".jsonl", ".npy")
UCI_RATE = 200  # the UCI character trajectories are sampled at 200 Hz
UCI_FORCE_DOWN = 0.0  # pen force above this is pen-down (the pen-up rows of the set have force <= 0)


class InkError(InputError):
    """Ink that cannot be read: the message names the file and says what is wrong, on one line."""


@dataclass(frozen=True)
class Ink:
    points: np.ndarray  # [n, 4]: x, y, t (NaN: unknown), pen
    truth: str | None = None

    def duration(self, rate: int) -> float:
        """Seconds from the first point to the last (points without times count 1/rate each)."""
        t = self.points[:, 2]
        if np.isfinite(t).all():
            return float(t[-1] - t[0])
        return (len(t) - 1) / rate


def strokes_to_points(strokes: list[np.ndarray]) -> np.ndarray:
    """Strokes [k, 2 or 3] (x, y[, t]) -> points [n, 4] with a pen-up point (at the last point) after each."""
    rows = []
    for s in strokes:
        s = np.asarray(s, dtype=np.float64)
        t = s[:, 2] if s.shape[1] > 2 else np.full(len(s), np.nan)
        block = np.column_stack([s[:, 0], s[:, 1], t, np.ones(len(s))])
        rows += [block, np.array([[s[-1, 0], s[-1, 1], t[-1], 0.0]])]
    return np.concatenate(rows) if rows else np.zeros((0, 4))


def check_points(points: np.ndarray, where: str) -> np.ndarray:
    if len(points) == 0:
        raise InkError(f"{where}: no ink (no traces or points)")
    if not np.isfinite(points[:, [0, 1, 3]]).all() or np.isinf(points[:, 2]).any():
        raise InkError(f"{where}: ink with NaN or infinite coordinates")
    if (points[:, 3] > 0.5).sum() < 2:
        raise InkError(f"{where}: a single point is not ink to read")
    return points


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_inkml(path: str | Path) -> Ink:
    """InkML: `<trace>` elements of "x y [t ...], ..." points, channels named by `<traceFormat>` (default X Y)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise InkError(f"{path}: broken InkML ({one_line(e)})") from None
    except OSError as e:
        raise InkError(f"{path}: cannot read ({one_line(e)})") from None
    if _local(root.tag) != "ink":
        raise InkError(f"{path}: not InkML (root element <{_local(root.tag)}>, not <ink>)")
    channels = ["X", "Y"]
    for fmt in root.iter():
        if _local(fmt.tag) == "traceFormat":
            channels = [c.get("name", "").upper() for c in fmt if _local(c.tag) == "channel"]
            break
    if "X" not in channels or "Y" not in channels:
        raise InkError(f"{path}: the traceFormat has no X and Y channels ({' '.join(channels) or 'none'})")
    ix, iy, it = channels.index("X"), channels.index("Y"), channels.index("T") if "T" in channels else None
    strokes = []
    for trace in root.iter():
        if _local(trace.tag) != "trace" or not (trace.text or "").strip():
            continue
        try:
            values = [[float(v.lstrip("!")) for v in p.split()] for p in trace.text.strip().split(",") if p.strip()]
        except ValueError:
            raise InkError(f"{path}: a trace with values that are not numbers (difference-coded traces are not "
                           "read)") from None
        if any(len(v) != len(channels) for v in values):
            raise InkError(f"{path}: a trace's points do not have the {len(channels)} channels of its traceFormat")
        a = np.array(values, dtype=np.float64)
        cols = [a[:, ix], a[:, iy]] + ([a[:, it]] if it is not None else [])
        strokes.append(np.column_stack(cols))
    truth = None
    for child in root:
        if _local(child.tag) == "annotation" and child.get("type") == "truth":
            truth = (child.text or "").strip()
            break
    return Ink(check_points(strokes_to_points(strokes), str(path)), truth)


def point_row(p: object) -> list[float]:
    """One JSON point `{"x", "y", "t", "pen"}` -> [x, y, t, pen] (`pen` "down" or "up", "down" if absent; `t`
    seconds, absent or null: NaN); ValueError saying what is wrong (the JSON-lines reader and the server's pen
    messages share it)."""
    if not isinstance(p, dict):
        raise ValueError(f"{type(p).__name__} is not an object with x and y")
    if "x" not in p or "y" not in p:
        raise ValueError("a point needs x and y")
    pen = p.get("pen", "down")
    if pen not in ("down", "up"):
        raise ValueError(f"pen is {pen!r}, not 'down' or 'up'")
    t = p.get("t")
    values = [p["x"], p["y"]] + ([] if t is None else [t])
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError("x, y and t must be numbers")
    return [float(p["x"]), float(p["y"]), math.nan if t is None else float(t), float(pen == "down")]


def read_jsonl(path: str | Path) -> Ink:
    """One `{"x", "y", "t", "pen"}` a line (`pen` "down" or "up", "down" if absent; `t` seconds, absent or null:
    unknown); a `{"truth": text}` line gives the text."""
    rows, truth = [], None
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InkError(f"{path}: cannot read ({one_line(e)})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            p = json.loads(line)
            if isinstance(p, dict) and "truth" in p and "x" not in p:
                truth = str(p["truth"])
                continue
            rows.append(point_row(p))
        except ValueError as e:
            raise InkError(f"{path}: line {n} is not a point ({one_line(e)})") from None
    points = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return Ink(check_points(points, str(path)), truth)


def trajectory_points(data: np.ndarray, rate: int = UCI_RATE) -> np.ndarray:
    """UCI trajectories: rows (x velocity, y velocity up, pen force) at `rate` -> points (y down, integrated)."""
    data = np.asarray(data, dtype=np.float64)
    x, y = np.cumsum(data[:, 0]), -np.cumsum(data[:, 1])
    t = np.arange(len(data)) / rate
    return np.column_stack([x, y, t, (data[:, 2] > UCI_FORCE_DOWN).astype(np.float64)])


def read_trajectory(path: str | Path) -> Ink:
    """A .npy array [n, 3] in the UCI trajectories' form (velocities and force at 200 Hz)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InkError(f"{path}: not a readable .npy array ({one_line(e)})") from None
    if data.ndim != 2 or data.shape[1] != 3:
        raise InkError(f"{path}: trajectories are [n, 3] (x velocity, y velocity, force), not {list(data.shape)}")
    if not np.isfinite(data).all():
        raise InkError(f"{path}: ink with NaN or infinite coordinates")
    return Ink(check_points(trajectory_points(data), str(path)))


def read_ink(path: str | Path) -> Ink:
    """Any ink file by its suffix: .inkml, .jsonl (points) or .npy (UCI trajectories)."""
    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise InkError(f"{path}: no such file")
    if suffix == ".inkml":
        return read_inkml(path)
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".npy":
        return read_trajectory(path)
    raise InkError(f"{path}: not an ink file (read: {', '.join(INK_SUFFIXES)})")


def write_inkml(path: str | Path, points: np.ndarray, truth: str | None = None) -> Path:
    """Points [n, 4] -> InkML with X Y T channels, one <trace> per stroke (tests and examples)."""
    lines = ['<ink xmlns="http://www.w3.org/2003/InkML">',
             ('  <traceFormat><channel name="X" type="decimal"/><channel name="Y" type="decimal"/>'
              '<channel name="T" type="decimal"/></traceFormat>')]
    if truth is not None:
        from xml.sax.saxutils import escape

        lines.append(f'  <annotation type="truth">{escape(truth)}</annotation>')
    stroke: list[str] = []
    for x, y, t, pen in np.asarray(points, dtype=np.float64).tolist():
        if pen > 0.5:
            stroke.append(f"{x:.6g} {y:.6g} {t:.4f}")
        elif stroke:
            lines.append(f"  <trace>{', '.join(stroke)}</trace>")
            stroke = []
    if stroke:
        lines.append(f"  <trace>{', '.join(stroke)}</trace>")
    lines.append("</ink>")
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)
