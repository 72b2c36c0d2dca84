"""Which decoding a recognizer uses: the checkpoint's recommendation, changed by the caller's choices."""

from __future__ import annotations

from dataclasses import replace

from models.checkpoint import Checkpoint
from models.decoding import DecodeOptions

LEXICON_BEAM = 16  # the beam a lexicon or an LM gets when no width is asked for


def recommended_options(checkpoint: Checkpoint) -> DecodeOptions:
    """The decoding a model was made for (checkpoint meta "decoding": beam width and a word list), else greedy."""
    spec = checkpoint.meta.get("decoding") or {}
    words = tuple(spec["words"]) if spec.get("words") else None
    return DecodeOptions(beam=int(spec.get("beam", 0)), words=words)


def resolve_options(
    checkpoint: Checkpoint,
    beam: int | None = None,
    lexicon: str | None = None,
    lm: str | None = None,
    charset: str | None = None,
) -> DecodeOptions:
    """The recommended decoding with the caller's changes: `beam` (0: greedy), a `lexicon` file ("none": no
    lexicon and no word list), a KenLM `lm`, a `charset` (models.decoding.CHARSETS; "all": no restriction). A
    lexicon or an LM without a beam width gets LEXICON_BEAM."""
    if beam is not None and beam < 0:
        raise ValueError(f"beam width must be 0 (greedy) or more, not {beam}")
    changes: dict = {}
    if beam is not None:
        changes["beam"] = beam
    if lexicon:
        changes.update(lexicon=None if lexicon == "none" else lexicon, words=None)
    if lm:
        changes["lm"] = lm
    if charset not in (None, "all"):
        changes["charset"] = charset
    if (lexicon not in (None, "none") or lm) and beam is None:
        changes["beam"] = LEXICON_BEAM
    return replace(recommended_options(checkpoint), **changes)
