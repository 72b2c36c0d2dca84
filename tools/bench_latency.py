"""Live latency through the real capture path: PulseAudio null sink -> ALSA `pulse` -> PortAudio -> listen loop.

For each recording, the listen loop (`stream.live.listen.run`, the same code as `rnnstream listen`) hears
it from the virtual microphone while we note when every captured block reached the callback and
when every event came out. Speech onset and end are found in the *captured* signal (10 ms frames
above -40 dBFS), and a sample's time is its block's arrival time minus the samples after it in
that block, so playback buffering does not count and capture buffering does. PortAudio's own input
latency (before the callback) is reported separately.

    python -m tools.bench_latency --n 10 [--model digits] [--beam 0] [--ray]

    speech end -> final: includes the endpoint rule's 1.2 s of trailing silence, by design.
    speech onset -> first partial: how soon words start to appear.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from stream.backend import Event
from stream.live.listen import run
from stream.live.microphone import Microphone, find_device
from tools.digits_data import connected_utterance, fsdd_clips
from tools.virtual_mic import VirtualMicrophone

REPO = Path(__file__).resolve().parents[1]

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "yweweler"]


@dataclass
class Result:
    text: str
    offline: str
    onset_to_partial: float | None
    end_to_final: float | None


class Recorder:
    """Collects (arrival time, sample offset) per block and (emit time, event) per event."""

    def __init__(self):
        self.blocks: list[tuple[float, int, np.ndarray]] = []
        self.events: list[tuple[float, Event]] = []
        self.frames = 0

    def on_audio(self, arrived: float, samples: np.ndarray) -> None:
        self.blocks.append((arrived, self.frames, samples))
        self.frames += len(samples)

    def event(self, e: Event) -> None:
        self.events.append((time.monotonic(), e))

    def note(self, message: str) -> None:
        print(message, file=sys.stderr)

    def close(self) -> None:
        pass

    def sample_time(self, index: int, rate: int) -> float:
        """When captured sample `index` reached the callback."""
        for arrived, offset, samples in self.blocks:
            if offset <= index < offset + len(samples):
                return arrived - (offset + len(samples) - 1 - index) / rate
        raise IndexError(index)

    def speech_span(self, rate: int, threshold_dbfs: float = -40.0) -> tuple[int, int] | None:
        audio = np.concatenate([b for _, _, b in self.blocks]).mean(axis=1)
        hop = rate // 100
        frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
        loud = np.flatnonzero(20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-12) > threshold_dbfs)
        if not len(loud):
            return None
        return int(loud[0] * hop), int((loud[-1] + 1) * hop - 1)


def recordings(n: int, out_dir: Path, seed: int) -> list[tuple[Path, str]]:
    """Connected-digit recordings of several FSDD speakers, with 2 s of silence after the speech."""
    clips = fsdd_clips(REPO.parent / "shared" / "data" / "fsdd", speakers=SPEAKERS)
    items = []
    for i in range(n):
        audio, text = connected_utterance(clips, np.random.default_rng([seed, i]), 16000, min_digits=3, max_digits=8)
        path = out_dir / f"{i:02d}.wav"
        sf.write(path, np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(32000, np.float32)]), 16000)
        items.append((path, text))
    return items


def measure(recognizer, vm: VirtualMicrophone, path: Path) -> tuple[Recorder, Microphone]:
    mic = Microphone(find_device("pulse"))
    session = recognizer.session(mic.sample_rate, mic.channels)
    rec = Recorder()
    mic.start()
    player = vm.play(path, wait=False)
    try:
        run(mic, session, rec, threading.Event(), sf.info(str(path)).duration + 1.0, rec.on_audio)
    finally:
        mic.stop()
        player.wait()
    return rec, mic


def analyse(rec: Recorder, rate: int) -> tuple[float | None, float | None]:
    span = rec.speech_span(rate)
    if span is None:
        return None, None
    onset, end = rec.sample_time(span[0], rate), rec.sample_time(span[1], rate)
    partials = [t for t, e in rec.events if e.type == "partial"]
    finals = [(t, e) for t, e in rec.events if e.type == "final"]
    first_partial = partials[0] - onset if partials else None
    last_final = max(finals, key=lambda te: te[1].end)[0] - end if finals else None
    return first_partial, last_final


def _ms(x: float | None) -> str:
    return "  n/a" if x is None else f"{x * 1000:5.0f}"


def stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    v = np.array(values) * 1000
    p50, p95 = np.percentile(v, [50, 95])
    return f"median {p50:.0f} ms, p95 {p95:.0f} ms, min {v.min():.0f}, max {v.max():.0f} (n={len(v)})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10, help="recordings")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--model", default="digits")
    ap.add_argument("--beam", type=int, help="beam width, 0 = greedy (default: what the model recommends)")
    ap.add_argument("--ray", action="store_true", help="recognize through the Ray pipeline")
    args = ap.parse_args(argv)

    import torch

    from stream.session import Recognizer
    from stream.transcribe import transcribe_file

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    local = Recognizer.load(args.model, device="cpu")
    if args.beam is not None:  # as `rnnstream listen --beam N`: the model's word list, another width
        local = local.with_options(beam=args.beam)
    print(f"decoding: {local.options}", flush=True)
    if args.ray:
        from stream.distributed.session import RayRecognizer

        recognizer = RayRecognizer.connect(args.model, options=local.options, checkpoint=local.checkpoint)
    else:
        recognizer = local
    results: list[Result] = []
    latency = 0.0
    with tempfile.TemporaryDirectory() as tmp, VirtualMicrophone(Path(tmp) / "pulse") as vm:
        os.environ.update(vm.env())  # before sounddevice (PortAudio) is first imported
        items = recordings(args.n + 1, Path(tmp), args.seed)
        measure(recognizer, vm, items.pop()[0])  # warm-up, not counted: first-call costs of torch and Ray
        for path, truth in items:
            rec, mic = measure(recognizer, vm, path)
            latency = max(latency, mic.latency)
            partial, final = analyse(rec, mic.sample_rate)
            text = " ".join(e.text for _, e in rec.events if e.type == "final")
            offline = transcribe_file(local, path).text
            results.append(Result(text, offline, partial, final))
            lost = mic.stats.problems() or "none lost"
            line = f"{path.name}  first partial {_ms(partial)} ms  final {_ms(final)} ms  [{lost}]"
            print(f"{line}  {truth!r} -> {text!r}", flush=True)
    recognizer.close()
    print()
    partials = [r.onset_to_partial for r in results if r.onset_to_partial is not None]
    finals = [r.end_to_final for r in results if r.end_to_final is not None]
    print(f"speech onset -> first partial: {stats(partials)}")
    print(f"speech end   -> final result:  {stats(finals)}")
    rule = local.endpoint.silence_after_speech
    print(f"  of which the endpoint rule waits {rule * 1000:.0f} ms; the rest: {stats([f - rule for f in finals])}")
    print(f"PortAudio input latency before the callback (add to both): {latency * 1000:.0f} ms")
    same = sum(r.text == r.offline for r in results)
    print(f"listen text == transcribe text: {same}/{len(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
