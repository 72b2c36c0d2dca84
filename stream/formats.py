"""Writing transcripts and events: plain text, JSON lines, SubRip (srt), WebVTT, and timestamps."""

from __future__ import annotations

import json

from .backend import Event
from .transcribe import Transcript

FORMATS = ("text", "jsonl", "srt", "vtt")


def timestamp(seconds: float, sep: str = ".", hours: bool = True) -> str:
    """hh:mm:ss.mmm (srt: sep=","); hours=False leaves them out until there are any (Whisper's [mm:ss.mmm])."""
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}" if h or hours else f"{m:02d}:{s:02d}{sep}{ms:03d}"


def printable(text: str) -> str:
    """`text` as UTF-8 can hold it: a file name that is not UTF-8 comes from the OS with each undecodable byte 0xXY
    as the lone surrogate U+DCXY (PEP 383), which no UTF-8 stream can write; it is shown as the escape `\\udcXY`,
    which is also JSON's escape of that character."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_line(obj: object) -> str:
    """One JSON line, non-ASCII text as it is; a name that is not UTF-8 keeps its bytes as `\\udcXY` escapes, so
    `os.fsencode(json.loads(line)["path"])` is the name's bytes again (the rerun of a batch finds it)."""
    return printable(json.dumps(obj, ensure_ascii=False))


def event_json(e: Event, digits: int = 3) -> str:
    d = e.to_dict()
    d["start"], d["end"] = round(e.start, digits), round(e.end, digits)
    for w in d["words"]:
        for k in ("start", "end", "confidence"):
            w[k] = round(w[k], digits)
    return json_line(d)


def to_jsonl(t: Transcript) -> str:
    return json_line(t.to_dict())


def to_srt(t: Transcript) -> str:
    blocks = [
        f"{i}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(t.segments, 1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    cues = [f"{timestamp(s.start)} --> {timestamp(s.end)}\n{s.text}\n" for s in t.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def render(t: Transcript, fmt: str, with_path: bool = False) -> str:
    if fmt == "jsonl":
        return to_jsonl(t)
    if fmt == "srt":
        return to_srt(t)
    if fmt == "vtt":
        return to_vtt(t)
    return f"{printable(t.path)}: {t.text}" if with_path else t.text
