"""Cost of a lexicon beam as tensor operations over [streams, beam], against flashlight's search per stream.

    python -m tools.bench_batched_beam [--model digits] [--streams 200] [--device cpu|cuda]

Issue 28 asks whether the beam could be one batched call a tick instead of a flashlight decoder per stream. This
measures the tensor form's floor before anyone builds it: one search step for all streams at once, with the
candidates flashlight's lexicon search (CTC, no LM: the bundled digits decoding) makes for each hypothesis: a move
down the lexicon's trie for every token it allows, a word ended where the trie has one, the same token repeated,
blank; the beam threshold; hypotheses in the same state (trie node, token, after blank) merged by their maximum;
the best `beam` kept. The tokens are cut to those the lexicon spells (+ blank and the word boundary).

It is a cost model, not a decoder: it keeps no path (reading a partial from backpointers would add a gather per
step of the utterance), and it does not reproduce flashlight's order among equal scores. So its time is a lower
bound for a batched beam written this way. Both sides read the same log-probabilities: the model's on real
connected digits (FSDD voices), a tick of 160 ms at a time. flashlight's side is what a tick of `BeamDecoder` costs:
`decode_step` for each stream's new steps and `get_best_hypothesis` for its partial. Prints a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from models.decoding import BeamDecoder
from stream.messages import Chunk
from stream.pipeline import PipelineSpec
from stream.session import Recognizer
from tools.bench_chunk import CHUNK_MS, _audio

NEG = -math.inf


def tick_log_probs(recognizer: Recognizer, audios: list[np.ndarray], ticks: int) -> list[list[np.ndarray]]:
    """The model's log-probabilities [steps, tokens] for each stream's 160 ms chunks, tick by tick."""
    rate = recognizer.sample_rate
    size = rate * CHUNK_MS // 1000
    pipeline = recognizer.pipeline(PipelineSpec(slots=len(audios)))
    out = []
    for tick in range(ticks):
        chunks = {k: Chunk(a[tick * size : (tick + 1) * size], rate=rate if tick == 0 else None)
                  for k, a in enumerate(audios)}
        request = pipeline.model.submit(pipeline.features.process(chunks))
        pipeline.model.tick()
        probs = pipeline.model.result(request).log_probs
        rows = np.split(np.asarray(probs.data, np.float32), np.cumsum(probs.lengths)[:-1])
        by_key = dict(zip(probs.keys, rows))
        out.append([by_key[k] for k in range(len(audios))])
    return out


class TensorBeam:
    """One beam per stream as tensors [streams, beam]; `step` advances every stream by one step."""

    def __init__(self, recognizer: Recognizer, streams: int, device: str):
        options, tokenizer = recognizer.options, recognizer.tokenizer
        tokens = tokenizer.tokens
        spelled = [[*w, tokens[tokenizer.boundary]] for w in options.words]  # (as models.lm spells them)
        used = sorted({tokenizer.blank, tokenizer.boundary} | {tokens.index(c) for s in spelled for c in s})
        index = {t: i for i, t in enumerate(used)}
        children: list[dict[int, int]] = [{}]
        word = [False]
        for spelling in spelled:  # the trie over the used tokens: node 0 is the root
            node = 0
            for c in spelling:
                k = index[tokens.index(c)]
                if k not in children[node]:
                    children.append({})
                    word.append(False)
                    children[node][k] = len(children) - 1
                node = children[node][k]
            word[node] = True
        self.u = len(used)
        self.used = torch.tensor(used, device=device)
        self.child = torch.full((len(children), self.u), -1, dtype=torch.long, device=device)
        for n, d in enumerate(children):
            for k, c in d.items():
                self.child[n, k] = c
        self.has_children = torch.tensor([bool(d) for d in children], device=device)
        self.is_word = torch.tensor(word, device=device)
        self.blank, self.boundary = index[tokenizer.blank], index[tokenizer.boundary]
        self.beam, self.threshold, self.word_score = options.beam, options.beam_threshold, options.word_score
        self.n = torch.arange(self.u, device=device)
        self.score = torch.full((streams, self.beam), NEG, device=device)
        self.score[:, 0] = 0.0
        self.node = torch.zeros(streams, self.beam, dtype=torch.long, device=device)
        self.token = torch.full((streams, self.beam), self.boundary, dtype=torch.long, device=device)
        self.after_blank = torch.zeros(streams, self.beam, dtype=torch.bool, device=device)

    def step(self, log_probs: torch.Tensor) -> None:
        """log_probs [streams, all tokens]: one step of every stream."""
        lp = log_probs.index_select(1, self.used)
        score, node, token, after_blank, u = self.score, self.node, self.token, self.after_blank, self.u
        streams = score.shape[0]
        child = self.child[node]  # [streams, beam, u]
        moves = (child >= 0) & (after_blank[..., None] | (self.n != token[..., None]))
        child = child.clamp(min=0)
        base = (score[..., None] + lp[:, None, :]).masked_fill_(~moves, NEG)
        on = base.masked_fill(~self.has_children[child], NEG)
        ended = base.masked_fill(~self.is_word[child], NEG) + self.word_score
        repeat = (score + lp.gather(1, token)).masked_fill_(after_blank, NEG)
        blank = score + lp[:, self.blank, None]
        scores = torch.cat([on, ended, repeat[..., None], blank[..., None]], -1).reshape(streams, -1)
        keys = torch.cat([child * (2 * u) + self.n * 2, (self.n * 2).expand_as(child),
                          (node * u + token)[..., None] * 2, (node * u + self.blank)[..., None] * 2 + 1],
                         -1).reshape(streams, -1)
        scores.masked_fill_(scores < scores.amax(1, keepdim=True) - self.threshold, NEG)
        # merge: by score, then (stably) by state, so that the first of each state's run is its maximum
        by_score = scores.argsort(dim=1, descending=True, stable=True)
        keys = keys.gather(1, by_score)
        by_key = keys.argsort(dim=1, stable=True)
        keys, scores = keys.gather(1, by_key), scores.gather(1, by_score).gather(1, by_key)
        first = torch.ones_like(keys, dtype=torch.bool)
        first[:, 1:] = keys[:, 1:] != keys[:, :-1]
        self.score, pick = scores.masked_fill(~first, NEG).topk(self.beam, 1)
        key = keys.gather(1, pick)
        self.after_blank, self.token, self.node = (key % 2).bool(), (key // 2) % u, key // (2 * u)


def time_flashlight(recognizer: Recognizer, ticks: list[list[np.ndarray]]) -> list[float]:
    decoders = [BeamDecoder(recognizer.tokenizer, recognizer.step_seconds, recognizer.options) for _ in ticks[0]]
    steps, times = [0] * len(decoders), []
    for rows in ticks:
        t0 = time.thread_time()
        for i, (decoder, r) in enumerate(zip(decoders, rows)):
            decoder.accept(r, steps[i])
            decoder.partial()
            steps[i] += r.shape[0]
        times.append(time.thread_time() - t0)
    return times


def time_tensors(recognizer: Recognizer, ticks: list[list[np.ndarray]], device: str) -> list[float]:
    beam = TensorBeam(recognizer, len(ticks[0]), device)
    times = []
    for rows in ticks:
        # (streams get 5 or 6 steps a tick: each step is searched for all, the ragged ones padded with blank)
        depth = max(r.shape[0] for r in rows)
        padded = np.full((len(rows), depth, rows[0].shape[1]), NEG, np.float32)
        padded[:, :, recognizer.tokenizer.blank] = 0.0
        for i, r in enumerate(rows):
            padded[i, : r.shape[0]] = r
        data = torch.from_numpy(padded).to(device)
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.thread_time() if device == "cpu" else time.perf_counter()
        for t in range(depth):
            beam.step(data[:, t])
        if device != "cpu":
            torch.cuda.synchronize()
        times.append((time.thread_time() if device == "cpu" else time.perf_counter()) - t0)
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits")
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--ticks", type=int, default=40)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    recognizer = Recognizer.load(args.model, device="cpu")
    if not recognizer.options.beam or not recognizer.options.words or recognizer.options.lm:
        raise SystemExit(f"{args.model}: its decoding is not a lexicon beam without an LM")
    ticks = tick_log_probs(recognizer, _audio(args.streams, recognizer.sample_rate), args.ticks)
    flashlight = time_flashlight(recognizer, ticks)
    tensors = time_tensors(recognizer, ticks, args.device)

    def ms(times: list[float]) -> dict:
        kept = np.array(times[5:]) * 1000  # (after the first ticks: allocations, a GPU's warm-up)
        return {"median_ms": round(float(np.median(kept)), 2), "p95_ms": round(float(np.percentile(kept, 95)), 2)}

    steps = float(np.mean([sum(r.shape[0] for r in rows) for rows in ticks]) / args.streams)
    print(json.dumps({"model": args.model, "streams": args.streams, "steps_per_stream_tick": round(steps, 2),
                      "beam": recognizer.options.beam, "flashlight_per_stream": ms(flashlight),
                      f"tensor_beam_{args.device}": ms(tensors)}))


if __name__ == "__main__":
    main()
