"""tools.leadin on two real dev phone numbers: the report's shape, and its as-is reading is `rnnstream transcribe`'s."""

from __future__ import annotations

import json

from stream.cli import main as rnnstream
from tools.data import read_manifest
from tools.leadin import DEV_MANIFEST, LeadIn, leadin_report


def test_leadin_report_on_two_recordings(recognizer, capsys):
    # The first two: 48 kHz stereo (a laptop) and 44.1 kHz mono (a phone), so channels and resampling are kept.
    variants = (LeadIn("silence", 0.5), LeadIn("noise", 2.4, -50.0))
    report = leadin_report(recognizer, DEV_MANIFEST, variants, first=2)
    names = ["as-is", "silence 0.5 s", "noise 2.4 s -50 dBFS"]
    assert [v.name for v in report.variants] == names
    assert report.utterances == len(report.files) == 2
    assert 0 <= report.identical_digits <= 2 and report.identical <= report.identical_digits
    rows = read_manifest(DEV_MANIFEST)[:2]
    for f, row in zip(report.files, rows):
        assert f.audio == row["audio"] and f.ref == row["text"]
        assert list(f.hyps) == names
        assert f.identical == (len(set(f.hyps.values())) == 1)
    as_is = report.variants[0]
    assert as_is.ref_words == sum(len(r["text"].split()) for r in rows)
    assert as_is.word_errors == as_is.substitutions + as_is.deletions + as_is.insertions
    json.dumps(report.to_dict())

    assert rnnstream(["transcribe", *(r["audio"] for r in rows), "--format", "jsonl", "--compute-device", "cpu"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["text"] for p in printed] == [f.hyps["as-is"] for f in report.files]
