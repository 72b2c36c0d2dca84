"""One tick's decoding of many streams, read from arrays: what each step is, and where an endpoint fires.

Invariant: every stream gets exactly the events `BackEnd.accept` gives it alone. The tick's log-probabilities are
one array; a charset's view, each step's best token, the endpoint rules and whether a chunk holds any token are
computed over all streams at once. A stream then costs Python of its own only for what happens to it: an
endpoint (`BackEnd.accept`, step by step), a token written (the greedy decoder's emissions), a beam searched
(flashlight, one object per stream), a partial whose text may have changed. At 200 live streams most chunks are
silence or go on with the last token, and the endpoint rules fire in about one chunk in 20.
"""

from __future__ import annotations

import numpy as np
import torch

from .backend import BackEnd, Event

_BAND = 1 << 40  # each stream's positions in the run-length scan live in their own band (a stream is < 2**39 steps)
# Fewer streams than this are read one by one: the array path costs ~25 numpy calls a tick (one stream's decoding
# took 0.40-0.49 ms a 160 ms tick that way, against 0.30-0.40 ms alone; at 200 streams it saves half the stage).
ARRAYS_FROM = 4


def accept_many(
    backs: list[BackEnd], log_probs: torch.Tensor, spans: list[tuple[int, int]]
) -> list[list[Event] | Exception]:
    """`backs[i]` accepts `log_probs[start : start + n]` for `spans[i] = (start, n)`; -> each one's events, or the
    exception that failed that stream alone (the caller drops it)."""
    if len(backs) < ARRAYS_FROM:
        return [_alone(back, log_probs[start : start + n]) for back, (start, n) in zip(backs, spans)]
    rows = _rows(spans, log_probs.shape[0])
    if rows is not None:  # (a decoder shard's streams, or a tick with streams in between: gather them once)
        log_probs = log_probs[rows]
        spans = list(zip(np.cumsum([0] + [n for _, n in spans[:-1]]).tolist(), [n for _, n in spans]))
    lengths = np.fromiter((n for _, n in spans), np.int64, len(spans))
    viewed = _views(backs, log_probs, spans)
    best = viewed.argmax(-1).numpy() if viewed.shape[0] else np.zeros(0, np.int64)
    tokenizer = backs[0].tokenizer
    fires, silence, speech = _endpoints(backs, best <= tokenizer.boundary, lengths)
    tokens = np.concatenate([[0], np.cumsum(best != tokenizer.blank)])
    starts = np.cumsum(lengths) - lengths
    written = (tokens[starts + lengths] - tokens[starts]).tolist()
    # Streams read array views of the tick: a tensor's slice, .to and .numpy cost ~10 us a stream a tick.
    heard = log_probs.numpy().copy()  # once for the tick: each stream keeps a view of its steps (a snapshot replays them)
    rows = heard if viewed is log_probs else viewed.numpy()
    out: list[list[Event] | Exception] = []
    for i, (back, (start, n)) in enumerate(zip(backs, spans)):
        try:
            if fires[i]:
                out.append(back.accept(log_probs[start : start + n]))
            else:
                end = start + n
                out.append(back.advance(rows[start:end], heard[start:end], silence[i], speech[i], not written[i]))
        except Exception as e:  # one stream's failure must not fail the others
            out.append(e)
    return out


def _alone(back: BackEnd, log_probs: torch.Tensor) -> list[Event] | Exception:
    try:
        return back.accept(log_probs)
    except Exception as e:  # one stream's failure must not fail the others
        return e


def _rows(spans: list[tuple[int, int]], total: int) -> torch.Tensor | None:
    """The rows to gather when the spans do not tile the array in order; None when they do."""
    at = 0
    for start, n in spans:
        if start != at:
            break
        at += n
    else:
        if at == total:
            return None
    return torch.cat([torch.arange(start, start + n) for start, n in spans])


def _views(backs: list[BackEnd], log_probs: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """What each stream's decoder reads: the log-probabilities, or a charset's view of a stream's rows (per step,
    so any grouping of the rows reads the same)."""
    groups: dict[str, list[int]] = {}
    for i, back in enumerate(backs):
        if back.decoder.view_key is not None:
            groups.setdefault(back.decoder.view_key, []).append(i)
    if not groups:
        return log_probs
    viewed = log_probs.clone()
    for members in groups.values():
        rows = torch.cat([torch.arange(spans[i][0], spans[i][0] + spans[i][1]) for i in members])
        viewed[rows] = backs[members[0]].decoder.view(log_probs[rows])
    return viewed


def _endpoints(backs: list[BackEnd], silent: np.ndarray, lengths: np.ndarray) -> tuple[list, list, list]:
    """Whether an endpoint rule fires in each stream's steps, and (where none does) its trailing silent steps and
    speech flag after them: `BackEnd.accept`'s step loop, as array operations over every stream's steps."""
    n_streams = len(backs)
    carry = np.array([b.carry for b in backs], np.int64).reshape(n_streams, 3)
    rules = [b.rules for b in backs]
    off = np.array([r is None for r in rules])
    limits = np.array([r or (0, 0, 0) for r in rules], np.int64).reshape(n_streams, 3)
    stream = np.repeat(np.arange(n_streams), lengths)
    starts = np.cumsum(lengths) - lengths
    t = np.arange(len(silent)) - starts[stream]  # each step's place in its stream's chunk
    # trailing silent steps at each step: t minus the last sounding step's place (before the chunk: -1 - carried)
    band = stream * _BAND
    last_sound = np.where(silent, band - _BAND // 2, band + t)
    first = starts[lengths > 0]
    last_sound[first] = np.maximum(last_sound[first], band[first] - 1 - carry[lengths > 0, 0])
    run = t - (np.maximum.accumulate(last_sound) - band) if len(silent) else t
    sounded = np.concatenate([[0], np.cumsum(~silent)])
    speech = (carry[stream, 1] > 0) | (sounded[1:] - sounded[starts[stream]] > 0)
    length = carry[stream, 2] + t + 1
    r1, r2, r3 = limits[stream, 0], limits[stream, 1], limits[stream, 2]
    fire = ~off[stream] & ((run >= r1) | (speech & (run >= r2)) | (length >= r3))
    fired = np.concatenate([[0], np.cumsum(fire)])
    ends = starts + lengths
    fires = (fired[ends] - fired[starts] > 0).tolist()
    has = lengths > 0
    silence = carry[:, 0].copy()
    silence[has] = run[ends[has] - 1]
    spoke = carry[:, 1] > 0
    spoke[has] = speech[ends[has] - 1]
    return fires, silence.tolist(), spoke.tolist()
