"""The `rnnstream transcribe` command: identical output for any chunk size, clear errors, odd input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import FSDD, REPO

from stream.transcribe import transcribe_file
from tools.scoring import wer_counts


def rnnstream(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_chunk_sizes_print_identical_json(digits_wav):
    files = [str(digits_wav), str(FSDD / "3_lucas_7.wav"), str(FSDD / "0_yweweler_21.wav")]
    outputs = [rnnstream("transcribe", *files, "--format", "jsonl", "--chunk-ms", ms) for ms in ("10", "160", "0")]
    for out in outputs:
        assert out.returncode == 0, out.stderr
    assert outputs[0].stdout == outputs[1].stdout == outputs[2].stdout
    rows = [json.loads(line) for line in outputs[0].stdout.splitlines()]
    assert [r["path"] for r in rows] == files
    first = rows[0]
    assert set(first) == {"path", "text", "duration", "segments"}
    assert first["text"] and first["segments"]
    word = first["segments"][0]["words"][0]
    assert set(word) == {"word", "start", "end", "confidence"}
    assert 0 <= word["start"] < word["end"] <= first["duration"] + 0.05


def _write(path, data, rate, subtype=None):
    sf.write(path, data, rate, subtype=subtype)
    return str(path)


def test_broken_input_gets_one_line_errors_and_the_rest_is_transcribed(tmp_path, digits_wav):
    missing = str(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio\n" * 20)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(digits_wav.read_bytes()[:30])
    nan = tmp_path / "nan.wav"
    samples = np.zeros(16000, np.float32)
    samples[8000] = np.nan
    sf.write(nan, samples, 16000, subtype="FLOAT")
    inf = tmp_path / "inf.wav"
    samples[8000] = np.inf
    sf.write(inf, samples, 16000, subtype="FLOAT")
    bad = [missing, str(empty), str(not_audio), str(truncated), str(nan), str(inf)]

    out = rnnstream("transcribe", str(digits_wav), *bad, str(digits_wav), "--format", "jsonl")

    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("rnnstream: error:")]
    assert len(errors) == len(bad)
    for path, line in zip(bad, errors):
        assert path in line
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(digits_wav)] * 2
    assert rows[0]["text"]


def test_odd_but_valid_input_is_transcribed(tmp_path, digits_audio):
    audio, _ = digits_audio
    clip = sf.read(FSDD / "4_george_5.wav", dtype="float32")[0]
    cases = {
        "zero.wav": (np.zeros(0, np.float32), 16000, "PCM_16"),
        "one.wav": (np.full(1, 0.1, np.float32), 16000, "PCM_16"),
        "eight_channels.wav": (np.tile(audio[:, None], (1, 8)), 16000, "PCM_16"),
        "rate8k.wav": (clip, 8000, "PCM_16"),
        "rate44k.flac": (_resample(audio, 16000, 44100), 44100, "PCM_24"),
        "rate48k_int32.wav": (_resample(audio, 16000, 48000), 48000, "PCM_32"),
        "float.wav": (audio, 16000, "FLOAT"),
        "ogg.ogg": (audio, 16000, "VORBIS"),
        "mp3.mp3": (_resample(audio, 16000, 48000), 48000, "MPEG_LAYER_III"),
    }
    paths = [_write(tmp_path / name, data, rate, subtype) for name, (data, rate, subtype) in cases.items()]
    out = rnnstream("transcribe", *paths, "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    rows = {r["path"].rsplit("/", 1)[1]: r for r in map(json.loads, out.stdout.splitlines())}
    assert rows["zero.wav"]["text"] == "" and rows["zero.wav"]["segments"] == []
    assert rows["one.wav"]["text"] == ""
    reference = rows["float.wav"]["text"]
    assert reference
    for name in ("eight_channels.wav", "rate44k.flac", "rate48k_int32.wav"):
        assert rows[name]["text"] == reference, name
    assert rows["rate8k.wav"]["text"]
    for name in ("ogg.ogg", "mp3.mp3"):  # lossy codecs change the signal: at most one word may differ
        errors, _ = wer_counts(reference, rows[name]["text"])
        assert errors <= 1, (name, rows[name]["text"], reference)


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    import soxr

    return soxr.resample(x, src, dst)


def test_subtitle_and_text_formats(recognizer, digits_wav):
    from stream.formats import render, timestamp

    transcript = transcribe_file(recognizer, digits_wav)
    segment = transcript.segments[0]
    assert render(transcript, "text") == transcript.text and transcript.text
    srt, vtt = render(transcript, "srt"), render(transcript, "vtt")
    assert srt.startswith(f"1\n{timestamp(segment.start, ',')} --> {timestamp(segment.end, ',')}\n{segment.text}\n")
    assert vtt.startswith(f"WEBVTT\n\n{timestamp(segment.start)} --> {timestamp(segment.end)}\n{segment.text}\n")
    assert json.loads(render(transcript, "jsonl")) == transcript.to_dict()
    assert (timestamp(3661.5, ","), timestamp(61.25, hours=False), timestamp(3661.5, hours=False)) == (
        "01:01:01,500", "01:01.250", "01:01:01.500")


@pytest.mark.parametrize(
    "option", [["--chunk-ms", "-5"], ["--beam", "-1"], ["--chunk-ms", "ten"], ["--lexicon", "no/such.txt"], ["--lm", "no.arpa"]]
)
def test_bad_option_values_are_refused_where_they_are_parsed(option, capsys):
    from stream.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["transcribe", "x.wav", *option])
    assert exit_.value.code == 2 and option[0] in capsys.readouterr().err


def test_unknown_model_is_a_clear_error(tmp_path):
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"PK\x03\x04 not a checkpoint")
    for model in (str(foreign), "no-such-model"):
        out = rnnstream("transcribe", str(FSDD / "3_lucas_7.wav"), "--model", model)
        assert out.returncode == 2
        assert "Traceback" not in out.stderr and "rnnstream: error:" in out.stderr
