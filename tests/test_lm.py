"""Language models in decoding (models.lm, models.ngram): ARPA files written here that flashlight's KenLM reads as
proper distributions, a small English character LM built at test time from wordfreq reading real held-out UNIPEN
ink better than greedy, the lexicon search with a word LM, and the choice per stream (on for words, off for a
charset field)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from conftest import DATA

from models.decoding import DecodeOptions, make_decoder
from models.tokens import PEN_CHARACTERS

pytestmark = pytest.mark.skipif(not (DATA / "unipen").is_dir(), reason="UNIPEN is not in ../shared/data")

SMALL = {"words": 2000, "order": 4}  # a recipe that builds in ~2 s (models.lm.Recipe)


@pytest.fixture(scope="module")
def reader():
    from tools.eval_ink import Reader

    torch.set_num_threads(1)
    return Reader("handwriting")


@pytest.fixture(scope="module")
def small_lms(reader, tmp_path_factory):
    from models.lm import Recipe, build

    folder = tmp_path_factory.mktemp("lm")
    return {name: build(name, reader.tokenizer, folder / name, Recipe(**SMALL)) for name in ("chars", "words")}


@pytest.fixture(scope="module")
def held_out_words(reader):
    """The first 40 aligned words of the held-out writers (tools.unipen's split): their labels and log-probs."""
    from conftest import REPO

    from tools import unipen

    held = set((REPO / "models" / "bundled" / "handwriting.heldout.txt").read_text().split())  # (split_writers: 10 s)
    idx = unipen.indices("7", held, train=False, aligned=True)[:40]
    samples = [unipen.sample("7", int(i)) for i in idx]
    return [label for _, label, _ in samples], reader.log_probs([p for p, _, _ in samples])


def test_witten_bell_arpa_is_a_distribution_after_pruning(tmp_path):
    """Every context's next-token probabilities (and the sentence's end) sum to one as KenLM reads the file, seen and
    unseen contexts alike: the backoff weights are renormalised after pruning."""
    from models import ngram
    from models.lm import search_parts

    words = [("the", 50), ("then", 10), ("than", 8), ("this", 20), ("that", 30), ("hat", 3)]
    counts = ngram.as_in_line(ngram.count([(ngram.START + w, [(ngram.END, c)]) for w, c in words], 4), "|", 0.3)
    probs, backoff = ngram.witten_bell(counts, PEN_CHARACTERS[1:], min_count=5)
    assert "\x02hat" not in probs[3] and "\x02the" in probs[3]  # pruned below 5: "hat" (3), not "the" (50)
    parts = search_parts(None, str(ngram.write_arpa(probs, backoff, tmp_path / "tiny.arpa")), tuple(PEN_CHARACTERS))
    index = {t: i for i, t in enumerate(PEN_CHARACTERS)}
    for context in ["", "t", "th", "tha", "hat", "x", "the|t"]:
        state = parts.lm.start(False)
        for c in context:
            state, _ = parts.lm.score(state, index[c])
        scores = [parts.lm.score(state, i)[1] for i in range(1, len(PEN_CHARACTERS))] + [parts.lm.finish(state)[1]]
        assert sum(10**s for s in scores) == pytest.approx(1.0, abs=1e-5), context


def test_english_char_lm_reads_real_ink_words_better(reader, small_lms, held_out_words):
    """Held-out writers' words whose case greedy gets wrong ("GLass," and "UsA") are read right with a small
    English character LM (2,000 words of wordfreq, 4-grams, built here): the LM, not the beam, mends them."""
    refs, lps = held_out_words
    lm = str(small_lms["chars"]["lm"])
    picked = [refs.index("Glass,"), refs.index("USA")]
    greedy = reader.read([lps[i] for i in picked])
    beam_alone = reader.read([lps[i] for i in picked], DecodeOptions(beam=8, beam_tokens=6))
    with_lm = reader.read([lps[i] for i in picked], DecodeOptions(beam=8, beam_tokens=6, lm=lm, lm_weight=0.5,
                                                                  token_score=1.0))
    assert greedy == beam_alone == ["GLass,", "UsA"]
    assert with_lm == ["Glass,", "USA"]


def test_lexicon_search_with_word_lm_reads_words_of_its_lexicon(reader, small_lms, held_out_words):
    """A line's last word ends without a boundary token: the search's closing boundary step lets the lexicon read it
    (before it, a 50,000-word lexicon read a sixth of the words as nothing). Unknown strings off: every word read is
    a lexicon word."""
    refs, lps = held_out_words
    made = small_lms["words"]
    vocabulary = {line.split("\t")[0] for line in made["lexicon"].read_text().splitlines()}
    options = DecodeOptions(beam=16, beam_tokens=8, lexicon=str(made["lexicon"]), lm=str(made["lm"]), lm_weight=1.0)
    hyps = reader.read(lps, options)
    assert all(word in vocabulary for h in hyps for word in h.split())
    assert sum(bool(h) for h in hyps) >= 36
    assert hyps[refs.index("USA")] == "USA"  # greedy: "UsA"


def test_cached_lm_is_built_once(reader, tmp_path, monkeypatch):
    """models.lm.ensure builds into $RNNSTREAM_CACHE the first time and reads the same files after."""
    from models.lm import Recipe, ensure

    monkeypatch.setenv("RNNSTREAM_CACHE", str(tmp_path))
    recipe = Recipe(words=500, order=3)
    first = ensure("chars", reader.tokenizer, recipe)
    stamp = first["lm"].stat().st_mtime_ns
    assert ensure("chars", reader.tokenizer, recipe) == first and first["lm"].stat().st_mtime_ns == stamp
    assert first["lm"].is_relative_to(tmp_path) and first["lm"].read_text().startswith("\\data\\")


def test_lm_is_on_for_words_and_off_for_a_charset_stream(reader):
    """The handwriting model's streams read words with the English LM; a --charset field reads without it (greedy,
    restricted), and asking for both is an error; a speech model gets no LM."""
    from models.checkpoint import load_checkpoint
    from models.decoding import GreedyDecoder, RestrictedDecoder
    from stream.options import lm_choice, resolve_options

    pen = reader.ckpt
    assert resolve_options(pen).lm == "chars" and resolve_options(pen).beam > 0
    digits = resolve_options(pen, charset="digits")
    assert digits.lm is None and digits.beam == 0 and digits.charset == "digits"
    assert isinstance(make_decoder(reader.tokenizer, reader.step_seconds, digits), RestrictedDecoder)
    field = make_decoder(reader.tokenizer, reader.step_seconds, replace(resolve_options(pen), charset="upper"))
    assert isinstance(field.decoder, GreedyDecoder)  # a charset set later (Recognizer.with_options) drops it too
    assert resolve_options(pen, lm="none").lm is None
    assert resolve_options(pen, lm="words").lm == "words"
    with pytest.raises(ValueError, match="charset"):
        resolve_options(pen, lm="chars", charset="digits")
    with pytest.raises(ValueError, match="not a language model"):
        lm_choice("no-such-lm")
    assert resolve_options(load_checkpoint("digits", "cpu")).lm is None
    assert math.isinf(resolve_options(pen).unk_score)


def test_options_never_drop_or_ignore_an_lm_silently():
    """`--lexicon none` keeps the pen model's default LM (it has no lexicon to drop); `--beam 0` is greedy without
    it; an LM named with `--beam 0` is refused rather than ignored."""
    from models.checkpoint import load_checkpoint
    from stream.options import resolve_options

    pen = load_checkpoint("handwriting")
    assert resolve_options(pen).lm == "chars" and resolve_options(pen, lexicon="none").lm == "chars"
    greedy = resolve_options(pen, beam=0)
    assert greedy.beam == 0 and greedy.lm is None
    with pytest.raises(ValueError, match="beam 0"):
        resolve_options(pen, beam=0, lm="chars")
