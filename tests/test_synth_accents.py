"""The accented synthetic digits (tools/synth_digits.py --accents): each utterance is an Indian language's voice
reading English digit words spelt in its script, and its label is the English words it reads."""

import re
import shutil
import subprocess

import pytest

from tools.synth_digits import ACCENT_SPELLINGS, DIGIT_WORDS, SynthOptions, make_job


def test_an_accented_job_speaks_its_label_in_the_voices_script():
    opt = SynthOptions(accents=True)
    langs = set()
    for i in range(200):
        job = make_job(i, 0, opt)
        lang = job.voice.split("+")[0]
        langs.add(lang)
        assert job.engine == "espeak-ng" and lang in ACCENT_SPELLINGS
        assert not re.search(r"[A-Za-z]", job.spoken), job.spoken  # a Latin word would switch espeak to English
        back = dict(zip(ACCENT_SPELLINGS[lang].split(), [*DIGIT_WORDS, "oh"]))
        assert [back[w] for w in job.spoken.replace(",", " ").split()] == job.text.split()
    assert langs == set(ACCENT_SPELLINGS)


def test_the_plain_corpus_keeps_its_engines_and_english_words():
    """Accents are a corpus of their own: the plain one still draws all three engines, reading English words."""
    jobs = [make_job(i, 0, SynthOptions()) for i in range(50)]
    assert {j.engine for j in jobs} == {"espeak-ng", "flite", "festival"}
    assert all(re.fullmatch(r"[a-z ,]+", j.spoken) for j in jobs)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is a --dev dependency (training data)")
@pytest.mark.parametrize("lang", sorted(ACCENT_SPELLINGS))
def test_espeak_reads_every_spelling_in_its_own_language(lang):
    """espeak-ng switches to its English voice for words it takes as English: "(en)" in its phonemes."""
    spelt = ACCENT_SPELLINGS[lang]
    assert len(spelt.split()) == len(DIGIT_WORDS) + 1
    phonemes = subprocess.run(["espeak-ng", "-v", lang, "-q", "-x", spelt], capture_output=True, text=True, check=True)
    assert "(en)" not in phonemes.stdout and len(phonemes.stdout.split()) == len(DIGIT_WORDS) + 1, phonemes.stdout
