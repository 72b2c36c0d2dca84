"""Many audio streams framed as one array: the audio front end's steady state in a few numpy calls a tick.

Cut stream by stream, a 160 ms chunk cost ~40 Python calls (conversion, checks, the lead-in rule, the carried
samples, the framing view), so a tick's front end grew with its streams (`tools/bench_chunk`'s calls per stream).
Most chunks need none of that: a stream is steady when its chunk is mono float32 (or int16 PCM, as the Vosk
protocol sends) at the model's rate (no resampler state), past the lead-in rule's onset, and not its last. For
those, framing is arithmetic on sample counts, done here for all of them at once.

Invariant: the windows and the samples carried are exactly those `features.FeatureStream.windows` gives stream by
stream (the same samples copied, nothing computed), so a stream's frames do not depend on which path cut them.
"""

from __future__ import annotations

import numpy as np
import torch

from .audio import to_float

STEADY_DTYPES = (np.dtype(np.float32), np.dtype(np.int16))


def frame_many(carried: list[np.ndarray], chunks: list[np.ndarray], win: int,
               hop: int) -> tuple[torch.Tensor, list[int], list[np.ndarray]] | None:
    """Streams' carried samples (float32) and new mono chunks (float32 or int16) -> (every stream's new complete
    windows [frames, win], stream after stream; how many each has; each stream's samples to carry on). None when a
    chunk holds a NaN or an infinity: the caller then cuts stream by stream, and that stream alone fails."""
    chunks = _floats(chunks)
    lengths = np.array([c.shape[0] for c in carried]) + np.array([c.shape[0] for c in chunks])
    joined = np.concatenate([a for pair in zip(carried, chunks) for a in pair])
    if not np.isfinite(joined).all():
        return None
    counts = np.where(lengths >= win, (lengths - win) // hop + 1, 0)
    offsets = np.cumsum(lengths) - lengths
    before = np.cumsum(counts) - counts  # each stream's first window among all
    starts = np.repeat(offsets - before * hop, counts) + np.arange(int(counts.sum())) * hop
    samples = torch.from_numpy(joined)
    windows = samples.unfold(0, win, 1)[torch.from_numpy(starts)] if len(starts) else samples.new_zeros(0, win)
    keep = (offsets + counts * hop).tolist()
    ends = (offsets + lengths).tolist()
    # (copies: a view would hold this tick's whole array for as long as its stream stays idle)
    return windows, counts.tolist(), [joined[a:b].copy() for a, b in zip(keep, ends)]


def _floats(chunks: list[np.ndarray]) -> list[np.ndarray]:
    """int16 chunks as float32 samples, converted in one call (`audio.to_float`'s numbers: it is applied to them)."""
    ints = [i for i, c in enumerate(chunks) if c.dtype != np.float32]
    if not ints:
        return chunks
    sizes = np.cumsum([chunks[i].shape[0] for i in ints])[:-1]
    out = list(chunks)
    for i, part in zip(ints, np.split(to_float(np.concatenate([chunks[i] for i in ints])), sizes)):
        out[i] = part
    return out
