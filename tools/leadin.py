"""Lead-in invariance probe: does a model read a recording the same with silence or faint noise before it?

A live microphone always opens with a lead-in (digital zeros while a device starts, or its noise floor), so the
words must not depend on it (issue 26). Each recording is read as it is, through `rnnstream transcribe`'s own
path (`transcribe_file`, in process, 160 ms chunks, the checkpoint's recommended decoding), and again with each
lead-in prepended at the file's own rate with its own channels, fed through the same session in the same chunks.

    python -m tools.leadin [--model digits] [--manifest ../shared/data/phone-numbers-dev/manifest.jsonl] [--json]
    python -m tools.leadin --variants silence:0.5 noise:2.4:-50     # other lead-ins (the as-is reading is always in)

Prints WER (and its substitutions / deletions / insertions) per variant against the manifest's text (the
prompt, "oh" = "zero"), and how many recordings give the same words in every variant: `identical` compares the
words as emitted, `identical_digits` after "oh" -> "zero". `--json` prints the whole report as one JSON object.
In a program: `leadin_report(model, manifest, first=2) -> LeadinReport`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from stream.session import Recognizer
from stream.transcribe import WHOLE_FILE_BLOCK, transcribe_array, transcribe_file
from tools.data import read_manifest
from tools.scoring import normalize_digits, score

DEV_MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "phone-numbers-dev" / "manifest.jsonl"


@dataclass(frozen=True)
class LeadIn:
    """What goes before the recording: `seconds` of digital zeros ("silence") or of white noise whose RMS is
    `dbfs` ("noise"); 0 seconds is the recording as it is."""

    kind: str = "silence"
    seconds: float = 0.0
    dbfs: float | None = None

    @property
    def name(self) -> str:
        if self.seconds <= 0:
            return "as-is"
        if self.kind == "noise":
            return f"noise {self.seconds:g} s {self.dbfs:g} dBFS"
        return f"silence {self.seconds:g} s"

    def samples(self, rate: int, channels: int, seed: int) -> np.ndarray:
        """[n, channels] float32 at `rate`. Noise is the same on every channel, so the front end's mono mix
        keeps its level (independent channels would mix 3 dB quieter in stereo); seeded, so runs repeat."""
        n = round(self.seconds * rate)
        if self.kind == "silence" or n == 0:
            return np.zeros((n, channels), np.float32)
        noise = np.random.default_rng(seed).normal(0.0, 10 ** (self.dbfs / 20), n).astype(np.float32)
        return np.repeat(noise[:, None], channels, axis=1)


VARIANTS = (
    LeadIn(),
    LeadIn("silence", 0.5),
    LeadIn("silence", 1.0),
    LeadIn("silence", 2.4),
    LeadIn("silence", 5.0),
    LeadIn("noise", 2.4, -50.0),
    LeadIn("noise", 2.4, -60.0),
)


@dataclass(frozen=True)
class VariantScore:
    name: str
    wer: float
    word_errors: int
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    ser: float


@dataclass(frozen=True)
class FileReading:
    audio: str
    ref: str
    hyps: dict[str, str]  # variant name -> words
    identical: bool  # the same words in every variant
    identical_digits: bool  # the same after "oh" -> "zero"


@dataclass(frozen=True)
class LeadinReport:
    model: str
    manifest: str
    utterances: int
    identical: int  # recordings read with the same words in every variant
    identical_digits: int
    variants: list[VariantScore] = field(default_factory=list)
    files: list[FileReading] = field(default_factory=list)
    wall_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [f"{'variant':<26} {'WER':>7} {'sub':>4} {'del':>4} {'ins':>4} {'SER':>6}"]
        for v in self.variants:
            lines.append(f"{v.name:<26} {100 * v.wer:6.2f}% {v.substitutions:4d} {v.deletions:4d} {v.insertions:4d}"
                         f" {100 * v.ser:5.1f}%")
        lines.append(f"identical in all {len(self.variants)} variants: {self.identical} of {self.utterances} recordings"
                     f" ({self.identical_digits} with oh = zero)")
        return "\n".join(lines)


def read_file(recognizer: Recognizer, path: str | Path) -> tuple[np.ndarray, int, int]:
    """(float32 [n, channels], rate, channels) of a file, read by the model's front end as transcribe reads it."""
    rate, channels, _ = recognizer.extractor.info(path)
    blocks = list(recognizer.extractor.blocks(path, WHOLE_FILE_BLOCK))
    return (blocks[0] if len(blocks) == 1 else np.concatenate(blocks)), rate, channels


def read_with_leadin(
    recognizer: Recognizer, audio: np.ndarray, rate: int, lead: LeadIn, chunk_ms: int = 160, seed: int = 0
) -> str:
    """The words of one session fed `lead` then `audio` ([n, channels] at `rate`) in `chunk_ms` chunks."""
    channels = audio.shape[1]
    data = np.concatenate([lead.samples(rate, channels, seed), audio])
    events = transcribe_array(recognizer, data, rate, max(1, rate * chunk_ms // 1000), channels)
    return " ".join(e.text for e in events if e.type == "final")


def leadin_report(
    model: str | Path | Recognizer = "digits",
    manifest: str | Path = DEV_MANIFEST,
    variants: tuple[LeadIn, ...] = VARIANTS,
    first: int | None = None,
    chunk_ms: int = 160,
    seed: int = 0,
) -> LeadinReport:
    """Read the manifest's first `first` recordings (None: all) in every variant; the as-is variant goes through
    `transcribe_file`, the others through a session fed the same samples after the lead-in."""
    recognizer = model if isinstance(model, Recognizer) else Recognizer.load(model, device="cpu")
    if not any(v.seconds <= 0 for v in variants):
        variants = (LeadIn(), *variants)
    rows = read_manifest(manifest)[:first]
    t0 = time.perf_counter()
    files = []
    for row in rows:
        audio, rate, _ = read_file(recognizer, row["audio"])
        hyps = {}
        for lead in variants:
            if lead.seconds <= 0:
                hyps[lead.name] = transcribe_file(recognizer, row["audio"], chunk_ms=chunk_ms).text
            else:
                hyps[lead.name] = read_with_leadin(recognizer, audio, rate, lead, chunk_ms, seed)
        texts = list(hyps.values())
        files.append(FileReading(
            row["audio"], row["text"], hyps,
            identical=len(set(texts)) == 1,
            identical_digits=len({normalize_digits(t) for t in texts}) == 1,
        ))
    scores = []
    for lead in variants:
        s = score((f.ref, f.hyps[lead.name]) for f in files)
        scores.append(VariantScore(lead.name, **{k: s[k] for k in (
            "wer", "word_errors", "substitutions", "deletions", "insertions", "ref_words", "ser")}))
    return LeadinReport(
        model="(a recognizer)" if isinstance(model, Recognizer) else str(model),
        manifest=str(manifest),
        utterances=len(files),
        identical=sum(f.identical for f in files),
        identical_digits=sum(f.identical_digits for f in files),
        variants=scores,
        files=files,
        wall_seconds=round(time.perf_counter() - t0, 2),
    )


def parse_variant(spec: str) -> LeadIn:
    """"silence:SECONDS" or "noise:SECONDS:DBFS"."""
    parts = spec.split(":")
    try:
        if parts[0] == "silence" and len(parts) == 2:
            return LeadIn("silence", float(parts[1]))
        if parts[0] == "noise" and len(parts) == 3:
            return LeadIn("noise", float(parts[1]), float(parts[2]))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"bad variant {spec!r} (silence:SECONDS or noise:SECONDS:DBFS)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits", help="a bundled model's name or a checkpoint file")
    p.add_argument("--manifest", default=str(DEV_MANIFEST))
    p.add_argument("--variants", nargs="+", type=parse_variant, help="lead-ins (default: the six of issue 26)")
    p.add_argument("--first", type=int, help="only the manifest's first N recordings")
    p.add_argument("--chunk-ms", type=int, default=160)
    p.add_argument("--seed", type=int, default=0, help="the noise lead-ins' seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the per-core figure)")
    p.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    args = p.parse_args(argv)
    if not Path(args.manifest).is_file():
        print(f"rnnstream: error: {args.manifest}: no such manifest", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    report = leadin_report(args.model, args.manifest, tuple(args.variants or VARIANTS), args.first, args.chunk_ms,
                           args.seed)
    print(json.dumps(report.to_dict()) if args.json else report.table(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
