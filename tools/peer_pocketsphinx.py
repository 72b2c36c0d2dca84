"""Peer system: PocketSphinx 5 (US-English acoustic model) restricted to a digit-string grammar.

It is the classic small-footprint way to recognise PINs and phone numbers, so our model must beat
it on the same held-out recordings. The grammar is one or more of zero/oh/one..nine (--bounded: 1
to 16, four times slower for the same result); the decoder inserts optional silence between words
by itself. Audio is resampled to 16 kHz for the stock en-us model: its feat.params fix the
filterbank, so 8 kHz input cannot be decoded natively. PocketSphinx's default word insertion
penalty (wip 0.65) inserts many digits on FSDD-built strings; --wip 0.01 roughly halves its WER.

    python -m tools.peer_pocketsphinx --manifest data/test/lucas/manifest.jsonl --out hyp.jsonl

The last line printed is a JSON summary (WER counts "oh" and "zero" as the same word).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from pocketsphinx import Config, Decoder, get_model_path

from tools.scoring import normalize_digits, score

RATE = 16000  # the en-us acoustic model's rate; other audio is resampled to it
WORDS = ["zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass(frozen=True)
class PeerOptions:
    max_digits: int | None = None  # None: any number of digits (a loop, much faster to search)
    wip: float | None = None  # word insertion penalty; None: PocketSphinx's default (0.65)
    model_dir: str | None = None  # default: the model shipped with the pocketsphinx wheel


def digits_jsgf(max_digits: int | None = None) -> str:
    """A JSGF grammar for 1..max_digits digits (nested optionals: JSGF has no bounded repeat)."""
    body = "<digit>+"
    if max_digits is not None:
        body = "<digit>"
        for _ in range(max_digits - 1):
            body = f"<digit> [{body}]"
    return (
        "#JSGF V1.0;\ngrammar digits;\n"
        f"<digit> = {' | '.join(WORDS)};\n"
        f"public <digits> = {body};\n"
    )


def _digit_dict(model_dir: Path, path: Path) -> None:
    """Copy the digit words' pronunciations (with variants like zero(2)) out of the full dictionary."""
    keep = []
    for line in (model_dir / "en-us" / "cmudict-en-us.dict").read_text().splitlines():
        head = line.split(" ", 1)[0]
        if head.split("(")[0] in WORDS:
            keep.append(line)
    path.write_text("\n".join(keep) + "\n")


def make_decoder(options: PeerOptions, workdir: Path) -> Decoder:
    model_dir = Path(options.model_dir or get_model_path())
    dict_path, gram_path = workdir / "digits.dict", workdir / "digits.gram"
    _digit_dict(model_dir, dict_path)
    gram_path.write_text(digits_jsgf(options.max_digits))
    config = Config(
        hmm=str(model_dir / "en-us" / "en-us"),
        dict=str(dict_path),
        jsgf=str(gram_path),
        samprate=RATE,
        loglevel="FATAL",
    )
    if options.wip is not None:
        config["wip"] = options.wip
    return Decoder(config)


def read_pcm16(path: str | Path) -> tuple[bytes, float]:
    """(16 kHz mono int16 bytes, duration in seconds) of any file soundfile reads."""
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != RATE:
        audio = soxr.resample(audio, sr, RATE, quality="HQ")
    pcm = (np.clip(audio, -1.0, 32767 / 32768) * 32768.0).astype("<i2")
    return pcm.tobytes(), len(audio) / RATE


def recognize(decoder: Decoder, pcm: bytes) -> str:
    """Decode one whole utterance (full_utt: cepstral mean from the whole file, as in batch mode)."""
    decoder.start_utt()
    decoder.process_raw(pcm, no_search=False, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    words = hyp.hypstr.split() if hyp is not None else []
    return " ".join(w.split("(")[0] for w in words if not w.startswith(("<", "[", "+")))


def read_manifest(path: Path) -> Iterator[dict]:
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            record["path"] = path.parent / record["audio"]
            yield record


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--out", type=Path, help="per-utterance ref/hyp JSON lines")
    parser.add_argument("--limit", type=int, help="first N utterances only")
    parser.add_argument("--bounded", action="store_true", help="grammar of 1..16 digits, not 1..any")
    parser.add_argument("--wip", type=float, help="word insertion penalty (default PocketSphinx's 0.65)")
    args = parser.parse_args(argv)

    options = PeerOptions(max_digits=16 if args.bounded else None, wip=args.wip)
    with tempfile.TemporaryDirectory(prefix="ps_") as tmp:
        decoder = make_decoder(options, Path(tmp))
    records = list(read_manifest(args.manifest))[: args.limit]
    pairs, rows, audio_s, decode_s = [], [], 0.0, 0.0
    for record in records:
        pcm, seconds = read_pcm16(record["path"])
        start = time.perf_counter()
        hyp = recognize(decoder, pcm)
        decode_s += time.perf_counter() - start
        audio_s += seconds
        pairs.append((record["text"], hyp))
        rows.append({"audio": record["audio"], "ref": record["text"], "hyp": hyp})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = score(pairs)
    summary = {
        "system": "pocketsphinx-jsgf",
        "manifest": str(args.manifest),
        "wip": decoder.config["wip"],
        "utterances": result["utterances"],
        **{k: result[k] for k in ("ref_words", "substitutions", "deletions", "insertions")},
        "wer": round(result["wer"], 4),
        "ser": round(result["ser"], 4),
        "audio_seconds": round(audio_s, 2),
        "wall_seconds": round(decode_s, 2),
        "rtf": round(decode_s / max(audio_s, 1e-9), 4),
    }
    wrong = [r for r in rows if normalize_digits(r["ref"]) != normalize_digits(r["hyp"])]
    for r in wrong[:3]:
        print(f"ref: {r['ref']}\nhyp: {r['hyp']}", file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
