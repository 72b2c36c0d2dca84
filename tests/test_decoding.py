"""Decoding options: the checkpoint's recommended lexicon beam, greedy, and their agreement on clear speech."""

from __future__ import annotations

import soundfile as sf
from conftest import DATA

DIGIT_WORDS = {"zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


def _text(recognizer, audio, rate):
    session = recognizer.session(rate)
    events = session.accept(audio) + session.finish()
    return " ".join(e.text for e in events if e.type == "final")


def test_recommended_decoding_is_a_beam_over_the_digit_words(recognizer):
    from models.decoding import lexicon_file

    assert recognizer.options.beam > 0
    lexicon = open(lexicon_file(recognizer.options, recognizer.tokenizer)).read().split("\n")
    assert {line.split("\t")[0] for line in lexicon if line} == DIGIT_WORDS
    audio, rate = sf.read(DATA / "arctic-cathy" / "audio" / "arctic_a0001_1592748574.flac", dtype="float32")
    # English prose through the digits model: whatever it hears, it can only answer in digit words.
    words = _text(recognizer, audio, rate).split()
    assert words and set(words) <= DIGIT_WORDS


def test_a_lexicon_restricts_the_output_to_its_words(recognizer, digits_audio, tmp_path):
    from models.decoding import write_lexicon

    audio, text = digits_audio
    allowed = sorted(set(text.split()))[:2]
    path = write_lexicon(allowed, recognizer.tokenizer, tmp_path / "lexicon.txt")
    words = _text(recognizer.with_options(beam=8, lexicon=str(path), words=None), audio, 16000).split()
    assert words and set(words) <= set(allowed)


def test_recommended_decoding_reads_connected_digits_of_every_speaker(recognizer):
    """A small accuracy check, not the evaluation (tools/evaluate.py): 20 strings, 4 per FSDD speaker."""
    import numpy as np

    from tools.digits_data import connected_utterance, fsdd_clips
    from tools.scoring import score

    pairs = []
    for speaker in ("george", "jackson", "lucas", "nicolas", "yweweler"):
        clips = fsdd_clips(DATA / "fsdd", speakers=[speaker])
        rng = np.random.default_rng(11)
        for _ in range(4):
            audio, text = connected_utterance(clips, rng, 16000, min_digits=3, max_digits=10)
            pairs.append((text, _text(recognizer, audio, 16000)))
    assert score(pairs)["wer"] < 0.15, pairs


def test_greedy_partials_do_not_depend_on_how_steps_arrive(recognizer, digits_audio):
    """The greedy decoder keeps closed words between partials: its partial after any run of steps equals a fresh
    decoder's given the same steps at once (real log-probabilities of the digits model on real speech)."""
    import numpy as np
    from conftest import stepped_log_probs

    from models.decoding import GreedyDecoder

    lp, step_seconds = stepped_log_probs(recognizer, digits_audio[0], 16000), 0.03
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(lp)), size=12, replace=False))
    tokens, best = recognizer.tokenizer, lp.argmax(-1).tolist()
    incremental, done = GreedyDecoder(tokens, step_seconds), 0
    for cut in [*cuts, len(lp)]:
        incremental.accept(lp[done:cut], done)
        whole = GreedyDecoder(tokens, step_seconds)
        whole.accept(lp[:cut], 0)
        partial = incremental.partial()
        assert partial == whole.partial()
        path = [k for i, k in enumerate(best[:cut]) if k != tokens.blank and (i == 0 or k != best[i - 1])]
        assert partial.text.split() == "".join(tokens.tokens[k] for k in path).replace(
            tokens.tokens[tokens.boundary], " ").split()  # the best path, collapsed, split at boundaries
        done = cut
    final = incremental.finish()
    assert len(final.words) >= 3  # words were closed by boundaries along the way
    assert incremental.partial().text == ""
