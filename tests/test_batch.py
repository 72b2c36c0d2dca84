"""`rnnstream batch`: directories, globs and manifests through Ray; every input in the output exactly once,
bad files reported as records, and a rerun after a crash skips what is done."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import FSDD, REPO

from stream.batch.driver import BatchOptions, run_batch
from stream.batch.inputs import expand_inputs
from stream.transcribe import transcribe_file


def rnnstream(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=400
    )


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A directory of real clips, a glob, a manifest (relative paths, one duplicate) and three bad inputs."""
    root = tmp_path_factory.mktemp("corpus")
    clips = sorted(FSDD.glob("*_nicolas_4*.wav"))[:8]
    (root / "dir" / "sub").mkdir(parents=True)
    for i, c in enumerate(clips):
        target = root / "dir" / ("sub" if i % 2 else "") / c.name
        target.write_bytes(c.read_bytes())
    (root / "dir" / "notes.txt").write_text("not audio, and not picked up from a directory\n")
    (root / "broken.wav").write_bytes((root / "dir" / clips[0].name).read_bytes()[:30])
    (root / "empty.wav").write_bytes(b"")
    manifest = root / "list.txt"
    manifest.write_text("# clips\n" + "\n".join(["empty.wav", f"dir/{clips[0].name}", "broken.wav"]) + "\n")
    inputs = [str(root / "dir"), str(FSDD / "7_jackson_1*.wav"), str(manifest), str(root / "missing.wav")]
    return inputs


def test_inputs_expand_once_each(corpus):
    expanded = expand_inputs(corpus)
    assert len(expanded.paths) == len({Path(p).resolve() for p in expanded.paths}) == 8 + 11 + 2
    assert list(expanded.errors) == [corpus[-1]]


@pytest.mark.ray
@pytest.mark.slow
def test_batch_through_ray_writes_every_input_exactly_once(corpus, tmp_path, recognizer):
    out = tmp_path / "out.jsonl"
    result = rnnstream("batch", *corpus, "--output", str(out), "--no-progress")
    assert result.returncode == 1, result.stderr  # some inputs are bad
    rows = _rows(out)
    expanded = expand_inputs(corpus)
    assert Counter(r["path"] for r in rows) == Counter(expanded.paths + list(expanded.errors))
    failed = {Path(r["path"]).name: r["error"] for r in rows if "error" in r}
    assert set(failed) == {"broken.wav", "empty.wav", "missing.wav"}
    for name, why in failed.items():
        assert f"error: {why}" in result.stderr and name in why
    assert "19 transcribed" in result.stderr and "3 failed" in result.stderr
    for row in rows:  # the same transcript as `rnnstream transcribe` gives in-process
        if "error" not in row:
            assert row == transcribe_file(recognizer, row["path"]).to_dict()


def test_rerun_after_a_crash_skips_what_is_done(corpus, tmp_path):
    out = tmp_path / "out.jsonl"

    class Crash(Exception):
        pass

    def crash_after_five(summary):
        if summary.transcribed == 5:
            raise Crash

    # The driver's logic, in process (Ray's part is the test above).
    opts = BatchOptions(progress=False, streams=4, chunk_seconds=0.2, in_process=True)
    with pytest.raises(Crash):
        run_batch(corpus, out, "digits", opts, errors=None, on_file=crash_after_five)
    first = _rows(out)
    with open(out, "a") as f:
        f.write('{"path": "/half/a/line')  # the crash cut a record short
    summary = run_batch(corpus, out, "digits", opts, errors=None)
    rows = _rows(out)
    expanded = expand_inputs(corpus)
    assert Counter(r["path"] for r in rows) == Counter(expanded.paths + list(expanded.errors))
    assert rows[: len(first)] == first  # what was done is kept, not redone
    assert summary.skipped == len(first) and summary.transcribed + summary.failed == len(rows) - len(first)


def test_subtitles_go_to_a_directory_with_an_index(tmp_path, digits_wav):
    # Connected strings, the audio subtitles are made for: each file gives cues (a clip cut tight to the word is
    # tests/test_streaming_exact.py's case).
    clips = [str(REPO / "examples" / "phone-number-8k.wav"), str(digits_wav)]
    out = tmp_path / "srt"
    result = rnnstream("batch", *clips, "--output", str(out), "--format", "srt", "--in-process", "--no-progress")
    assert result.returncode == 0, result.stderr
    index = _rows(out / "index.jsonl")
    assert sorted(r["path"] for r in index) == sorted(clips)  # each input once, in the order they finished
    for r in index:
        text = (out / r["output"]).read_text()
        assert text.startswith("1\n00:00:") and " --> " in text
    again = rnnstream("batch", *clips, "--output", str(out), "--format", "srt", "--in-process", "--no-progress")
    assert "2 already done" in again.stderr and len(_rows(out / "index.jsonl")) == 2
