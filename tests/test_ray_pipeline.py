"""The Ray pipeline gives each stream exactly the in-process events, isolates bad input, frees idle
slots and bounds what is in flight. Real FSDD audio, the bundled model, a local Ray (token auth on)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import soundfile as sf
from conftest import FSDD, same_events

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray]

from models.errors import InputError  # noqa: E402
from stream.distributed.session import RayRecognizer  # noqa: E402
from stream.ingest import Ingest, StreamExpired  # noqa: E402


@pytest.fixture(scope="module")
def ray_rec(ray_digits):
    return ray_digits  # the session's (conftest.py): one Ray and pipeline for this module and test_failover's


def _speaker(name: str, takes: range, digits: str = "0123456789", pause: float = 0.3) -> np.ndarray:
    """One speaker's clips joined with pauses: a few seconds of real 8 kHz speech."""
    parts = []
    for d, t in zip(digits, takes):
        audio, _ = sf.read(FSDD / f"{d}_{name}_{t}.wav", dtype="float32")
        parts += [audio, np.zeros(int(8000 * pause), np.float32)]
    return np.concatenate(parts)


def _pieces(audio: np.ndarray, size: int) -> list[np.ndarray]:
    """Equal pushes, padded with silence to a whole number: every chunk the ingest sends is one push."""
    pad = (-len(audio)) % size
    audio = np.concatenate([audio, np.zeros((pad, *audio.shape[1:]), audio.dtype)])
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def _in_process(recognizer, rate, pieces, channels=None):
    session = recognizer.session(rate, channels)
    events = [e for p in pieces for e in session.accept(p)]
    return events + session.finish()


def _feed(ray_rec, rate, pieces, channels=None, start: threading.Barrier | None = None):
    session = ray_rec.session(rate, channels)
    if start is not None:
        start.wait()
    events = [e for p in pieces for e in session.accept(p)]
    return events + session.finish()


def test_concurrent_streams_get_exactly_the_in_process_events(ray_rec, recognizer, digits_audio):
    """Six streams at once (8, 16 and 44.1 kHz, mono, stereo and int16, chunks of 100-400 ms) share
    ticks and LSTM calls, and each gets the events a Session gives on the same audio and chunks."""
    import soxr

    stereo = soxr.resample(_speaker("jackson", range(3, 13)), 8000, 44100)
    stereo = np.stack([stereo, 0.5 * stereo], axis=1)
    streams = {
        "lucas": (8000, _pieces(_speaker("lucas", range(10)), 1280), None),
        "george": (8000, _pieces((_speaker("george", range(20, 30), "9876543210") * 32767).astype(np.int16), 800), None),
        "nicolas": (8000, _pieces(_speaker("nicolas", range(5, 15), "5550123"), 3200), None),
        "yweweler": (8000, _pieces(_speaker("yweweler", range(40, 50), "31415"), 1000), None),
        "digits16k": (16000, _pieces(digits_audio[0], 2560), None),
        "stereo44k": (44100, _pieces(stereo.astype(np.float32), 7056), 2),
    }
    before = ray_rec.ingest.stats.chunks, ray_rec.ingest.stats.ticks
    results: dict = {}
    start = threading.Barrier(len(streams))

    def run(name):
        rate, pieces, channels = streams[name]
        results[name] = _feed(ray_rec, rate, pieces, channels, start)

    threads = [threading.Thread(target=run, args=(name,)) for name in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(results) == set(streams)
    for name, (rate, pieces, channels) in streams.items():
        want = _in_process(recognizer, rate, pieces, channels)
        assert [e for e in want if e.type == "final"], name
        same_events(results[name], want)
    chunks, ticks = ray_rec.ingest.stats.chunks - before[0], ray_rec.ingest.stats.ticks - before[1]
    assert chunks == sum(len(p) + 1 for _, p, _ in streams.values())  # every push one chunk, plus finish
    assert ticks < chunks  # streams shared ticks (one Ray message per stage for several streams)
    assert ray_rec.stats()["model"]["active"] == 0  # every slot given back


def test_small_pushes_are_coalesced_into_100ms_chunks(ray_rec, recognizer):
    audio = _speaker("yweweler", range(1, 11))
    before = ray_rec.ingest.stats.chunks
    got = _feed(ray_rec, 8000, [audio[i : i + 160] for i in range(0, len(audio), 160)])  # 20 ms pushes
    sent = ray_rec.ingest.stats.chunks - before
    assert sent <= len(audio) / 800 + 1  # >= 100 ms of audio per chunk sent
    finals = lambda evs: [(e.text, e.start, e.end) for e in evs if e.type == "final"]
    assert finals(got) == finals(_in_process(recognizer, 8000, [audio]))


def test_bad_input_fails_only_its_own_stream(ray_rec, recognizer):
    good = _pieces(_speaker("lucas", range(20, 30)), 1600)
    nan = _speaker("george", range(1, 11))
    nan[len(nan) // 2] = np.nan
    errors: dict = {}
    results: dict = {}
    start = threading.Barrier(3)

    def run(name, rate, pieces, channels=None):
        try:
            results[name] = _feed(ray_rec, rate, pieces, channels, start)
        except InputError as e:
            errors[name] = str(e)

    bad_channels = [np.zeros((1600, 3), np.float32)] * 4  # opened as stereo, sends three channels
    threads = [
        threading.Thread(target=run, args=("good", 8000, good)),
        threading.Thread(target=run, args=("nan", 8000, _pieces(nan, 1600))),
        threading.Thread(target=run, args=("channels", 8000, bad_channels, 2)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert "NaN" in errors["nan"] and "channels" in errors["channels"]
    same_events(results["good"], _in_process(recognizer, 8000, good))
    # and the pipeline goes on serving new streams
    again = _pieces(_speaker("jackson", range(30, 40)), 1600)
    same_events(_feed(ray_rec, 8000, again), _in_process(recognizer, 8000, again))


def test_idle_stream_is_expired_its_slot_freed_and_the_client_told(ray_rec, recognizer):
    # 1.5 s: long enough that a busy 2-core machine's pauses between ticks do not expire the fresh stream. (No
    # standby actors: they take over only from a lost worker, test_failover's subject, and cost ~10 s to start.)
    with_timeout = RayRecognizer.connect("digits", device="cpu", idle_timeout=1.5, standby=False)
    try:
        session = with_timeout.session(8000)
        session.accept(_speaker("nicolas", range(41, 44), "123"))
        assert with_timeout.stats()["model"]["active"] == 1
        quiet = time.monotonic()  # the client goes quiet
        while with_timeout.stats()["model"]["active"] and time.monotonic() - quiet < 30:
            time.sleep(0.1)
        stats = with_timeout.stats()["model"]
        assert stats["active"] == 0 and stats["expired"] == 1
        with pytest.raises(StreamExpired, match="idle"):
            session.accept(np.zeros(1600, np.float32))
        fresh = _pieces(_speaker("george", range(35, 45)), 1600)  # the freed slot serves a new stream
        same_events(_feed(with_timeout, 8000, fresh), _in_process(recognizer, 8000, fresh))
    finally:
        with_timeout.pipeline.close()


def test_backpressure_bounds_what_is_in_flight_and_loses_nothing(ray_rec, recognizer):
    """40 s pushed at once: at most `window` ticks are in flight, the producer waits, every chunk arrives."""
    audio = np.concatenate([_speaker("lucas", range(30, 40))] * 6)
    ingest = Ingest(ray_rec.pipeline, max_chunk=0.5, window=2)
    key = ingest.open(8000)
    ingest.push(key, audio)
    ingest.finish(key)
    ingest.drain(key)
    events, _ = ingest.take(key)
    assert ingest.stats.max_inflight == 2 and ingest.stats.blocked > 0
    assert ingest.stats.chunks == -(-len(audio) // 4000)
    assert ingest.stats.dropped_seconds == 0
    same_events(events, _in_process(recognizer, 8000, [audio[i : i + 4000] for i in range(0, len(audio), 4000)]))


def test_drop_policy_counts_what_it_drops(ray_rec):
    """With overflow="drop" a producer never waits; audio past the buffer limit is dropped and counted."""
    ingest = Ingest(ray_rec.pipeline, window=2, overflow="drop", max_buffer=1.0)
    key = ingest.open(8000)
    ingest.push(key, np.zeros(8000 * 5, np.float32))
    assert ingest.stats.dropped_seconds == pytest.approx(4.0)
    assert ingest.stats.max_buffered_seconds <= 1.0
    ingest.finish(key)
    ingest.drain(key)
    _, state = ingest.take(key)
    assert state.done and not state.error
