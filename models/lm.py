"""Language models for the beam search, and the flashlight search that reads them, its parts shared per process.

Two English models, made from wordfreq's word list with frequencies (its code Apache-2.0, its data CC BY-SA 4.0;
the list ships inside the wheel, so nothing is downloaded):
  "words": a lexicon of the most frequent words (each lower case, Capitalised and UPPER) with a unigram word LM;
           the search reads only lexicon words, or also other strings when `unk_score` is finite.
  "chars": a character 6-gram LM (interpolated Witten-Bell, models/ngram.py) over the same words weighted by
           frequency, with trailing '.' and ',' and word boundaries; the search is lexicon-free, so names, codes and
           mixed strings can still be read.
They are built once into a cache folder (`cache_folder`, about 25 s of one core) and loaded once per process; any
machine that runs a stream (a Ray worker too) builds its own from the same pinned word list.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import ngram
from .audio import quiet_stderr
from .tokens import Tokenizer

LM_NAMES = ("words", "chars")
# Each LM's search settings (models.decoding.DecodeOptions fields), chosen on the tuning half of the held-out
# writers (tools/eval_ink.py --tune; chars: CER 18.4 -> 12.6% on its 3,300 words, beam 16 gave 12.1% at 2.5 times
# the cost) and reported on the other half: aligned words' CER 18.4 -> 12.65% (chars) and 14.7% (words).
TUNED = {
    "chars": {"beam": 8, "beam_tokens": 6, "lm_weight": 0.8, "token_score": 2.0},
    "words": {"beam": 16, "beam_tokens": 8, "lm_weight": 0.5, "word_score": 0.0, "unk_score": -3.0},
}


@dataclass(frozen=True)
class Recipe:
    """How the English LMs are made. The case and punctuation shares are set by hand (about what running English
    text shows), not learnt from UNIPEN: its writers share prompts, and held-out writers' words would leak."""

    words: int = 50_000  # the most frequent English words (wordfreq's "large" list); the 50,000th is 2.5e-7
    order: int = 6  # of the character LM
    corpus: float = 1e8  # frequencies times this are the counts, as in a text of that many words
    min_count: float = 20.0  # character n-grams rarer than this are pruned: 14 MB of ARPA (tools/build_lm.py)
    lower: float = 0.75  # shares of a word's three spellings: lower case, Capitalised, UPPER
    capital: float = 0.2
    upper: float = 0.05
    period: float = 0.03  # shares of a word followed by '.' and by ','
    comma: float = 0.03
    in_line: float = 0.3  # weight of a word between word boundaries (not alone in its stream), against alone


def english_words(count: int) -> list[tuple[str, float]]:
    """wordfreq's `count` most frequent English words with their frequencies. wordfreq writes every run of two or
    more digits as zeros ("2019" -> "0000"): each is spread over ten seeded runs of digits."""
    import wordfreq

    rng = np.random.default_rng(0)
    out = []
    for word in wordfreq.top_n_list("en", count, wordlist="large"):
        f = wordfreq.word_frequency(word, "en", wordlist="large")
        if "00" in word:
            out += [("".join(str(rng.integers(10)) if c == "0" else c for c in word), f / 10) for _ in range(10)]
        else:
            out.append((word, f))
    return out


def spellings(word: str, recipe: Recipe) -> list[tuple[str, float]]:
    """A lower-case word's written forms with their shares (one form when case cannot change it)."""
    forms = {word: recipe.lower}
    cap, upper = word[:1].upper() + word[1:], word.upper()
    if cap != word:
        forms[cap] = forms.get(cap, 0.0) + recipe.capital
    if upper != cap:
        forms[upper] = forms.get(upper, 0.0) + recipe.upper
    total = sum(forms.values())
    return [(w, s / total) for w, s in forms.items()]


def build(name: str, tokenizer: Tokenizer, folder: str | Path, recipe: Recipe = Recipe()) -> dict[str, Path]:
    """Write LM `name`'s files into `folder`: {"lm": ARPA file, "lexicon": flashlight lexicon (for "words")}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    allowed = set(tokenizer.tokens)
    words = [(w, f) for w, f in english_words(recipe.words) if set(w) <= allowed]
    forms = [(s, f * share) for w, f in words for s, share in spellings(w, recipe) if set(s) <= allowed]
    if name == "words":
        return _build_words(forms, tokenizer, folder)
    if name == "chars":
        return {"lm": _build_chars(forms, tokenizer, folder, recipe)}
    raise ValueError(f"unknown language model {name!r} (known: {', '.join(LM_NAMES)})")


def _build_words(forms: list[tuple[str, float]], tokenizer: Tokenizer, folder: Path) -> dict[str, Path]:
    """A unigram ARPA over the forms (a line's end: one in three words; an unknown word: what the top list leaves
    of English) and the lexicon that spells them."""
    merged: dict[str, float] = {}
    for w, f in forms:
        merged[w] = merged.get(w, 0.0) + f
    unknown, end = max(1.0 - sum(merged.values()), 1e-3), sum(merged.values()) / 3
    total = sum(merged.values()) + unknown + end
    with open(folder / "words.arpa", "w") as f:
        f.write(f"\\data\\\nngram 1={len(merged) + 3}\nngram 2=1\n\n\\1-grams:\n-99\t{ngram.BOS}\t0\n")
        f.write(f"{math.log10(end / total):.6f}\t{ngram.EOS}\n{math.log10(unknown / total):.6f}\t{ngram.UNK}\n")
        f.writelines(f"{math.log10(p / total):.6f}\t{w}\n" for w, p in merged.items())
        # KenLM reads no model under two orders: one bigram that no search asks for
        f.write(f"\n\\2-grams:\n-99\t{ngram.BOS} {ngram.EOS}\n\n\\end\\\n")
    return {"lm": folder / "words.arpa", "lexicon": write_lexicon(list(merged), tokenizer, folder / "lexicon.txt")}


def _build_chars(forms: list[tuple[str, float]], tokenizer: Tokenizer, folder: Path, recipe: Recipe) -> Path:
    plain = 1.0 - recipe.period - recipe.comma
    endings = [(ngram.END, plain), ("." + ngram.END, recipe.period), ("," + ngram.END, recipe.comma)]
    endings = [(e, s) for e, s in endings if set(e[:-1]) <= set(tokenizer.tokens)]
    counts = ngram.count(
        ((ngram.START + w, [(e, f * s * recipe.corpus) for e, s in endings]) for w, f in forms), recipe.order)
    counts = ngram.as_in_line(counts, tokenizer.tokens[tokenizer.boundary], recipe.in_line)
    vocabulary = [t for i, t in enumerate(tokenizer.tokens) if i != tokenizer.blank]
    probs, backoff = ngram.witten_bell(counts, vocabulary, recipe.min_count)
    return ngram.write_arpa(probs, backoff, folder / "chars.arpa")


def cache_folder() -> Path:
    """Where built LMs are kept: $RNNSTREAM_CACHE, else $XDG_CACHE_HOME/rnnstream, else ~/.cache/rnnstream."""
    root = os.environ.get("RNNSTREAM_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "rnnstream"
    return Path(root) / "lm"


@functools.cache
def _wordfreq_version() -> str:
    """Read once per process: the package metadata is parsed on every call (1.2 ms, paid by every pen stream that
    opened with an LM: 15% of a 200-writer run's CPU went to opening streams)."""
    from importlib.metadata import version

    return version("wordfreq")


def ensure(name: str, tokenizer: Tokenizer, recipe: Recipe = Recipe()) -> dict[str, Path]:
    """LM `name`'s files for this token set, built into the cache folder the first time (a folder per recipe,
    token set and wordfreq version; built beside it and renamed into place, so a reader never sees half of one)."""
    if name not in LM_NAMES:
        raise ValueError(f"unknown language model {name!r} (known: {', '.join(LM_NAMES)})")
    key = json.dumps([name, asdict(recipe), tokenizer.tokens, _wordfreq_version()])
    folder = cache_folder() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not (folder / "done").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
        try:
            build(name, tokenizer, scratch, recipe)
            (scratch / "done").write_text(key + "\n")
            os.replace(scratch, folder)
        except OSError:  # another process put it there first
            if not (folder / "done").exists():
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    made = {"lm": folder / f"{name}.arpa"}
    if (folder / "lexicon.txt").exists():
        made["lexicon"] = folder / "lexicon.txt"
    return made


def write_lexicon(words: list[str], tokenizer: Tokenizer, path: str | Path) -> Path:
    """flashlight's lexicon format: `word<TAB>s p e l l i n g |` (every word ends at a word boundary)."""
    boundary = tokenizer.tokens[tokenizer.boundary]
    lines = [f"{w}\t{' '.join(w)} {boundary}\n" for w in words]
    unknown = {c for w in words for c in w} - set(tokenizer.tokens)
    if unknown:
        raise ValueError(f"lexicon words use characters outside the token set: {sorted(unknown)}")
    Path(path).write_text("".join(lines))
    return Path(path)


# Word lists written as lexicon files, most recent last. Bounded: every client of a server may bring its own
# phrase list (up to 50,000 characters), and a process must not fill its disk with them.
_LEXICON_FILES: OrderedDict[tuple, str] = OrderedDict()
MAX_LEXICON_FILES = 64


def lexicon_file(options, tokenizer: Tokenizer) -> str | None:
    """The lexicon path flashlight reads: `options.lexicon`, else `options.words` written once per process (the
    MAX_LEXICON_FILES latest word lists are kept; a decoder reads its file when it is made)."""
    if options.lexicon or not options.words:
        return options.lexicon
    key = (options.words, tuple(tokenizer.tokens))
    if key in _LEXICON_FILES:
        _LEXICON_FILES.move_to_end(key)
        return _LEXICON_FILES[key]
    folder = Path(tempfile.mkdtemp(prefix="rnnstream-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    _LEXICON_FILES[key] = str(write_lexicon(list(options.words), tokenizer, folder / "lexicon.txt"))
    while len(_LEXICON_FILES) > MAX_LEXICON_FILES:
        shutil.rmtree(Path(_LEXICON_FILES.popitem(last=False)[1]).parent, ignore_errors=True)
    return _LEXICON_FILES[key]


@dataclass(frozen=True)
class SearchParts:
    """What every stream's search shares: the LM, the lexicon's trie and its words (None: lexicon-free)."""

    lm: object
    trie: object | None
    unknown: int  # the unknown word's index (lexicon search)
    vocabulary: frozenset[str] | None


def files(options, tokenizer: Tokenizer) -> tuple[str | None, str | None]:
    """(lexicon, LM file) the options name: a named LM's own files, else the options' lexicon and KenLM file."""
    if options.lm in LM_NAMES:
        if options.lexicon or options.words:
            raise ValueError(f"language model {options.lm!r} brings its own lexicon: not with a lexicon or words")
        made = ensure(options.lm, tokenizer)
        return (str(made["lexicon"]) if "lexicon" in made else None), str(made["lm"])
    return lexicon_file(options, tokenizer), options.lm


@functools.lru_cache(maxsize=8)
def search_parts(lexicon: str | None, lm: str | None, tokens: tuple[str, ...]) -> SearchParts:
    """Loaded once per process (a 50,000-word lexicon's trie and LM take about a second, far too long per stream)."""
    from flashlight.lib.text.decoder import SmearingMode, Trie, ZeroLM
    from flashlight.lib.text.dictionary import Dictionary

    tokenizer = Tokenizer(list(tokens))
    entries = [line.split("\t", 1) if "\t" in line else line.split(maxsplit=1)
               for line in Path(lexicon).read_text().splitlines() if line.strip()] if lexicon else None
    names = Dictionary()  # the LM's units: the lexicon's words, else the tokens themselves
    for word in ([w for w, _ in entries] + [ngram.UNK]) if entries is not None else tokens:
        if not names.contains(word):
            names.add_entry(word)
    if lm:
        from flashlight.lib.text.decoder.kenlm import KenLM

        with quiet_stderr():  # KenLM's advice on binary files and its progress bar, on stderr at every load
            model = KenLM(lm, names)
    else:
        model = ZeroLM()
    if entries is None:
        return SearchParts(model, None, -1, None)
    trie, start = Trie(len(tokens), tokenizer.boundary), model.start(False)
    index = {t: i for i, t in enumerate(tokens)}
    for word, spelling in entries:
        w = names.get_index(word)
        trie.insert([index[t] for t in spelling.split()], w, model.score(start, w)[1])
    trie.smear(SmearingMode.MAX)
    return SearchParts(model, trie, names.get_index(ngram.UNK), frozenset(w for w, _ in entries))


def make_search(options, tokenizer: Tokenizer):
    """(flashlight decoder, its SearchParts) for one stream, from the decoding options."""
    from flashlight.lib.text.decoder import (
        CriterionType,
        LexiconDecoder,
        LexiconDecoderOptions,
        LexiconFreeDecoder,
        LexiconFreeDecoderOptions,
    )

    lexicon, lm = files(options, tokenizer)
    parts = search_parts(lexicon, lm, tuple(tokenizer.tokens))
    tokens = options.beam_tokens or len(tokenizer.tokens)
    if parts.trie is None:
        opts = LexiconFreeDecoderOptions(options.beam, tokens, options.beam_threshold, options.lm_weight, 0.0, False,
                                         CriterionType.CTC)
        return LexiconFreeDecoder(opts, parts.lm, tokenizer.boundary, tokenizer.blank, []), parts
    opts = LexiconDecoderOptions(options.beam, tokens, options.beam_threshold, options.lm_weight, options.word_score,
                                 options.unk_score, 0.0, False, CriterionType.CTC)
    return LexiconDecoder(opts, parts.trie, parts.lm, tokenizer.boundary, tokenizer.blank, parts.unknown, [],
                          False), parts
