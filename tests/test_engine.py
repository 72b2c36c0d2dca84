"""The engine's API (open with a stream's options, push, finish, poll) on each runtime gives every stream what a
Session gives it alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from conftest import FSDD

from stream.options import phrase_options
from stream.pipeline import PipelineSpec
from stream.runtimes import create_engine


def _audio(names: list[str]) -> np.ndarray:
    parts = []
    for name in names:
        audio, rate = sf.read(FSDD / name, dtype="float32")
        parts += [audio, np.zeros(rate // 2, np.float32)]
    return np.concatenate(parts)


def _words(events) -> list[tuple[str, float, float]]:
    return [(w.word, w.start, w.end) for e in events if e.type == "final" for w in e.words]


@pytest.mark.parametrize("runtime", ["thread", "process"])
def test_streams_with_their_own_options_read_as_alone(recognizer, runtime):
    checkpoint = recognizer.checkpoint
    options = {
        "default": None,
        "greedy": replace(recognizer.options, beam=0, words=None),
        "phrases": phrase_options(recognizer.options, recognizer.tokenizer, ("one two", "three Oh")),
    }
    audio = _audio(["1_jackson_3.wav", "2_george_7.wav", "7_lucas_1.wav", "3_nicolas_9.wav"])  # 8 kHz
    engine = create_engine(checkpoint, runtime, PipelineSpec(options=recognizer.options))
    try:
        streams = {engine.open(8000, options=o): name for name, o in options.items()}
        got = {name: [] for name in options}
        for start in range(0, len(audio), 1000):  # every stream's chunk, then one poll: a tick for them all
            for key in streams:
                engine.push(key, audio[start : start + 1000])
            for key, result in engine.poll().items():
                got[streams[key]] += result.events
        for key in streams:
            engine.finish(key)
        over: set = set()
        for _ in range(2000):
            for key, result in engine.poll(timeout=0.05).items():
                assert not result.status.error, result.status.error
                got[streams[key]] += result.events
                over |= {key} if result.status.over else set()
            if len(over) == len(streams):
                break
        assert len(over) == len(streams)
        assert engine.stats()["model"]["lstm_calls"] < len(audio) // 1000 + 20  # streams stepped together
    finally:
        engine.close()
    for name, o in options.items():
        session = recognizer.session(8000, options=o)
        alone = session.accept(audio) + session.finish()
        assert _words(got[name]) == _words(alone), name
        assert _words(alone), name
    assert {w for w, _, _ in _words(got["phrases"])} <= {"one", "two", "three", "oh"}
    assert _words(got["phrases"]) != _words(got["default"])


def test_a_phrase_list_word_the_model_cannot_spell_is_refused(recognizer):
    with pytest.raises(ValueError, match="'4g' cannot be spelled"):
        phrase_options(recognizer.options, recognizer.tokenizer, ("call 4g",))
    assert phrase_options(recognizer.options, recognizer.tokenizer, ("[unk]",)) == recognizer.options


def test_a_client_config_is_refused_at_once_when_its_choices_cannot_be_read(recognizer):
    """A network client's lm must be a model's name (never a path on the server), its charset one the model writes."""
    from stream.options import client_options

    checkpoint, base = recognizer.checkpoint, recognizer.options
    assert client_options(checkpoint, base) is None  # nothing of its own: the server's decoding
    for choice, words in [({"lm": "/etc/passwd"}, "a client may choose"), ({"charset": "klingon"}, "one of"),
                          ({"charset": "digits"}, "writes none of its characters")]:
        with pytest.raises(ValueError, match=words):
            client_options(checkpoint, base, **choice)
    assert client_options(checkpoint, base, charset="lower").charset == "lower"


def test_an_unknown_runtime_is_refused(recognizer):
    with pytest.raises(ValueError, match="unknown runtime 'gpu'"):
        create_engine(recognizer.checkpoint, "gpu")


def test_every_kind_of_stream_error_has_its_mapping_at_each_edge():
    """One typed error travels to the edges; the server maps each kind to a close code and a session to an
    exception, once: a new kind without its mapping would reach a client as a KeyError."""
    from stream.errors import Kind
    from stream.serve.hub import CLOSES
    from stream.shared import RAISED

    assert set(CLOSES) == set(Kind) == set(RAISED)


def test_a_caller_that_paces_its_ticks_sends_them_and_polls_what_they_brought(recognizer):
    """`send` puts a tick out, `poll(send=False)` only delivers (the server's hub paces its ticks so); a poll reports
    a stream once it has news, and every open stream once the engine closes, each over with its reason."""
    from stream.errors import Kind

    audio = _audio(["1_jackson_3.wav", "2_george_7.wav"])
    engine = create_engine(recognizer.checkpoint, "thread", PipelineSpec(options=recognizer.options))
    talking, quiet = engine.open(8000), engine.open(8000)
    engine.push(talking, audio)
    engine.push(quiet, np.zeros(len(audio), np.float32))
    assert engine.poll(send=False) == {} and engine.delivered == 0  # nothing was sent
    assert engine.send() and engine.delivered == 0
    news = engine.poll(send=False)
    assert engine.delivered == 1
    assert list(news) == [talking] and news[talking].events and not news[talking].status.over
    assert engine.poll(send=False) == {}  # told once
    engine.close()
    over = engine.poll()
    assert set(over) == {talking, quiet}
    assert all(r.status.over and r.status.error.kind is Kind.CLOSED for r in over.values())
    assert engine.poll() == {}
