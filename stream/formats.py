"""Writing transcripts as plain text, JSON lines, SubRip (srt) or WebVTT."""

from __future__ import annotations

import json

from .transcribe import Transcript

FORMATS = ("text", "jsonl", "srt", "vtt")


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_jsonl(t: Transcript) -> str:
    return json.dumps(t.to_dict(), ensure_ascii=False)


def to_srt(t: Transcript) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(t.segments, 1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in t.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def render(t: Transcript, fmt: str, with_path: bool = False) -> str:
    if fmt == "jsonl":
        return to_jsonl(t)
    if fmt == "srt":
        return to_srt(t)
    if fmt == "vtt":
        return to_vtt(t)
    return f"{t.path}: {t.text}" if with_path else t.text
