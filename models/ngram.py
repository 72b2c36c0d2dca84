"""Character n-gram language models written as ARPA text, the format flashlight's KenLM reads: interpolated
Witten-Bell over weighted sentences, pruned by weighted count, with the backoff weights renormalised after pruning.

KenLM's `lmplz` is neither on PyPI nor in Debian here, and no maintained PyPI package writes ARPA from counts (NLTK's
`nltk.lm` scores but does not write it), so the estimate is here; it is short. Witten-Bell rather than Kneser-Ney:
its smoothing takes weighted (fractional) counts as they come (a word list weighted by frequency), where Kneser-Ney's
discounts are estimated from integer counts of counts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# While counting, a sentence is a string of one character per token, so that an n-gram is a substring.
START, END = "\x02", "\x03"
_NAMES = {START: BOS, END: EOS}


def count(sentences: Iterable[tuple[str, list[tuple[str, float]]]], order: int) -> list[dict[str, float]]:
    """Weighted n-gram counts of orders 1..order. A sentence is its tokens as one string, START where it begins, given
    as a stem and its endings with their weights (END where it ends): the stem's own n-grams are counted once for
    all its endings (a word and the word followed by '.' or ',' share all but their last few)."""
    counts: list[dict[str, float]] = [defaultdict(float) for _ in range(order)]
    for stem, endings in sentences:
        total, size = sum(w for _, w in endings), len(stem)
        for n in range(1, order + 1):
            table = counts[n - 1]
            for i in range(size - n + 1):
                table[stem[i : i + n]] += total
            for ending, weight in endings:
                text = stem + ending
                for i in range(max(0, size - n + 1), len(text) - n + 1):
                    table[text[i : i + n]] += weight
    counts[0].pop(START, None)  # a sentence's start is given, never predicted
    return counts


def as_in_line(counts: list[dict[str, float]], boundary: str, weight: float) -> list[dict[str, float]]:
    """The counts with each sentence also counted `weight` times as a word between word boundaries, as in a line of
    several words: START and END read `boundary` there (the copy's n-grams follow from the sentence's own)."""
    out: list[dict[str, float]] = []
    for table in counts:
        copy: dict[str, float] = defaultdict(float)
        for gram, c in table.items():
            copy[gram] += c
            copy[gram.replace(START, boundary).replace(END, boundary)] += c * weight
        out.append(copy)
    out[0].pop(START, None)
    return out


def witten_bell(counts: list[dict[str, float]], vocabulary: Iterable[str], min_count: float) -> tuple[list, dict]:
    """(probabilities per order: {n-gram: p}, backoff weights: {context: b}) of the interpolated Witten-Bell model,
    n-grams of order 2 and up kept where their count is at least `min_count`. Pruning by count keeps every kept
    n-gram's prefix and suffix (neither can be rarer), as an ARPA file needs.

        P(w|h) = (c(hw) + T(h) P(w|h')) / (c(h) + T(h)),  T(h): how many different tokens follow h

    The unigrams are interpolated the same way with a uniform distribution over `vocabulary` (tokens no sentence
    holds keep some probability). A pruned n-gram's probability is the backoff weight of its context times the
    lower order's, that weight set so that each context's probabilities still sum to one."""
    vocab = sorted(set(vocabulary) | set(counts[0]) | {END})
    total, types = sum(counts[0].values()), len(counts[0])
    probs: list[dict[str, float]] = [
        {w: (counts[0].get(w, 0.0) + types / len(vocab)) / (total + types) for w in vocab}
    ]
    for n in range(2, len(counts) + 1):
        context_count: dict[str, float] = defaultdict(float)
        context_types: dict[str, int] = defaultdict(int)
        for gram, c in counts[n - 1].items():
            context_count[gram[:-1]] += c
            context_types[gram[:-1]] += 1
        lower = probs[n - 2]
        probs.append({})
        for gram, c in counts[n - 1].items():
            if c >= min_count:  # (its suffix, no rarer, is kept in `lower`)
                h, t = gram[:-1], context_types[gram[:-1]]
                probs[n - 1][gram] = (c + t * lower[gram[1:]]) / (context_count[h] + t)
    backoff: dict[str, float] = {}
    for n in range(2, len(counts) + 1):
        kept, lower = probs[n - 1], probs[n - 2]
        high: dict[str, float] = defaultdict(float)
        low: dict[str, float] = defaultdict(float)
        for gram, p in kept.items():
            high[gram[:-1]] += p
            low[gram[:-1]] += lower[gram[1:]]
        for h in high:
            backoff[h] = max(1.0 - high[h], 1e-12) / max(1.0 - low[h], 1e-12)
    return probs, backoff


def write_arpa(probs: list[dict[str, float]], backoff: dict[str, float], path: str | Path) -> Path:
    """The model as ARPA text: log10 probabilities, tokens separated by spaces, <s> and <unk> among the unigrams."""

    def name(gram: str) -> str:
        return " ".join(_NAMES.get(c, c) for c in gram)

    unigrams = dict(probs[0])
    unigrams.pop(START, None)
    lines_per_order = [len(unigrams) + 1 + (UNK not in unigrams)] + [len(p) for p in probs[1:]]
    with open(path, "w") as f:
        f.write("\\data\\\n" + "".join(f"ngram {n}={k}\n" for n, k in enumerate(lines_per_order, 1)) + "\n")
        for n, table in enumerate(probs, 1):
            f.write(f"\\{n}-grams:\n")
            if n == 1:
                f.write(f"-99\t{BOS}\t{math.log10(backoff.get(START, 1.0)):.6f}\n")
                if UNK not in unigrams:
                    f.write(f"-99\t{UNK}\n")
                table = unigrams
            for gram in sorted(table):
                b = backoff.get(gram) if n < len(probs) else None
                tail = "" if b is None else f"\t{math.log10(b):.6f}"
                f.write(f"{math.log10(table[gram]):.6f}\t{name(gram)}{tail}\n")
            f.write("\n")
        f.write("\\end\\\n")
    return Path(path)
