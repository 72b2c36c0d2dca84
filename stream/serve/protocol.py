"""The Vosk WebSocket protocol, as its server (alphacep/vosk-server websocket/asr_server.py) speaks it.

Client -> server: an optional text `{"config": {"sample_rate": R, "words": true, "max_alternatives": 0,
"phrase_list": [...]}}` before any audio; binary messages of 16-bit little-endian mono PCM at R; the text
`{"eof" : 1}`. Server -> client: one answer per message, `{"partial": "..."}` or, when an utterance ends,
`{"result": [{"word", "start", "end", "conf"}, ...], "text": "..."}` (`{"text": ...}` alone with words off), and
at eof the last result, then the close. Anything else is a `ProtocolError` that names the close code: the only
message a well-behaved Vosk client never sees is `{"error": "..."}`, sent just before such a close.

Every text message is checked against its bounds at this edge, before it costs more than its own size: JSON
nested deeper than MAX_DEPTH is refused before it is parsed (the parser would recurse once a level: 100,000
levels overflowed the interpreter's stack), and a config's `phrase_list` holds at most MAX_PHRASES phrases of
MAX_PHRASE_CHARS characters in all (600,000 words took 50 MB per connection).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from ..backend import Event

# Close codes (RFC 6455 section 7.4.1): the client can tell a refusal from a bad message from a shutdown.
NORMAL = 1000  # after the last result
GOING_AWAY = 1001  # server shutting down, or the stream idle too long (its final is sent first)
UNSUPPORTED = 1003  # text where audio was expected, audio after eof
INVALID = 1007  # invalid JSON, odd byte count, a bad config
POLICY = 1008  # wrong token, a client that reads nothing
TOO_BIG = 1009  # a frame over max_size (closed by the websockets library itself), a text message over its bound
INTERNAL = 1011  # the last resort: an error the server did not foresee (logged as one line)
TRY_LATER = 1013  # server full

# Rates outside this are a mistake, not a microphone (telephony is 8 kHz, studio 192 kHz; Vosk takes any float).
MIN_RATE, MAX_RATE = 1000, 384_000

MAX_TEXT = 1 << 18  # characters in a text message to a speech model (a config, an eof): 256 K, parsed in ~ms
MAX_DEPTH = 16  # JSON nesting: a config is 3 deep, a list of points 2
MAX_PHRASES = 1000  # a config's phrase_list: Vosk grammars are tens of phrases
MAX_PHRASE_CHARS = 50_000  # characters in all: with str overheads ~0.2 MB a connection, not 50 MB
_BRACKETS = re.compile(r"[\[\]{}]")
# A JSON string (its brackets do not nest), possessive and running to the text's end if never closed: the plain
# pattern backtracked on an unclosed string of escaped quotes, quadratically (16 K characters 1.7 s, 256 K ~7 min).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\Z)')


@dataclass(frozen=True)
class Rates:
    """What a config's `sample_rate` may be: whole numbers in [low, high]; `required`: a config must name it."""

    low: int = MIN_RATE
    high: int = MAX_RATE
    required: bool = True


AUDIO_RATES = Rates()


class ProtocolError(Exception):
    """Bad input: the connection gets `{"error": message}` and is closed with `code`."""

    def __init__(self, message: str, code: int = INVALID):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Config:
    sample_rate: int
    words: bool = True
    max_alternatives: int = 0
    phrase_list: tuple[str, ...] = ()  # the only words the stream reads (stream.options.phrase_options)
    charset: str | None = None  # a pen field's characters ("digits", "upper", ...: models.decoding.CHARSETS)
    lm: str | None = None  # "none" or a models.lm name: the stream's language model (pen words read with one)


@dataclass(frozen=True)
class Eof:
    pass


Message = Config | Eof | np.ndarray


def parse(message: str | bytes, config: Config, audio_started: bool) -> Message:
    """One client message -> a new Config, Eof, or int16 samples; raises ProtocolError."""
    if isinstance(message, bytes):
        if len(message) % 2:
            raise ProtocolError(f"odd number of bytes ({len(message)}): audio is 16-bit PCM", INVALID)
        return np.frombuffer(message, dtype="<i2")
    if len(message) > MAX_TEXT:  # before parsing: 4 MB of phrase_list parsed was 50 MB of strings
        raise ProtocolError(f"text message of {len(message)} characters: at most {MAX_TEXT}", TOO_BIG)
    obj = decode(message)
    if isinstance(obj, dict) and ("config" in obj or obj.keys() == {"eof"}):
        return control(obj, config, audio_started)
    raise ProtocolError("text where audio was expected (binary PCM, a config first, or {\"eof\" : 1})", UNSUPPORTED)


def decode(message: str) -> object:
    """A text message's JSON; ProtocolError (1007) if it is not JSON or nested deeper than MAX_DEPTH."""
    if depth(message) > MAX_DEPTH:
        raise ProtocolError(f"JSON nested deeper than {MAX_DEPTH} levels in a text message", INVALID)
    try:
        return json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: a safety net, the depth is checked above
        raise ProtocolError("invalid JSON in a text message", INVALID) from None


def depth(text: str) -> int:
    """The deepest nesting of JSON arrays and objects in `text`, outside strings (an upper bound for text that is
    not JSON); in C-speed passes: str.count, one regex, then a running sum over the brackets left."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # too few brackets to nest deeper: the common case costs two counts
    level = top = 0
    for m in _BRACKETS.finditer(_STRING.sub("", text)):
        level += 1 if m.group() in "[{" else -1
        if level > top:
            top = level
            if top > MAX_DEPTH:
                break  # enough to refuse it: the rest of 100,000 levels is not read
    return top


def control(obj: dict, config: Config, started: bool, rates: Rates = AUDIO_RATES) -> Config | Eof:
    """`{"eof" : 1}` or a config (before any input, its rate in `rates`) -> Eof or the new Config."""
    if obj.keys() == {"eof"}:
        return Eof()
    if started:
        raise ProtocolError("config after input: send it before the first audio (or points) message", UNSUPPORTED)
    return parse_config(obj["config"], config, rates)


def parse_config(c: object, current: Config, rates: Rates = AUDIO_RATES) -> Config:
    if not isinstance(c, dict):
        raise ProtocolError("config must be an object", INVALID)
    if "sample_rate" not in c and rates.required:
        raise ProtocolError("config without sample_rate", INVALID)
    rate = c.get("sample_rate", current.sample_rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate != rate:
        raise ProtocolError(f"sample_rate must be a number, not {json.dumps(rate)[:40]}", INVALID)
    low, high = rates.low, rates.high
    if not (low <= rate <= high) or rate != int(rate):
        raise ProtocolError(f"absurd sample_rate {rate!r}: a whole number of Hz in {low}-{high}", INVALID)
    words = c.get("words", current.words)
    alternatives = c.get("max_alternatives", current.max_alternatives)
    if alternatives not in (0, None):  # n-best lists are not what the shared pipeline decodes
        raise ProtocolError("max_alternatives > 0 is not supported", INVALID)
    phrases = c.get("phrase_list", current.phrase_list)
    if not isinstance(phrases, (list, tuple)) or not all(isinstance(p, str) for p in phrases):
        raise ProtocolError("phrase_list must be a list of strings", INVALID)
    if len(phrases) > MAX_PHRASES or sum(map(len, phrases)) > MAX_PHRASE_CHARS:
        raise ProtocolError(
            f"phrase_list too long ({len(phrases)} phrases, {sum(map(len, phrases))} characters): at most "
            f"{MAX_PHRASES} phrases, {MAX_PHRASE_CHARS} characters in all", INVALID,
        )
    choices = {}
    for name in ("charset", "lm"):
        value = c.get(name, getattr(current, name))
        if value is not None and (not isinstance(value, str) or len(value) > 64):
            raise ProtocolError(f"{name} must be a name (a string of at most 64 characters)", INVALID)
        choices[name] = value
    return Config(int(rate), bool(words), 0, tuple(phrases), **choices)


def partial(text: str) -> str:
    return json.dumps({"partial": text})


def result(event: Event | None, words: bool = True) -> str:
    """A final event as Vosk's Result; None: the empty result of an eof with nothing pending."""
    if event is None:
        return json.dumps({"text": ""})
    if not words:
        return json.dumps({"text": event.text})
    ws = [
        {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3), "conf": round(float(w.confidence), 6)}
        for w in event.words
    ]
    return json.dumps({"result": ws, "text": event.text})


def error(message: str) -> str:
    return json.dumps({"error": message})
