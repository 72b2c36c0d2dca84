"""A pen model on the held-out writers: words (CER case-sensitive and folded, WER with and without a lexicon; all of
them, and again without those whose ink cannot hold their label, `unipen.misaligned`), isolated characters by
category with their charset, the held-out UCI letters, two-word lines, and the last letter's latency.

    python -m tools.eval_ink --model models/bundled/handwriting.pt --out runs/handwriting/eval.json

Frames come from the model's own front end (one stream per sample, the whole ink at once: streaming gives the same
frames, tests/test_handwriting.py) and are decoded by models.decoding's decoders (a `charset` restricting which character), many
samples to a model call. Invariant: only held-out writers (tools.unipen's seeded split) are read.

Words with a language model (`--lm none words chars`, models.lm): the held-out writers are split by writer into a
tuning half and a reporting half (`halves`); `--tune` searches each LM's beam and weights on the tuning half, and
the words are scored on the reporting half with the settings in models.lm.TUNED:

    python -m tools.eval_ink --lm none words chars --lexicon-words 0 --lines 0 --out runs/handwriting/lm.json
    python -m tools.eval_ink --lm chars --tune --lexicon-words 0 --lines 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint
from models.decoding import DecodeOptions, make_decoder
from models.lm import LM_NAMES, TUNED

from . import unipen


def edit_distance(ref: str, hyp: str) -> int:
    """Levenshtein distance in characters."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def _cer(refs: list[str], hyps: list[str], fold: bool = False) -> float:
    f = (lambda s: s.lower()) if fold else (lambda s: s)
    errors = sum(edit_distance(f(r), f(h)) for r, h in zip(refs, hyps))
    return errors / max(1, sum(len(r) for r in refs))


class Reader:
    """A checkpoint's front end, model and decoding, for many whole samples at once."""

    def __init__(self, model: str, batch: int = 64):
        self.ckpt = load_checkpoint(model, "cpu")
        self.model, self.tokenizer = self.ckpt.model, self.ckpt.tokenizer
        self.extractor = self.ckpt.extractor()
        self.step_seconds = self.extractor.frame_seconds * self.model.cfg.stack
        self.batch = batch

    def frames(self, points: np.ndarray) -> torch.Tensor:
        front = self.extractor.open()
        return front.steps(front.cut(points, last=True))

    @torch.no_grad()
    def log_probs(self, samples: list[np.ndarray]) -> list[torch.Tensor]:
        out = []
        for i in range(0, len(samples), self.batch):
            frames = [self.frames(p) for p in samples[i : i + self.batch]]
            lengths = [len(f) // self.model.cfg.stack for f in frames]
            x = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)
            lp, _ = self.model(x)
            out += [lp[j, : lengths[j]] for j in range(len(frames))]
        return out

    def read(self, log_probs: list[torch.Tensor], options: DecodeOptions = DecodeOptions()) -> list[str]:
        """Each sample's text, decoded with `options`."""
        texts = []
        decoder = make_decoder(self.tokenizer, self.step_seconds, options)  # one: a lexicon is read once
        for lp in log_probs:
            decoder.accept(lp, 0)
            texts.append(decoder.finish().text)
        return texts


def _word_scores(refs: list[str], hyps: list[str]) -> dict:
    return {"cer": _cer(refs, hyps), "cer_folded": _cer(refs, hyps, fold=True),
            "wer": float(np.mean([r != h for r, h in zip(refs, hyps)])),
            "wer_folded": float(np.mean([r.lower() != h.lower() for r, h in zip(refs, hyps)]))}


def halves(held: set[str], seed: int = 0) -> tuple[set[str], set[str]]:
    """(tuning, reporting) halves of the held-out writers, a seeded draw by writer: an LM's settings are chosen on
    one and its figures read on the other."""
    names = sorted(held)
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[i] for i in order[: len(names) // 2]}, {names[i] for i in order[len(names) // 2 :]}


# What --tune tries per LM: every combination of these values
GRID = {
    "chars": {"lm_weight": (0.3, 0.5, 0.8, 1.2), "token_score": (0.5, 1.0, 2.0, 3.0), "beam": (8, 16),
              "beam_tokens": (6,)},
    "words": {"lm_weight": (0.5, 1.0, 2.0), "unk_score": (-3.0, -5.0, -10.0), "word_score": (0.0, 2.0),
              "beam": (16,), "beam_tokens": (8,)},
}


def lm_options(name: str, **changes) -> DecodeOptions:
    """How `--lm NAME` reads: greedy for "none", else the LM with its tuned settings (or `changes`)."""
    if name == "none":
        return DecodeOptions()
    return DecodeOptions(lm=name, **{**TUNED[name], **changes})


def _timed_read(reader: Reader, lps: list[torch.Tensor], options: DecodeOptions) -> tuple[list[str], float]:
    """The texts and the CPU time per word in ms (the decoder made before the clock starts: the LM loads once)."""
    make_decoder(reader.tokenizer, reader.step_seconds, options)
    t0 = time.process_time()
    texts = reader.read(lps, options)
    return texts, (time.process_time() - t0) * 1000 / max(1, len(lps))


def lm_words(reader: Reader, samples: list, lps: list[torch.Tensor], aligned: np.ndarray, writers: set[str],
             names: list[str], log=print) -> dict:
    """Words of `writers` read with each LM of `names`, all and aligned."""
    pick = [i for i, (_, _, w) in enumerate(samples) if w in writers]
    refs, sub = [samples[i][1] for i in pick], [lps[i] for i in pick]
    keep = aligned[pick]
    out: dict = {"n": len(pick), "writers": len(writers), "aligned_n": int(keep.sum())}
    for name in names:
        options = lm_options(name)
        hyps, ms = _timed_read(reader, sub, options)
        row = {**_word_scores(refs, hyps), "ms_per_word": round(ms, 3),
               "aligned": _word_scores([r for r, k in zip(refs, keep) if k], [h for h, k in zip(hyps, keep) if k]),
               "options": {k: v for k, v in vars(options).items() if v != getattr(DecodeOptions(), k)},
               "examples": [[r, h] for r, h in list(zip(refs, hyps))[:20]]}
        out[name] = row
        log(f"words, lm {name}: CER {row['cer']:.4f} folded {row['cer_folded']:.4f} WER {row['wer']:.4f} "
            f"(aligned: {row['aligned']['cer']:.4f}) {ms:.2f} ms a word")
    return out


def tune(reader: Reader, samples: list, lps: list[torch.Tensor], writers: set[str], name: str, log=print) -> list:
    """GRID[name] on the words of `writers` (the tuning half), best folded CER first."""
    pick = [i for i, (_, _, w) in enumerate(samples) if w in writers]
    refs, sub = [samples[i][1] for i in pick], [lps[i] for i in pick]
    keys = list(GRID[name])
    rows = []
    for values in itertools.product(*(GRID[name][k] for k in keys)):
        changes = dict(zip(keys, values))
        hyps, ms = _timed_read(reader, sub, lm_options(name, **changes))
        rows.append({**changes, **_word_scores(refs, hyps), "ms_per_word": round(ms, 3)})
        log(f"tune {name} {changes}: CER {rows[-1]['cer']:.4f} folded {rows[-1]['cer_folded']:.4f} {ms:.2f} ms")
    return sorted(rows, key=lambda r: r["cer_folded"])


def _lines(reader: Reader, held: set[str], n: int, seed: int) -> dict:
    """Two words of one held-out writer in one stream, side by side with a word space and a pen-up between them
    (tools.ink_data.join, as training joins them): a line as a canvas takes it. CER of the pair against the same
    words read alone."""
    from .ink_data import join

    c = unipen.load_category("7")
    idx = unipen.indices("7", held, train=False)
    rng = np.random.default_rng(seed)
    pairs = [(int(a), int(b)) for a, b in itertools.pairwise(idx) if c.writers[a] == c.writers[b]]
    pairs = [pairs[i] for i in np.sort(rng.permutation(len(pairs))[:n])]
    alone, joined, refs = [], [], []
    for a, b in pairs:
        (pa, la, _), (pb, lb, _) = unipen.sample("7", a), unipen.sample("7", b)
        alone += [pa, pb]
        joined.append(join([pa, pb], [False, True], rng))
        refs.append(f"{la} {lb}")
    hyps = reader.read(reader.log_probs(joined))
    single = reader.read(reader.log_probs(alone))
    single_refs = [r for ref in refs for r in ref.split(" ", 1)]
    return {"n": len(refs), "cer": _cer(refs, hyps), "cer_words_alone": _cer(single_refs, single),
            "words_wrong_count": float(np.mean([len(h.split()) != 2 for h in hyps])),
            "examples": [[r, h] for r, h in list(zip(refs, hyps))[:20]]}


def fit_gap(reader: Reader, held: set[str], n: int) -> dict:
    """CER on n words of the training writers against n of the held-out ones (a seeded draw, no augmentation): how
    far the model fits the writers it learnt from, and how far that carries to new ones. Words whose ink cannot hold
    their label (unipen.misaligned) are left out of both: no model reads them."""
    out = {"n": n}
    for name, train in (("training_writers", True), ("heldout_writers", False)):
        idx = np.random.default_rng(1).choice(unipen.indices("7", held, train, aligned=True), n, replace=False)
        samples = [unipen.sample("7", int(i)) for i in idx]
        hyps = reader.read(reader.log_probs([p for p, _, _ in samples]))
        out[f"cer_{name}"] = _cer([lbl for _, lbl, _ in samples], hyps)
    return out


def evaluate(model: str, seed: int = 0, words: int = 0, lexicon_words: int = 500, lines: int = 500,
             gap_words: int = 0, lms: tuple[str, ...] = (), tune_lms: bool = False, log=print,
             by_contributor: bool = False) -> dict:
    """`by_contributor`: the held-out writers of configs/handwriting_contrib.yaml (every contributor's), each
    contributor's words scored apart too."""
    reader = Reader(model)
    held = unipen.split_writers(seed, by_contributor=by_contributor)
    report: dict = {"model": str(model), "heldout_writers": len(held), "split": "contributor" if by_contributor else "writer"}
    greedy = DecodeOptions()

    idx = unipen.indices("7", held, train=False)
    if words:
        idx = np.sort(np.random.default_rng(seed).permutation(idx)[:words])
    samples = [unipen.sample("7", int(i)) for i in idx]
    t0 = time.perf_counter()
    lps = reader.log_probs([p for p, _, _ in samples])
    model_seconds = time.perf_counter() - t0
    refs = [lbl for _, lbl, _ in samples]
    hyps = reader.read(lps, greedy)
    report["words"] = {
        "n": len(refs), "writers": len({w for _, _, w in samples}), **_word_scores(refs, hyps),
        # where in the word the errors are (the first letter: the stream's start)
        "first_letter_wrong_folded": float(np.mean([r[:1].lower() != h[:1].lower() for r, h in zip(refs, hyps)])),
        "last_letter_wrong_folded": float(np.mean([r[-1:].lower() != h[-1:].lower() for r, h in zip(refs, hyps)])),
        "seconds_front_end_and_model": round(model_seconds, 1),
        "examples": [[r, h] for r, h in list(zip(refs, hyps))[:40]],
    }
    log(f"words: {report['words']['n']} CER {report['words']['cer']:.3f} folded {report['words']['cer_folded']:.3f} "
        f"WER {report['words']['wer']:.3f}")
    groups: dict[str, list[int]] = {}
    for k, (_, _, writer) in enumerate(samples):
        groups.setdefault(unipen.contributor(writer), []).append(k)
    report["words"]["by_contributor"] = {  # each contributor's tablet and collection apart
        c: {"n": len(ks), "cer": _cer([refs[k] for k in ks], [hyps[k] for k in ks])} for c, ks in sorted(groups.items())}
    # the same words less those whose ink cannot hold their label (unipen.misaligned: shifted segmentation)
    keep = ~unipen.misaligned("7")[idx]
    ref_a, hyp_a = [r for r, k in zip(refs, keep) if k], [h for h, k in zip(hyps, keep) if k]
    report["words_aligned"] = {
        "n": len(ref_a), "writers": len({w for (_, _, w), k in zip(samples, keep) if k}), **_word_scores(ref_a, hyp_a),
    }
    log(f"words, aligned: {report['words_aligned']}")
    if lms:
        tuning, _ = halves(unipen.split_writers(seed), seed)  # the LMs were tuned on half of the first 52
        reporting = held - tuning
        if tune_lms:
            report["lm_tuning"] = {name: tune(reader, samples, lps, tuning, name, log)[:10] for name in lms
                                   if name != "none"}
        report["words_lm"] = {"tuning_writers": sorted(tuning),
                              "reporting": lm_words(reader, samples, lps, keep, reporting, list(lms), log)}
    # the last letter's latency: its first emission after the word's last pen-down point, in ink seconds; and
    # where the first letter comes out (at step 0 it is guessed before any of its ink: train.first_label_steps)
    lat, firsts = [], []
    for (p, _, _), lp in zip(samples, lps):
        path = lp.argmax(-1).tolist()
        emitted = [t for t, k in enumerate(path) if k > reader.tokenizer.boundary and (t == 0 or path[t - 1] != k)]
        down = p[p[:, 3] > 0.5]
        if emitted:
            lat.append((emitted[-1] + 1) * reader.step_seconds - (down[-1, 2] - p[0, 2]))
            firsts.append(emitted[0])
    report["last_letter_latency_s"] = {"median": float(np.median(lat)), "p90": float(np.percentile(lat, 90)),
                                       "max": float(np.max(lat)), "n": len(lat)}
    report["words"]["first_letter_at_step_0"] = float(np.mean([t == 0 for t in firsts]))
    if lexicon_words:
        vocab = sorted({unipen.clean_label(str(lbl)) for lbl in unipen.load_category("7").labels[
            unipen.indices("7", held, train=True, aligned=False)]} - {None})
        vocab = [w for w in vocab if " " not in w]
        opts = DecodeOptions(beam=16, words=tuple(vocab))
        n = min(lexicon_words, len(refs))
        t0 = time.perf_counter()
        lex = reader.read(lps[:n], opts)
        report["words"]["lexicon"] = {
            "n": n, "vocabulary": len(vocab), "wer": float(np.mean([r != h for r, h in zip(refs[:n], lex)])),
            "wer_greedy_same_words": float(np.mean([r != h for r, h in zip(refs[:n], hyps[:n])])),
            "oov": float(np.mean([r not in set(vocab) for r in refs[:n]])),
            "seconds_per_word": round((time.perf_counter() - t0) / n, 4),
        }
        log(f"lexicon: {report['words']['lexicon']}")

    if lines:
        report["lines"] = _lines(reader, held, lines, seed)
        log(f"lines: {report['lines']}")

    if gap_words:
        report["fit_gap"] = fit_gap(reader, held, gap_words)
        log(f"fit gap: {report['fit_gap']}")

    report["characters"] = {}
    for cat, charset in (("1a", "digits"), ("1b", "upper"), ("1c", "lower")):
        idx = unipen.indices(cat, held, train=False)
        samples = [unipen.sample(cat, int(i)) for i in idx]
        lps = reader.log_probs([p for p, _, _ in samples])
        refs = [lbl for _, lbl, _ in samples]
        row = {"n": len(refs), "charset": charset}
        for name, opts in ((charset, replace(greedy, charset=charset)), ("all", greedy)):
            hyps = reader.read(lps, opts)
            row[f"accuracy_{name}"] = float(np.mean([r == h for r, h in zip(refs, hyps)]))
        report["characters"][cat] = row
        log(f"{cat}: {row}")

    points, labels = unipen.uci()
    held_uci = unipen.uci_split(seed)[1]
    lps = reader.log_probs([points[i] for i in held_uci])
    refs = [labels[i] for i in held_uci]
    row = {"n": len(refs)}
    for name, opts in (("lower", replace(greedy, charset="lower")), ("all", greedy)):
        hyps = reader.read(lps, opts)
        row[f"accuracy_{name}"] = float(np.mean([r == h for r, h in zip(refs, hyps)]))
    report["uci"] = row
    log(f"uci: {row}")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="handwriting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--words", type=int, default=0, help="held-out words to read (0: all)")
    p.add_argument("--lexicon-words", type=int, default=500, help="of them, read with the training words' lexicon")
    p.add_argument("--lines", type=int, default=500, help="pairs of a writer's words read as one line (0: none)")
    p.add_argument("--gap-words", type=int, default=0, help="also read this many training writers' words (and as many "
                   "held-out ones): the fit against the gap")
    p.add_argument("--lm", nargs="*", default=[], choices=["none", *LM_NAMES],
                   help="also read the words of the reporting half of the held-out writers with each of these LMs")
    p.add_argument("--tune", action="store_true", help="first search each --lm's settings on the tuning half")
    p.add_argument("--out", help="JSON report")
    p.add_argument("--by-contributor", action="store_true", help="held-out writers of every contributor (the split of "
                   "configs/handwriting_contrib.yaml), words scored per contributor too")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    report = evaluate(args.model, args.seed, args.words, args.lexicon_words, args.lines, args.gap_words,
                      tuple(args.lm), args.tune, by_contributor=args.by_contributor)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
