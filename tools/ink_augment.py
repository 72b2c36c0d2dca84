"""Ink augmentation: the writers, pens and tablets the data lacks, as changes of points [n, 4] (seeded numpy).

Geometry (scale, aspect, slant, rotation, jitter) stands in for writers; speed, rate and point dropout for pens
and tablets. Invariant: stroke structure is kept (the first and last point of every stroke and every pen-up
point survive dropout), so the text the ink spells does not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InkAugmentConfig:
    scale: tuple[float, float] = (0.6, 1.6)  # overall size factor (log-uniform): the front end must undo it
    aspect: tuple[float, float] = (0.8, 1.25)  # width over height factor
    slant: tuple[float, float] = (-0.4, 0.4)  # shear x += k * y (y down): ~ +-22 degrees of slant
    rotation: float = 8.0  # degrees, either way
    jitter: float = 0.01  # pen-down point noise, in the ink's unit spread
    speed: tuple[float, float] = (0.6, 1.6)  # writing speed factor (log-uniform): times divided by it
    dropout: tuple[float, float] = (0.0, 0.3)  # share of inner pen-down points dropped (a sparser tablet)
    decimate_p: float = 0.2  # chance every second point is dropped too (half the rate)


def augment_ink(points: np.ndarray, cfg: InkAugmentConfig, rng: np.random.Generator) -> np.ndarray:
    p = np.array(points, dtype=np.float64)
    sx = math.exp(rng.uniform(*np.log(cfg.scale)))
    a = rng.uniform(*cfg.aspect)
    k = rng.uniform(*cfg.slant)
    r = math.radians(rng.uniform(-cfg.rotation, cfg.rotation))
    x, y = p[:, 0] + k * p[:, 1], p[:, 1]
    x, y = x * math.cos(r) - y * math.sin(r), x * math.sin(r) + y * math.cos(r)
    p[:, 0], p[:, 1] = x * sx * a, y * sx
    down = p[:, 3] > 0.5
    if cfg.jitter:
        p[down, :2] += rng.normal(0.0, cfg.jitter * sx, (int(down.sum()), 2))
    p[:, 2] = (p[:, 2] - p[0, 2]) / math.exp(rng.uniform(*np.log(cfg.speed)))
    # keep: stroke ends and pen-up points; drop some inner pen-down points
    prev_down = np.concatenate([[False], down[:-1]])
    next_down = np.concatenate([down[1:], [False]])
    inner = down & prev_down & next_down
    drop = inner & (rng.random(len(p)) < rng.uniform(*cfg.dropout))
    if rng.random() < cfg.decimate_p:
        drop |= inner & (np.arange(len(p)) % 2 == 1)
    return p[~drop]
