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
    """`text` on one line that any UTF-8 stream can write: each character that is not printable (a newline or other
    control character in a file name, U+2028, and the lone surrogate U+DCXY that stands for a byte 0xXY of a name
    that is not UTF-8, PEP 383) is shown as its `\\uXXXX` escape, which is also JSON's escape of that character."""
    return text if text.isprintable() else "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    n = ord(c)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000  # past the BMP: JSON's UTF-16 pair
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def json_line(obj: object) -> str:
    """One JSON line, printable non-ASCII text as it is; a name that is not UTF-8 keeps its bytes as `\\udcXY`
    escapes, so `os.fsencode(json.loads(line)["path"])` is the name's bytes again (the rerun of a batch finds it)."""
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
