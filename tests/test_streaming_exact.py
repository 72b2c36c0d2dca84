"""Exact streaming: any chunking of the same audio gives the same features, model outputs and events."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import DATA, FSDD, chunked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.frontend import extract

CHUNKINGS = st.lists(st.integers(min_value=1, max_value=6000), min_size=1, max_size=12)
# The events' chunkings average 10 ms or more: under a model step (30 ms) a call gives the decoder one step or none
# whatever its size, and one sample a call (hypothesis's first example, [1]: 56,000 calls, ~20 s) is
# test_tiny_chunks_and_samples_one_by_one's.
EVENT_CHUNKINGS = CHUNKINGS.filter(lambda sizes: sum(sizes) >= 160 * len(sizes))
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _arctic() -> tuple[np.ndarray, int]:
    audio, rate = sf.read(DATA / "arctic-cathy" / "audio" / "arctic_a0001_1592748574.flac", dtype="float32")
    return audio, rate


def _frontend_frames(recognizer, audio, rate, sizes):
    extractor = recognizer.extractor
    fe = extractor.open(rate)
    cuts = [fe.cut(c) for c in chunked(audio, sizes)] + [fe.cut(np.zeros(0, np.float32), last=True)]
    return torch.cat([extract(extractor, [fe], [cut])[0] for cut in cuts])


@SETTINGS
@given(sizes=CHUNKINGS)
def test_features_match_whole_file_for_any_chunking(recognizer, sizes):
    # 8 kHz FSDD audio: exercises the resampler's carried state as well as the framing.
    audio, rate = sf.read(FSDD / "7_jackson_12.wav", dtype="int16")
    whole = _frontend_frames(recognizer, audio, rate, [len(audio)])
    streamed = _frontend_frames(recognizer, audio, rate, sizes)
    assert whole.shape == streamed.shape and len(whole) > 0
    torch.testing.assert_close(streamed, whole, atol=1e-4, rtol=1e-5)


@SETTINGS
@given(sizes=st.lists(st.integers(min_value=160, max_value=6000), min_size=1, max_size=12))
def test_streams_framed_together_get_the_frames_each_gets_alone(recognizer, sizes):
    """A tick frames its steady streams as one array (models.framing) and the others one by one: float32 and int16
    16 kHz, a silent lead-in, 8 kHz (resampled), a [n, 1] layout, and a stream with NaNs from its middle on (it
    alone fails). Each stream's frames are those it gets alone (to an FFT's rounding: which rows share a call moves
    the last bit, as it did before streams were framed together)."""
    from stream.messages import Chunk
    from stream.stages import FeatureStage

    arctic, rate = _arctic()
    fsdd, fsdd_rate = sf.read(FSDD / "7_jackson_12.wav", dtype="float32")
    bad = arctic.copy()
    bad[len(bad) // 2 :: 997] = np.nan
    streams = {"float": (arctic, rate), "int16": ((arctic * 32767).astype(np.int16), rate),
               "lead-in": (np.concatenate([np.zeros(rate, np.float32), arctic]), rate), "8k": (fsdd, fsdd_rate),
               "column": (arctic[:, None], rate), "nan": (bad, rate)}
    extractor = recognizer.extractor
    stage = FeatureStage(extractor)
    chunks = {k: list(chunked(x, sizes)) for k, (x, _) in streams.items()}
    together = {k: [] for k in streams}
    for tick in range(max(map(len, chunks.values())) + 1):
        tick_chunks = {}
        for k, parts in chunks.items():
            if tick <= len(parts) and k not in stage.gone and (tick == 0 or k in stage.fronts):
                data = parts[tick] if tick < len(parts) else parts[0][:0]
                tick_chunks[k] = Chunk(data, last=tick == len(parts), rate=streams[k][1] if tick == 0 else None)
        frames = stage.process(tick_chunks)
        for k, f in frames.features.items():
            together[k].append(f)
        for k in frames.errors:
            stage.gone[k] = "failed"
    assert set(stage.gone) == {"nan"}
    for k, (x, r) in streams.items():
        if k != "nan":
            alone = _frontend_frames(recognizer, x, r, sizes)
            torch.testing.assert_close(torch.cat(together[k]), alone, atol=1e-4, rtol=1e-5, msg=k)


def test_whole_steps_of_many_streams_are_each_streams_own(recognizer, digits_audio):
    """A tick's streams cut into whole model steps together give each stream the rows it gets alone: its carried
    frames and its new ones, every stack and carry (real log-mel frames of the digits model)."""
    from models.frontend import whole_steps, whole_steps_many

    rows = recognizer.extractor.open(16000).cut(digits_audio[0][:16000])
    frames = recognizer.extractor.transform([rows])[0]
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, stack = int(rng.integers(1, 8)), int(rng.integers(1, 5))
        pendings = [frames[: int(rng.integers(0, stack))] for _ in range(n)]
        sizes = [int(rng.integers(0, 9)) for _ in range(n)]
        new = frames[int(rng.integers(0, 10)) :][: sum(sizes)]
        ready, kept = whole_steps_many(pendings, new, sizes, stack)
        for i, (pending, own) in enumerate(zip(pendings, new.split(sizes))):
            alone = whole_steps(pending, own, stack)
            assert torch.equal(ready[i], alone[0]) and torch.equal(kept[i], alone[1])


def test_a_tick_whose_only_steady_stream_fails_to_resample_goes_on(recognizer):
    """Resampling is a steady stream's own step (its soxr state): when it raises, that stream alone fails, even when
    it was the tick's only steady stream and another stream sends its last chunk beside it."""
    from stream.messages import Chunk
    from stream.stages import FeatureStage

    arctic, rate = _arctic()
    fsdd, fsdd_rate = sf.read(FSDD / "7_jackson_12.wav", dtype="float32")
    stage = FeatureStage(recognizer.extractor)
    opened = stage.process({"8k": Chunk(fsdd[:4000], rate=fsdd_rate), "ends": Chunk(arctic[:8000], rate=rate)})
    assert not opened.errors and stage.fronts["8k"].converter.resampling

    def broken(samples):
        raise RuntimeError("soxr: resampler state lost")

    stage.fronts["8k"].converter.resample = broken
    frames = stage.process({"8k": Chunk(fsdd[4000:8000]), "ends": Chunk(arctic[8000:], last=True)})
    assert set(frames.errors) == {"8k"} and "soxr" in str(frames.errors["8k"])
    whole = torch.cat([opened.features["ends"], frames.features["ends"]])
    torch.testing.assert_close(whole, _frontend_frames(recognizer, arctic, rate, [8000]), atol=1e-4, rtol=1e-5)


def _run(recognizer, audio, rate, sizes):
    """A session's events, and every log-probability its model call gave it."""
    session = recognizer.session(rate)
    events, log_probs = [], []
    batcher = session.pipeline.model.batcher
    step = batcher.step

    def recording_step(inputs):
        out = step(inputs)
        log_probs.extend(out.values())
        return out

    batcher.step = recording_step
    for chunk in chunked(audio, sizes):
        events += session.accept(chunk)
    events += session.finish()
    return events, torch.cat(log_probs) if log_probs else torch.zeros(0)


def _finals(events):
    return [(e.text, [(w.word, w.start, w.end) for w in e.words]) for e in events if e.type == "final"]


def _assert_same(a, b):
    (events_a, lp_a), (events_b, lp_b) = a, b
    assert lp_a.shape == lp_b.shape
    torch.testing.assert_close(lp_a, lp_b, atol=1e-4, rtol=1e-4)
    assert _finals(events_a) == _finals(events_b)
    conf_a = [w.confidence for e in events_a if e.type == "final" for w in e.words]
    conf_b = [w.confidence for e in events_b if e.type == "final" for w in e.words]
    np.testing.assert_allclose(conf_a, conf_b, atol=1e-4)


@SETTINGS
@given(sizes=EVENT_CHUNKINGS)
def test_greedy_events_match_whole_file_for_any_chunking(recognizer, digits_audio, sizes):
    greedy = recognizer.with_options(beam=0)
    audio, _ = digits_audio
    whole = _run(greedy, audio, 16000, [len(audio)])
    assert _finals(whole[0]), "the model should hear the digits"
    _assert_same(_run(greedy, audio, 16000, sizes), whole)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=EVENT_CHUNKINGS, lexicon=st.booleans())
def test_beam_events_match_whole_file_for_any_chunking(recognizer, digits_audio, sizes, lexicon):
    # The bundled model recommends a beam restricted to its digit words; without it, lexicon-free beam.
    beam = recognizer.with_options(beam=8) if lexicon else recognizer.with_options(beam=8, words=None)
    audio, _ = digits_audio
    whole = _run(beam, audio, 16000, [len(audio)])
    assert _finals(whole[0])
    _assert_same(_run(beam, audio, 16000, sizes), whole)


def test_speech_beyond_the_model_vocabulary_streams_exactly(recognizer):
    # Read English through the digits model: not its task, but chunking must still change nothing.
    audio, rate = _arctic()
    whole = _run(recognizer, audio, rate, [len(audio)])
    _assert_same(_run(recognizer, audio, rate, [1601, 37, 4000]), whole)


@pytest.mark.parametrize("chunk", [pytest.param(1, marks=pytest.mark.slow), 160, 2560])
def test_tiny_chunks_and_samples_one_by_one(recognizer, digits_audio, chunk):
    audio, _ = digits_audio
    audio = audio[: 16000 * 2]
    _assert_same(_run(recognizer, audio, 16000, [chunk]), _run(recognizer, audio, 16000, [len(audio)]))


def test_tail_padding_reads_words_cut_tight_at_the_end(recognizer, monkeypatch):
    # A unidirectional model emits a word after hearing it: FSDD clips end right after the word, and without the
    # front end's tail padding many read as nothing.
    import models.features
    from tools.digits_data import DIGIT_WORDS, fsdd_clips

    clips = fsdd_clips(FSDD.parent)
    clips = [clips[i] for i in np.random.default_rng(0).choice(len(clips), 200, replace=False)]

    def right() -> int:
        n = 0
        for clip in clips:
            audio, rate = sf.read(clip.path, dtype="float32")
            session = recognizer.session(rate)
            text = " ".join(e.text for e in session.accept(audio) + session.finish() if e.type == "final")
            n += text.replace("oh", "zero") == DIGIT_WORDS[clip.digit]
        return n

    padded = right()
    monkeypatch.setattr(models.features, "TAIL_SECONDS", 0.0)
    assert padded >= right() + 8


def test_a_silent_lead_in_reads_like_none(recognizer, monkeypatch):
    # Edited files and some lines open with digital zeros. The running mean's floor keeps them out of the mean, so
    # the first digits read as they do without the lead-in; without the floor the mean starts from the silence.
    import dataclasses

    from tools.digits_data import connected_utterance, fsdd_clips
    from tools.scoring import score

    clips = fsdd_clips(FSDD.parent)
    strings = [connected_utterance(clips, np.random.default_rng([3, i]), 16000, 3, 8) for i in range(40)]

    def wer(lead_s: float) -> float:
        pairs = []
        for audio, text in strings:
            session = recognizer.session(16000)
            events = session.accept(np.concatenate([np.zeros(int(lead_s * 16000), np.float32), audio]))
            pairs.append((text, " ".join(e.text for e in events + session.finish() if e.type == "final")))
        return score(pairs)["wer"]

    none, lead = wer(0.0), wer(1.0)  # measured 2.34% and 3.74%
    assert lead <= none + 0.03, (lead, none)
    monkeypatch.setattr(recognizer.model, "cfg", dataclasses.replace(recognizer.model.cfg, cmn_floor_db=0.0))
    assert wer(1.0) >= lead + 0.03  # measured 8.88%
