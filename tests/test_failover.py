"""Failover: a stream's state is a value (front end, model slot, decoder), and a pipeline that loses a worker is
replaced and every open stream replayed from its snapshot, so each stream's finals are exactly those of a run
without the failure: none missing, none twice, same words and times. Real FSDD audio and the bundled model; a
real Ray with actors killed (ray.kill, kill -9) and, in test_cluster.py's style, a worker node removed."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from conftest import FSDD, chunked

from stream.ingest import Ingest, PipelineFailed
from stream.pipeline import LocalPipeline, PipelineSpec


def _speaker(name: str, first: int, rate: int) -> np.ndarray:
    """Ten of one speaker's digits in three utterances (1.5 s pauses end them) and a last digit: ~12 s."""
    parts = []
    for d in range(10):
        audio, _ = sf.read(FSDD / f"{d}_{name}_{(d + first) % 50}.wav", dtype="float32")
        parts += [audio, np.zeros(int(8000 * (1.5 if d % 3 == 2 else 0.3)), np.float32)]
    x = np.concatenate(parts)
    return soxr.resample(x, 8000, rate).astype(np.float32) if rate != 8000 else x


def digit_streams(n: int) -> dict[str, tuple[int, np.ndarray]]:
    """n streams of five speakers; every fifth at 8 kHz (resampled: no snapshot, replayed from its start)."""
    names = ["lucas", "george", "nicolas", "yweweler", "jackson"]
    out = {}
    for i in range(n):
        rate = 8000 if i % 5 == 0 else 16000
        out[f"{names[i % 5]}{i}"] = (rate, _speaker(names[i % 5], 7 * (i // 5), rate))
    return out


def finals(events) -> list:
    return [(e.text, e.start, e.end, [(w.word, w.start, w.end) for w in e.words]) for e in events if e.type == "final"]


def live_run(ingest: Ingest, streams: dict, fail=None, at: float = 7.0, step: float = 0.1) -> tuple[dict, dict]:
    """Every stream fed `step` s a tick as fast as the pipeline goes; `fail()` once `at` s of input are in.
    -> each stream's events, and the seconds from the failure to each stream's next event."""
    keys = {n: ingest.open(r) for n, (r, _) in streams.items()}
    out: dict = {n: [] for n in streams}
    failed, after = None, {}
    t, length = 0.0, max(len(x) / r for r, x in streams.values())

    def take(final: bool = False):
        for n, key in keys.items():
            if ingest.status(key) is not None:
                events, _ = ingest.take(key)
                out[n] += events
                if failed is not None and events and n not in after:
                    after[n] = time.monotonic() - failed

    while t < length:
        for n, (r, x) in streams.items():
            if int(t * r) < len(x):
                ingest.push(keys[n], x[int(t * r) : int((t + step) * r)])
        if fail is not None and failed is None and t >= at:
            failed = time.monotonic()
            fail()
        ingest.submit()
        ingest.collect()
        take()
        t += step
    for key in keys.values():
        ingest.finish(key)
    ingest.drain()
    take()
    return out, after


# ---------------------------------------------------------------------------------------------- state as a value


def test_a_restored_back_end_continues_exactly(recognizer):
    """The beam decoder's hypotheses cannot be saved: the snapshot replays its utterance. From a snapshot at any
    tick, a fresh BackEnd gives the events the original gave after that tick."""
    audio = _speaker("george", 3, 16000)
    session = recognizer.session(16000)
    log_probs = []
    step = session.pipeline.model.batcher.step
    session.pipeline.model.batcher.step = lambda inputs: [out := step(inputs), log_probs.extend(out.values())][0]
    for chunk in chunked(audio, [16000]):
        session.accept(chunk)
    session.finish()
    ticks = list(torch.cat(log_probs).split(7))  # 210 ms of model steps a tick
    original = recognizer.backend()
    per_tick = [original.accept(lp) for lp in ticks]
    assert len(finals(e for evs in per_tick for e in evs)) >= 3
    for k in range(1, len(ticks), 5):
        back = recognizer.backend()
        for lp in ticks[:k]:
            back.accept(lp)
        restored = recognizer.backend().restore(back.snapshot())
        assert [restored.accept(lp) for lp in ticks[k:]] == per_tick[k:]


def test_front_end_snapshots_continue_exactly_or_say_they_cannot(recognizer):
    audio = _speaker("lucas", 0, 16000)
    whole = recognizer.extractor.open(16000)
    frames = [whole.cut(c) for c in chunked(audio, [3001])]
    cut = 9
    restored = recognizer.extractor.open(16000)
    restored.restore(_replayed(recognizer, audio, 3001, cut).snapshot())
    rest = [restored.cut(c) for c in list(chunked(audio, [3001]))[cut:]]
    assert all(torch.equal(a, b) for a, b in zip(rest, frames[cut:])) and len(rest) == len(frames) - cut
    assert recognizer.extractor.open(8000).snapshot() is None  # soxr's state: replayed from the start instead


def _replayed(recognizer, audio, size, n):
    front = recognizer.extractor.open(16000)
    for c in list(chunked(audio, [size]))[:n]:
        front.steps(front.cut(c))  # (the frames' values do not matter here: what is carried does)
    return front


# ---------------------------------------------------------------------------------------------- replay, in process


class LosingPipeline:
    """The in-process pipeline, except that its worker is "lost" at the given ticks (their Futures fail, as when an
    actor dies after doing the work); `restart` builds fresh stages, as Ray's would."""

    restartable = True

    def __init__(self, recognizer, lose_at: set[int]):
        self.recognizer, self.lose_at, self.ticks = recognizer, lose_at, 0
        self.restarts = 0
        self._fresh()

    def _fresh(self) -> None:
        r = self.recognizer
        self.local = LocalPipeline(r.extractor, r.model, r.backend, PipelineSpec(slots=8))
        self.node_id = "local"

    def submit(self, producer, seq, chunks):
        self.ticks += 1
        done = self.local.submit(producer, seq, chunks)
        if self.ticks not in self.lose_at:
            return done
        lost = Future()
        lost.set_exception(ConnectionError("worker lost"))
        return lost

    def restart(self, error: BaseException) -> bool:
        self.restarts += 1
        self._fresh()
        return isinstance(error, ConnectionError)

    def reserve(self, keys):
        return self.local.reserve(keys)

    def stats(self):
        return self.local.stats()

    def close(self):
        pass


@pytest.mark.parametrize("lose_at", [{5}, {3, 40, 41, 90}, {60}])
def test_streams_replayed_after_a_lost_worker_give_exactly_the_samefinals(recognizer, lose_at):
    streams = digit_streams(5)  # four at 16 kHz (snapshots every 2 s), one at 8 kHz (replayed from its start)
    want, _ = live_run(Ingest(LocalPipeline(recognizer.extractor, recognizer.model, recognizer.backend)), streams)
    assert all(len(finals(v)) >= 3 for v in want.values())
    pipeline = LosingPipeline(recognizer, lose_at)
    ingest = Ingest(pipeline, snapshot_every=2.0)
    got, _ = live_run(ingest, streams)
    assert {n: finals(v) for n, v in got.items()} == {n: finals(v) for n, v in want.items()}
    assert ingest.stats.recoveries == len(lose_at) == pipeline.restarts
    assert ingest.stats.snapshots > 0 and ingest.stats.replayed_seconds > 0


def test_a_stream_replayed_after_a_lost_worker_keeps_its_own_options(recognizer):
    """A stream opened with its own decoding (a phrase list) reopens with it after a lost worker: its finals are
    those of a session with those options, not the pipeline's."""
    from stream.options import phrase_options

    options = phrase_options(recognizer.options, recognizer.tokenizer, ("one two three", "four five oh"))
    rate, audio = digit_streams(2)["george1"]  # 16 kHz: replayed from its snapshots
    ingest = Ingest(LosingPipeline(recognizer, {4, 25}), snapshot_every=2.0)
    key = ingest.open(rate, options=options)
    events = []
    for chunk in chunked(audio, [3200]):
        ingest.push(key, chunk)
        events += ingest.pump(key, block=True)[0]
    ingest.finish(key)
    events += ingest.pump(key, block=True)[0]
    session, plain = recognizer.session(rate, options=options), recognizer.session(rate)
    want = finals(session.accept(audio) + session.finish())
    assert finals(events) == want and want != finals(plain.accept(audio) + plain.finish())
    assert ingest.stats.recoveries == 2 and ingest.stats.snapshots > 0


def test_past_max_recoveries_the_streams_fail_with_a_clear_error(recognizer):
    ingest = Ingest(LosingPipeline(recognizer, set(range(2, 100))), max_recoveries=2)
    key = ingest.open(16000)
    ingest.push(key, _speaker("lucas", 0, 16000))
    ingest.finish(key)
    with pytest.raises(PipelineFailed, match="worker lost"):
        ingest.drain()
    assert ingest.status(key).lost and ingest.stats.recoveries == 2


def test_without_a_restartable_pipeline_nothing_is_kept(recognizer):
    ingest = Ingest(LocalPipeline(recognizer.extractor, recognizer.model, recognizer.backend))
    assert not ingest.failover
    key = ingest.open(16000)
    ingest.push(key, np.zeros(16000, np.float32))
    ingest.submit()
    assert not ingest._streams[key].journal.sent


def test_a_stream_failed_while_its_next_tick_was_lost_is_reported_over(recognizer):
    """Its error came in one tick while the next tick, lost with its worker, still carried its input: the lost tick
    is void, so the stream is over (with its own error) and news, not waiting for it forever."""
    from stream.errors import Kind

    ingest = Ingest(LosingPipeline(recognizer, {2}), window=4)
    key, good = ingest.open(16000), ingest.open(16000)
    audio = _speaker("lucas", 0, 16000)
    bad = audio[:3200].copy()
    bad[100] = np.nan
    for k, chunk in ((key, bad), (good, audio[:3200])):
        ingest.push(k, chunk)
    ingest.submit(block=False)
    ingest.push(key, audio[3200:6400])
    ingest.push(good, audio[3200:6400])
    ingest.submit(block=False)  # (tick 2 is sent before tick 1's error is back: then its worker is lost)
    ingest.collect(timeout=None)
    ingest.collect(timeout=None)
    assert ingest.stats.recoveries == 1
    news = ingest.take_news({key, good})
    assert key in news and news[key][1].over and news[key][1].error.kind is Kind.INPUT
    ingest.finish(good)
    ingest.drain()
    assert ingest.status(good).over and ingest.status(good).error is None


def test_a_closed_ingest_has_every_stream_over_with_ticks_in_flight(recognizer):
    """Closing voids the ticks still out (a restartable pipeline's close fails them as lost): every stream is over
    at once with CLOSED, and no pipeline is restarted for the ticks of a closed ingest."""
    from stream.errors import Kind

    pipeline = SlowPipeline(recognizer, 0.3)
    ingest = Ingest(pipeline, window=4)
    key = ingest.open(16000)
    ingest.push(key, _speaker("lucas", 0, 16000)[:3200])
    ingest.submit(block=False)
    assert ingest.inflight == 1
    ingest.close()
    status = ingest.status(key)
    assert status.over and status.error.kind is Kind.CLOSED and ingest.inflight == 0
    assert ingest.collect(timeout=0.5) == 0 and pipeline.restarts == 0


# ---------------------------------------------------------------------------------------------- overload


class SlowPipeline(LosingPipeline):
    """The in-process pipeline whose every tick takes `seconds` to come back, as on an overloaded machine."""

    def __init__(self, recognizer, seconds: float):
        super().__init__(recognizer, set())
        self.seconds = seconds

    def submit(self, producer, seq, chunks):
        done, slow = super().submit(producer, seq, chunks), Future()
        timer = threading.Timer(self.seconds, lambda: slow.set_result(done.result()))
        timer.daemon = True
        timer.start()
        return slow


def test_past_the_latency_budget_new_streams_are_refused_and_open_ones_go_on(recognizer):
    from stream.ingest import Overloaded

    ingest = Ingest(SlowPipeline(recognizer, 0.4), admit_latency=0.2)
    rate, audio = digit_streams(2)["george1"]
    key = ingest.open(rate)
    ingest.push(key, audio[: 2 * rate])
    ingest.submit()
    time.sleep(0.25)
    with pytest.raises(Overloaded, match=r"\d+\.\d\d s behind \(budget 0\.2 s\)"):
        ingest.open(rate)
    assert ingest.stats.refused == 1
    ingest.push(key, audio[2 * rate :])
    ingest.finish(key)
    ingest.drain()
    events, status = ingest.take(key)
    assert status.over and not status.error
    session = recognizer.session(rate)
    want = [e for c in chunked(audio, [len(audio)]) for e in session.accept(c)] + session.finish()
    assert finals(events) == finals(want)
    time.sleep(1.1)  # (the lag is held for a second)
    ingest.open(rate)  # caught up: streams are admitted again


# ---------------------------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_live(ray_digits):
    rec = ray_digits  # the session's (conftest.py): one Ray and pipeline for this module and test_ray_pipeline's
    streams = digit_streams(50)
    want, _ = live_run(rec.ingest, streams)
    return rec, streams, {n: finals(v) for n, v in want.items()}


def _kill_model(rec):
    import ray

    ray.kill(rec.pipeline.model)


def _kill_9_model(rec):
    import ray

    os.kill(ray.get(rec.pipeline.model.pid.remote()), signal.SIGKILL)


def _kill_decoder(rec):
    import ray

    ray.kill(rec.pipeline.decoders[1])


@pytest.mark.ray
@pytest.mark.parametrize("fail", [_kill_model, _kill_9_model, _kill_decoder], ids=["ray.kill model", "kill -9 model", "ray.kill decoder"])
def test_fifty_live_streams_through_ray_survive_a_killed_actor(ray_live, fail):
    rec, streams, want = ray_live
    assert rec.pipeline.warm()  # the standby of the last test's restart
    before = rec.ingest.stats.recoveries
    got, after = live_run(rec.ingest, streams, fail=lambda: fail(rec))
    assert {n: finals(v) for n, v in got.items()} == want
    assert rec.ingest.stats.recoveries == before + 1
    assert len(after) == len(streams)  # every stream spoke again



# ------------------------------------------------------------------------------------- the pipeline in a process


def test_fifty_live_streams_through_pipeline_processes_survive_a_kill_9(recognizer):
    """`rnnstream serve`'s default pipeline: the stages in two child processes, each with half the streams. One
    killed mid-stream (-9), both are replaced and every stream ends with exactly the finals of an undisturbed
    run, none lost or twice."""
    from stream.process import ProcessPipeline

    pipeline = ProcessPipeline(recognizer.checkpoint, PipelineSpec(options=recognizer.options), processes=2)
    try:
        streams = digit_streams(50)
        want = {n: finals(v) for n, v in live_run(Ingest(pipeline), streams)[0].items()}
        assert want == {n: finals(v) for n, v in live_run(Ingest(recognizer.pipeline()), streams)[0].items()}  # = in process
        ingest = Ingest(pipeline)
        assert ingest.failover
        first = pipeline.pids()
        assert pipeline.stats()["processes"] == 2 and len(set(first)) == 2
        got, after = live_run(ingest, streams, fail=lambda: os.kill(first[1], signal.SIGKILL))
        assert {n: finals(v) for n, v in got.items()} == want
        assert ingest.stats.recoveries == 1 and not set(pipeline.pids()) & set(first)
        assert len(after) == len(streams)  # every stream spoke again
    finally:
        pipeline.close()


def test_a_tick_is_queued_for_a_busy_child_never_written_under_the_caller(recognizer, digits_audio):
    """While a child works through one tick, the next (far over a pipe's 64 KB) is handed over at once: the caller
    (the server's hub, which also answers every client) never waits for the child to read. Before, that send
    blocked until the child had finished the tick ahead of it."""
    from stream.process import ProcessPipeline

    pipeline = ProcessPipeline(recognizer.checkpoint, PipelineSpec(options=recognizer.options))
    try:
        ingest = Ingest(pipeline)
        audio = np.tile(digits_audio[0], 2)  # ~7 s a stream: the first tick is a second or two of work for the child
        keys = [ingest.open(16000) for _ in range(100)]
        for key in keys:
            ingest.push(key, audio)
        assert ingest.submit(block=False)
        first = ingest.oldest
        for key in keys:
            ingest.push(key, audio[:16000])  # 100 x 1 s of float32: 6.4 MB
        assert ingest.submit(block=False)
        assert not first.done()  # the second tick was queued while the first is still being worked on
        ingest.drain()
        assert ingest.stats.ticks == 2 and not ingest.inflight
    finally:
        pipeline.close()
