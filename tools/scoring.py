"""Word and sentence error rates for digit strings.

"oh" and "zero" are the same digit, and a speaker (or a TTS voice) may say either, so both reference
and hypothesis are normalised to "zero" before scoring; otherwise a correct "oh" would count as an
error against a reference written "zero".
"""

from __future__ import annotations

from collections.abc import Iterable

import jiwer

_SYNONYMS = {"oh": "zero", "o": "zero"}


def normalize_digits(text: str) -> str:
    """Lowercase, single-spaced words with "oh" mapped to "zero"."""
    words = text.lower().replace(",", " ").replace(".", " ").split()
    return " ".join(_SYNONYMS.get(w, w) for w in words)


def edit_counts(ref: str, hyp: str) -> tuple[int, int, int, int]:
    """(substitutions, deletions, insertions, reference words) of one normalised pair."""
    ref_words = normalize_digits(ref).split()
    hyp_words = normalize_digits(hyp).split()
    if not ref_words or not hyp_words:  # jiwer rejects empty references
        return 0, len(ref_words), len(hyp_words), len(ref_words)
    out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    return out.substitutions, out.deletions, out.insertions, len(ref_words)


def wer_counts(ref: str, hyp: str) -> tuple[int, int]:
    """(word edit distance, reference words) of one normalised pair."""
    sub, dele, ins, words = edit_counts(ref, hyp)
    return sub + dele + ins, words


def score(pairs: Iterable[tuple[str, str]]) -> dict[str, float | int]:
    """Corpus WER (errors summed over utterances / reference words summed) and sentence error rate."""
    sub = dele = ins = words = wrong = n = 0
    for ref, hyp in pairs:
        s, d, i, w = edit_counts(ref, hyp)
        sub, dele, ins, words = sub + s, dele + d, ins + i, words + w
        wrong, n = wrong + (s + d + i > 0), n + 1
    return {
        "utterances": n,
        "ref_words": words,
        "word_errors": sub + dele + ins,
        "substitutions": sub,
        "deletions": dele,
        "insertions": ins,
        "wer": (sub + dele + ins) / max(words, 1),
        "ser": wrong / max(n, 1),
    }
