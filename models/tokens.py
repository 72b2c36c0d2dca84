"""Token sets for CTC: index 0 is the blank, and '|' marks a word boundary (flashlight's convention)."""

from __future__ import annotations

import re
import string
import unicodedata

BLANK = "<blank>"
WORD_BOUNDARY = "|"
CHARACTERS = [BLANK, WORD_BOUNDARY, *"abcdefghijklmnopqrstuvwxyz'"]
# Handwriting: both cases, digits and the common punctuation (what UNIPEN's words hold but for rare signs).
PUNCTUATION = ".,'-()/\":;!?&+"
PEN_CHARACTERS = [BLANK, WORD_BOUNDARY, *string.ascii_lowercase, *string.ascii_uppercase, *string.digits, *PUNCTUATION]


def normalize_text(text: str) -> str:
    """Lower-case letters, apostrophes and single spaces: what a character model can spell."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z' ]+", " ", text.replace("-", " "))
    return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


def normalize_cased(text: str) -> str:
    """ASCII with case and punctuation kept, single spaces: what a cased (handwriting) token set spells."""
    return " ".join(unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().split())


class Tokenizer:
    """A token set; one with upper-case letters is cased (text kept as written), else text is lower-cased
    (`normalize_text`, as the speech models were trained)."""

    def __init__(self, tokens: list[str]):
        if not tokens or tokens[0] != BLANK or WORD_BOUNDARY not in tokens:
            raise ValueError(f"a token set starts with {BLANK!r} and contains {WORD_BOUNDARY!r}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("token set has duplicates")
        self.tokens = list(tokens)
        self._index = {t: i for i, t in enumerate(tokens)}
        self.blank = 0
        self.boundary = self._index[WORD_BOUNDARY]
        self.cased = any(len(t) == 1 and t.isupper() for t in tokens)

    def normalize(self, text: str) -> str:
        return normalize_cased(text) if self.cased else normalize_text(text)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Normalised text -> ids, words joined by the boundary token; unknown characters are an error."""
        ids = []
        for i, word in enumerate(self.normalize(text).split()):
            if i:
                ids.append(self.boundary)
            try:
                ids.extend(self._index[c] for c in word)
            except KeyError as e:
                raise ValueError(f"character {e.args[0]!r} of {text!r} is not in the token set") from None
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(" " if i == self.boundary else self.tokens[i] for i in ids if i != self.blank).strip()
