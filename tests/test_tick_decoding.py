"""A tick's decoding of many streams read from arrays gives each stream exactly what its BackEnd gives it alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FSDD, stepped_log_probs

from models.decoding import DecodeOptions
from stream.backend import BackEnd, EndpointConfig
from stream.tick_decoding import accept_many


@pytest.fixture(scope="module")
def speech(recognizer, digits_audio) -> list[torch.Tensor]:
    """Five streams' log-probabilities: a long connected-digit recording and four FSDD clips, one between silences."""
    streams = [stepped_log_probs(recognizer, digits_audio[0], 16000)]
    for name in ["3_jackson_0.wav", "5_nicolas_3.wav", "9_george_40.wav", "0_yweweler_12.wav"]:
        audio, rate = sf.read(FSDD / name, dtype="float32")
        gap = np.zeros(int(1.5 * rate), np.float32)
        streams.append(stepped_log_probs(recognizer, np.concatenate([gap, audio, gap, audio]), rate))
    return streams


OPTIONS = {
    "greedy": DecodeOptions(),
    "beam": None,  # the model's recommended beam over the digit words
    "charset": DecodeOptions(charset="lower"),  # a view of each step that restricts the characters
}


@pytest.mark.parametrize("kind", list(OPTIONS))
@pytest.mark.parametrize("endpoint", [EndpointConfig(), EndpointConfig(silence_after_speech=0.3, max_utterance=2.0),
                                      EndpointConfig(enabled=False)], ids=["default", "short", "off"])
def test_many_streams_read_from_arrays_equal_each_alone(recognizer, speech, kind, endpoint):
    options = OPTIONS[kind] or recognizer.options

    def back() -> BackEnd:
        return BackEnd(recognizer.tokenizer, recognizer.step_seconds, options, endpoint, 10)

    rng = np.random.default_rng(len(kind) + int(endpoint.enabled))
    cuts = [np.sort(rng.choice(np.arange(1, len(lp)), size=len(lp) // 4, replace=False)) for lp in speech]
    parts = [np.split(lp.numpy(), c) for lp, c in zip(speech, cuts)]  # chunks of 1 to ~10 steps, some empty below
    together, alone = [back() for _ in speech], [back() for _ in speech]
    got, want = [[] for _ in speech], [[] for _ in speech]
    for tick in range(max(len(p) for p in parts)):
        members = [i for i in range(len(speech)) if tick < len(parts[i]) and rng.random() < 0.9]
        chunks = [parts[i][tick] if rng.random() < 0.95 else parts[i][tick][:0] for i in members]
        data = torch.from_numpy(np.concatenate(chunks)) if chunks else torch.zeros(0, speech[0].shape[1])
        spans = list(zip(np.cumsum([0] + [len(c) for c in chunks[:-1]]).tolist(), [len(c) for c in chunks]))
        for i, events in zip(members, accept_many([together[i] for i in members], data, spans)):
            assert not isinstance(events, Exception), events
            got[i] += events
        for i, chunk in zip(members, chunks):
            want[i] += alone[i].accept(torch.from_numpy(chunk.copy()))
    for i in range(len(speech)):
        got[i] += together[i].finish()
        want[i] += alone[i].finish()
        assert got[i] == want[i], i
        assert any(e.type == "final" for e in want[i])
    if endpoint.enabled:
        assert sum(e.type == "final" for e in want[1]) >= 2  # the endpoint rules fired inside the array path's ticks


def test_a_decoder_shard_reads_its_own_rows(recognizer, speech):
    """Streams whose rows are not contiguous (a shard's share of a tick) read as they would alone."""
    lp = [s[:40] for s in speech]
    data = torch.cat(lp)
    starts = np.cumsum([0] + [len(x) for x in lp[:-1]]).tolist()
    mine = [3, 0, 4, 1]  # out of order, with rows between them (and enough streams for the array path)
    backs = [recognizer.backend() for _ in mine]
    got = accept_many(backs, data, [(starts[i], len(lp[i])) for i in mine])
    for i, events in zip(mine, got):
        assert events == recognizer.backend().accept(lp[i].clone())


def test_beam_partials_keep_closed_words_only_while_the_best_path_keeps_them(recognizer, speech):
    """The beam decoder's partial reuses the words a boundary closed while the best path still begins the same way,
    and the whole reading while the path only grew by blanks: after every chunk it equals the partial read from the
    whole path anew (and the finals too)."""
    from models.decoding import BeamDecoder

    rng = np.random.default_rng(3)
    reused, unchanged = 0, 0
    for lp in speech:
        decoder, done = BeamDecoder(recognizer.tokenizer, recognizer.step_seconds, recognizer.options), 0
        for cut in [*np.sort(rng.choice(np.arange(1, len(lp)), size=len(lp) // 3, replace=False)), len(lp)]:
            read = decoder._read
            decoder.accept(lp[done:cut].clone(), done)
            done = cut
            partial = decoder.partial()
            reused += decoder._closed is not None and decoder._closed[0] < cut - 1
            unchanged += read is not None and decoder._read[1] is read[1]
            decoder._closed, decoder._read, decoder._writing = None, None, ((), [])
            assert partial == decoder.partial()
        assert decoder.finish().text
    assert reused > 10 and unchanged > 10  # (the path kept its closed words in most partials, and often all)


def test_a_best_path_that_changed_before_its_closed_words_is_read_anew(recognizer, speech):
    """Where the beam's best path no longer begins as it did (a beam can switch to another reading of earlier steps),
    the kept words are not used: the partial is the changed path's own."""
    from types import SimpleNamespace

    from models.decoding import BeamDecoder

    decoder = BeamDecoder(recognizer.tokenizer, recognizer.step_seconds, recognizer.options)
    decoder.accept(speech[0][:200].clone(), 0)
    before = decoder.partial()
    assert decoder._closed is not None and len(before.words) >= 2
    path = list(decoder._decoder.get_best_hypothesis().tokens)
    first = next(i for i, k in enumerate(path[1:], 1) if k not in (recognizer.tokenizer.blank, -1))
    path[first : first + 3] = [recognizer.tokenizer.blank] * 3  # the first word's first letter is gone
    changed = decoder._hypothesis(SimpleNamespace(tokens=path))
    decoder._closed, decoder._read = None, None
    assert changed == decoder._hypothesis(SimpleNamespace(tokens=path)) and changed != before


def test_streams_of_one_tick_decode_with_their_own_options(recognizer, digits_audio):
    """A stream's opening chunk may carry its own decoding (a Vosk client's phrase list, a pen field's charset): in
    one pipeline, each stream reads as a recognizer with those options reads it alone."""
    from stream.messages import Chunk
    from stream.pipeline import PipelineSpec

    audio = digits_audio[0]
    own = {"default": None, "greedy": replace(recognizer.options, beam=0, words=None),
           "few words": replace(recognizer.options, words=("one", "two", "oh"))}
    pipeline = recognizer.pipeline(PipelineSpec(slots=4))
    got = {k: [] for k in own}
    for i, start in enumerate(range(0, len(audio) + 1, 2560)):
        last = start + 2560 > len(audio)
        tick = {k: Chunk(audio[start : start + 2560], last=last, rate=16000 if i == 0 else None, options=options)
                for k, options in own.items()}
        for k, update in pipeline.submit("test", i, tick).result().items():
            assert not update.error, update.error
            got[k] += [e for e in update.events if e.type == "final"]
    for k, options in own.items():
        alone = recognizer.with_options(**vars(options)) if options else recognizer
        session = alone.session(16000)
        want = [e for e in session.accept(audio) + session.finish() if e.type == "final"]
        assert _words(got[k]) == _words(want), k  # (one stream or three in the LSTM call: sums in another order)
        assert np.allclose(_confidences(got[k]), _confidences(want), atol=1e-3), k
    assert {w.word for e in got["few words"] for w in e.words} <= {"one", "two", "oh"}
    assert got["few words"] != got["default"]


def _words(events) -> list[tuple[str, float, float]]:
    return [(w.word, w.start, w.end) for e in events for w in e.words]


def _confidences(events) -> list[float]:
    return [w.confidence for e in events for w in e.words]
