"""The lead-in rule (models/leadin.py, ModelConfig.idle_lead_in): any length of digital silence before real speech
gives the same words, and the rule keeps streaming exact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import DATA, chunked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.checkpoint import load_checkpoint
from models.features import utterance_frames
from models.frontend import extract
from models.model import AcousticModel
from stream.session import Recognizer
from stream.transcribe import transcribe_array

SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Two real recordings: the example (8 kHz telephone) and a dev phone number read on a laptop at 44.1 kHz.
RECORDINGS = ["examples/phone-number-8k.wav", str(DATA / "phone-numbers-dev" / "audio" / "R_15Rh8IA5GvyzCIF.flac")]


def _ruled(**features) -> Recognizer:
    """The bundled digits model with the lead-in rule on (these feature settings over its own)."""
    ckpt = load_checkpoint("digits")
    model = AcousticModel(dataclasses.replace(ckpt.model.cfg, idle_lead_in=True))
    model.load_state_dict(ckpt.model.state_dict())
    features = dataclasses.replace(ckpt.features, **{"lead_in_dbfs": -90.0, **features})
    return Recognizer(dataclasses.replace(ckpt, model=model.eval(), features=features))


@pytest.fixture(scope="module")
def ruled() -> Recognizer:
    return _ruled(lead_in_gate_dbfs=-45.0)


def _words(recognizer, audio, rate, chunk=0) -> list[tuple[str, float]]:
    events = transcribe_array(recognizer, audio, rate, chunk=chunk)
    return [(w.word, w.start) for e in events if e.type == "final" for w in e.words]


@pytest.mark.parametrize("path", RECORDINGS)
@SETTINGS
@given(lead_s=st.floats(min_value=0.0, max_value=5.0), noise_dbfs=st.sampled_from([None, -50.0, -60.0]),
       chunk=st.sampled_from([0, 1, 160, 4410, 12345]))
def test_a_lead_in_of_silence_or_faint_noise_changes_no_word(ruled, path, lead_s, noise_dbfs, chunk):
    audio, rate = sf.read(path, dtype="float32")
    plain = _words(ruled, audio, rate)
    lead = np.zeros(round(lead_s * rate), np.float32)
    if noise_dbfs is not None:
        lead += np.random.default_rng(0).standard_normal(len(lead)).astype(np.float32) * np.float32(10 ** (noise_dbfs / 20))
    sizes = _single_samples_where_the_rule_decides(ruled, len(lead), audio, rate) if chunk == 1 else chunk
    led = _words(ruled, np.concatenate([lead, audio]), rate, sizes)
    assert [w for w, _ in led] == [w for w, _ in plain] and plain
    # the same times, counted from the stream's start: later by the lead-in, give or take a step
    for (_, got), (_, want) in zip(led, plain):
        assert abs(got - lead_s - want) <= 0.035


def _single_samples_where_the_rule_decides(recognizer, lead: int, audio: np.ndarray, rate: int) -> list[int]:
    """Chunk sizes for `lead` samples of lead-in and then `audio`: one sample a chunk for 50 ms either side of each
    place the rule decides (the stream's start, the recording's first sample over lead_in_dbfs, the end of its first
    25 ms window over the gate), 4410 samples a chunk elsewhere. (One sample a chunk all through took 5.5 minutes of
    one core at 44.1 kHz, ~0.75 ms a call: the property drew it about once a run.)"""
    cfg = recognizer.checkpoint.features
    window, margin = round(0.025 * rate), round(0.05 * rate)
    squares = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    sums = squares[window:] - squares[:-window]  # the 25 ms windows' sums of squares, by their last sample
    places = [0, lead + int(np.flatnonzero(np.abs(audio) > 10 ** (cfg.lead_in_dbfs / 20))[0])]
    places.append(lead + window - 1 + int(np.flatnonzero(sums > 10 ** (cfg.lead_in_gate_dbfs / 10) * window)[0]))
    single = np.zeros(lead + len(audio), bool)
    for p in places:
        single[max(0, p - margin) : p + margin] = True
    sizes, i = [], 0
    while i < len(single):
        if single[i]:
            sizes.append(1)
        else:  # up to the next single sample, at most 4410
            ahead = np.flatnonzero(single[i : i + 4410])
            sizes.append(int(ahead[0]) if len(ahead) else min(4410, len(single) - i))
        i += sizes[-1]
    return sizes


@pytest.mark.parametrize("features", [{}, {"lead_in_gate_dbfs": -45.0}, {"lead_in_gate_dbfs": -45.0, "lead_in_max_wait": 0.5}])
@SETTINGS
@given(lead=st.integers(min_value=0, max_value=3000), noise=st.booleans(), quiet=st.booleans(),
       sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=8))
def test_the_rule_streams_exactly(features, lead, noise, quiet, sizes):
    """Any chunking gives the frames of the whole utterance under the rule (what training computes), and from the
    sound on those are the frames of the recording without its lead-in, starting a model step. A talker under the
    gate (`quiet`: -40 dB) is framed from the first sound once the wait is over."""
    extractor = _extractor(**features)
    audio, rate = sf.read(DATA / "arctic-cathy" / "audio" / "arctic_a0001_1592748574.flac", dtype="float32")
    assert rate == extractor.rate  # 16 kHz: no resampling between the samples and the frames
    audio = audio * np.float32(0.01 if quiet else 1.0)
    pad = np.random.default_rng(1).standard_normal(lead).astype(np.float32) * np.float32(3e-4 if noise else 0.0)
    led = np.concatenate([pad, audio])
    fe = extractor.open(rate)
    cuts = [fe.cut(c) for c in chunked(led, sizes)] + [fe.cut(np.zeros(0, np.float32), last=True)]
    streamed = torch.cat([extract(extractor, [fe], [cut])[0] for cut in cuts])
    whole = utterance_frames(extractor.logmel, torch.from_numpy(np.concatenate([led, fe._tail])), extractor.stack)
    whole = whole[: len(whole) // extractor.stack * extractor.stack]
    torch.testing.assert_close(streamed, whole, atol=1e-4, rtol=1e-5)
    first_sound = int((streamed == extractor.logmel.silence()).all(1).long().cumprod(0).sum())
    assert first_sound % extractor.stack == 0
    if not noise and not quiet:
        alone = utterance_frames(extractor.logmel, torch.from_numpy(audio), extractor.stack)
        alone_sound = int((alone == extractor.logmel.silence()).all(1).long().cumprod(0).sum())
        torch.testing.assert_close(streamed[first_sound : first_sound + 300], alone[alone_sound : alone_sound + 300])


def _extractor(**features):
    ckpt = load_checkpoint("digits")
    return dataclasses.replace(ckpt, features=dataclasses.replace(ckpt.features, lead_in_dbfs=-90.0, **features)).extractor()


def test_training_reads_a_lead_in_as_streaming_does():
    """Training's one plain LSTM call over padded items (gradients on, no lengths) gives each item the outputs its
    own stream gets, lead-in steps (certain blanks) included."""
    ckpt = load_checkpoint("digits")
    model = ckpt.model
    assert model.cfg.idle_lead_in
    silence = float(model.cfg.feature_floor)
    items = [torch.randn(90, 40) - 4.0, torch.randn(60, 40) - 4.0]
    items[0][:30] = silence  # ten steps of lead-in
    items[1][:45] = silence  # fifteen
    batch = torch.nn.utils.rnn.pad_sequence(items, batch_first=True)
    with torch.enable_grad():
        trained, _ = model(batch)
    for i, item in enumerate(items):
        with torch.no_grad():
            streamed = model(item[None])[0][0]  # the whole item as one stream
            first, state = model(item[None, :30])  # and in two calls, the state carried
            second, _ = model(item[None, 30:], state)
        steps = len(item) // 3
        torch.testing.assert_close(trained[i, :steps].detach(), streamed, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.cat([first[0], second[0]]), streamed, atol=1e-5, rtol=1e-5)
        assert (streamed[: {0: 10, 1: 15}[i], 0] == 0.0).all()  # the lead-in's steps: certain blanks
