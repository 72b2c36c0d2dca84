"""Which decoding a recognizer uses: the checkpoint's recommendation, changed by the caller's choices.

A cased pen model (English handwriting) reads words with the English character LM by default (models.lm, weights
chosen on validation writers); a `charset` stream (a field of digits or letters) never does."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from models.checkpoint import Checkpoint
from models.decoding import CHARSETS, DecodeOptions
from models.lm import LM_NAMES, TUNED
from models.tokens import Tokenizer

LEXICON_BEAM = 16  # the beam a lexicon or an LM gets when no width is asked for
PEN_LM = "chars"  # the LM a cased pen model's streams read words with unless told otherwise (BENCHMARKS.md)


def default_lm(checkpoint: Checkpoint) -> str | None:
    """The checkpoint's own choice (meta "decoding": {"lm": name or null}), else PEN_LM for a cased pen model (an
    English LM spells with both cases, digits and punctuation), else none."""
    spec = checkpoint.meta.get("decoding") or {}
    if "lm" in spec:
        return spec["lm"]
    return PEN_LM if checkpoint.frontend == "pen" and checkpoint.tokenizer.cased else None


def recommended_options(checkpoint: Checkpoint, lm: bool = True) -> DecodeOptions:
    """The decoding a model was made for (checkpoint meta "decoding": beam width and a word list), else greedy; with
    its default LM and that LM's tuned settings unless `lm` is False."""
    spec = checkpoint.meta.get("decoding") or {}
    words = tuple(spec["words"]) if spec.get("words") else None
    options = DecodeOptions(beam=int(spec.get("beam", 0)), words=words)
    name = default_lm(checkpoint) if lm else None
    return with_lm(options, name) if name else options


def with_lm(options: DecodeOptions, lm: str) -> DecodeOptions:
    """`options` reading with LM `lm`: a models.lm name gets its tuned beam and weights (models.lm.TUNED), a file
    the options' own weights (and LEXICON_BEAM if greedy)."""
    if lm in LM_NAMES:
        return replace(options, lm=lm, lexicon=None, words=None, **TUNED[lm])
    return replace(options, lm=lm, beam=options.beam or LEXICON_BEAM)


def lm_choice(text: str) -> str:
    """A command line's or a client config's LM: "none", a models.lm name, or an existing KenLM/ARPA file."""
    if text in ("none", *LM_NAMES) or Path(text).is_file():
        return text
    raise ValueError(f"{text}: not a language model ({', '.join(('none', *LM_NAMES))} or a KenLM/ARPA file)")


def resolve_options(
    checkpoint: Checkpoint,
    beam: int | None = None,
    lexicon: str | None = None,
    lm: str | None = None,
    charset: str | None = None,
) -> DecodeOptions:
    """The recommended decoding with the caller's changes: `beam` (0: greedy), a `lexicon` file ("none": no
    lexicon and no word list), an `lm` (lm_choice; "none": off), a `charset` (models.decoding.CHARSETS; "all": no
    restriction). A charset stream, a lexicon or `beam` 0 reads without the default LM; naming an LM for a charset or
    with `beam` 0 is an error. A lexicon or an LM file without a beam width gets LEXICON_BEAM."""
    if beam is not None and beam < 0:
        raise ValueError(f"beam width must be 0 (greedy) or more, not {beam}")
    restricted = charset not in (None, "all")
    if restricted and lm not in (None, "none"):
        raise ValueError(f"--lm {lm}: a language model reads words, not a --charset {charset} field")
    if lm in LM_NAMES and lexicon not in (None, "none"):
        raise ValueError(f"--lm {lm} brings its own lexicon: not with --lexicon {lexicon}")
    explicit = lm not in (None, "none")
    if explicit and beam == 0:
        raise ValueError(f"--lm {lm} reads through a beam search: not with --beam 0 (greedy)")
    lexicon_given = lexicon not in (None, "none")
    options = recommended_options(checkpoint, lm=not (restricted or lexicon_given or lm == "none" or explicit or beam == 0))
    changes: dict = {}
    if lexicon:
        changes.update(lexicon=None if lexicon == "none" else lexicon, words=None)
    if restricted:
        changes["charset"] = charset
    options = replace(options, **changes)
    if explicit:
        options = with_lm(options, lm)
    elif lexicon not in (None, "none") and beam is None:
        options = replace(options, beam=LEXICON_BEAM)
    return replace(options, beam=beam) if beam is not None else options


def phrase_options(options: DecodeOptions, tokenizer: Tokenizer, phrases: tuple[str, ...]) -> DecodeOptions:
    """A stream's decoding restricted to the words of Vosk's `phrase_list` (no phrases: `options` as they are).

    The stream reads only those words (lower-cased for a model without case), each spelled in the model's tokens,
    through the lexicon beam; a named LM is left out (it reads English words, not a list). Phrases restrict the
    words, not their order. Vosk's "[unk]" (any other word) is not supported: speech outside the list reads as its
    nearest words or as nothing. A word the model cannot spell (a digit for a model of letters) is a ValueError
    naming it."""
    words = sorted({w for p in phrases for w in (p if tokenizer.cased else p.lower()).split() if w != "[unk]"})
    if not words:
        return options
    spellable = set(tokenizer.tokens) - {tokenizer.tokens[tokenizer.blank], tokenizer.tokens[tokenizer.boundary]}
    for word in words:
        if not set(word) <= spellable:
            raise ValueError(f"phrase_list word {word!r} cannot be spelled with the model's tokens")
    return replace(options, words=tuple(words), lexicon=None, lm=None, beam=options.beam or LEXICON_BEAM, charset=None,
                   token_score=0.0, word_score=0.0)  # (an LM's tuned bonuses: not for a word list)


def client_options(checkpoint: Checkpoint, base: DecodeOptions, phrases: tuple[str, ...] = (), charset: str | None = None,
                   lm: str | None = None) -> DecodeOptions | None:
    """A network client's own decoding from its config (None: it asks for nothing of its own, and reads with `base`,
    the server's). `charset` a models.decoding.CHARSETS name and `lm` "none" or a models.lm name (never a file: a
    client names no path on the server) change the checkpoint's recommendation as `resolve_options` does; a
    `phrase_list` then restricts the words (`phrase_options`). ValueError says what is wrong."""
    if not phrases and charset is None and lm is None:
        return None
    if lm is not None and lm not in ("none", *LM_NAMES):
        raise ValueError(f"lm {lm!r}: a client may choose {', '.join(('none', *LM_NAMES))}")
    if charset is not None and charset not in CHARSETS:
        raise ValueError(f"charset {charset!r}: one of {', '.join(CHARSETS)}")
    if CHARSETS.get(charset) and not set(CHARSETS[charset]) & set(checkpoint.tokenizer.tokens):
        raise ValueError(f"charset {charset!r}: the model writes none of its characters")  # (at the config, not later)
    options = base if charset is None and lm is None else resolve_options(checkpoint, lm=lm, charset=charset)
    return phrase_options(options, checkpoint.tokenizer, phrases)
