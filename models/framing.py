"""Many audio streams framed as one array: the audio front end's steady state in a few numpy calls a tick.

Cut stream by stream, a 160 ms chunk cost ~40 Python calls (conversion, checks, the lead-in rule, the carried
samples, the framing view), so a tick's front end grew with its streams (`tools/bench_chunk`'s calls per stream).
Most chunks need none of that: a stream is steady when its chunk is mono float32 (or int16 PCM, as the Vosk
protocol sends), past the lead-in rule's onset, and not its last. For those, conversion and the check for NaNs
are one call for all (`floats`); a stream at another rate than the model's is then resampled by its own soxr
stream (a call each: its filter state is its own); and framing is arithmetic on sample counts, done for all of
them at once (`frame_many`).

Invariant: the windows and the samples carried are exactly those `features.FeatureStream.windows` gives stream by
stream (the same samples copied, nothing computed), so a stream's frames do not depend on which path cut them.
"""

from __future__ import annotations

import numpy as np
import torch

from .audio import to_float

STEADY_DTYPES = (np.dtype(np.float32), np.dtype(np.int16))


def floats(chunks: list[np.ndarray]) -> list[np.ndarray] | None:
    """Mono chunks (float32, or int16 converted by `audio.to_float`, in one call for all) -> float32 samples; None
    when one holds a NaN or an infinity: the caller then cuts stream by stream, and that stream alone fails."""
    ints = [i for i, c in enumerate(chunks) if c.dtype != np.float32]
    out = list(chunks)
    if ints:
        sizes = np.cumsum([chunks[i].shape[0] for i in ints])[:-1]
        for i, part in zip(ints, np.split(to_float(np.concatenate([chunks[i] for i in ints])), sizes)):
            out[i] = part
    floating = [c for i, c in enumerate(out) if chunks[i].dtype == np.float32]
    if floating and not np.isfinite(np.concatenate(floating)).all():
        return None
    return out


def frame_many(carried: list[np.ndarray], samples: list[np.ndarray], win: int,
               hop: int) -> tuple[torch.Tensor, list[int], list[np.ndarray]]:
    """Streams' carried samples and new samples (float32, at the model's rate) -> (every stream's new complete
    windows [frames, win], stream after stream; how many each has; each stream's samples to carry on)."""
    if not samples:  # (every steady stream's resampling failed)
        return torch.zeros(0, win), [], []
    lengths = np.array([c.shape[0] for c in carried]) + np.array([c.shape[0] for c in samples])
    joined = np.concatenate([a for pair in zip(carried, samples) for a in pair])
    counts = np.where(lengths >= win, (lengths - win) // hop + 1, 0)
    offsets = np.cumsum(lengths) - lengths
    before = np.cumsum(counts) - counts  # each stream's first window among all
    starts = np.repeat(offsets - before * hop, counts) + np.arange(int(counts.sum())) * hop
    if len(starts):  # (unfold: a view of each sample's window; the rows wanted copied out in one call)
        windows = torch.from_numpy(joined).unfold(0, win, 1)[torch.from_numpy(starts)]
    else:
        windows = torch.zeros(0, win)
    keep = (offsets + counts * hop).tolist()
    ends = (offsets + lengths).tolist()
    # (copies: a view would hold this tick's whole array for as long as its stream stays idle)
    return windows, counts.tolist(), [joined[a:b].copy() for a, b in zip(keep, ends)]

