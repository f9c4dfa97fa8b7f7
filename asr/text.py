"""Text: normalisation and tokenizers (text <-> token ids).

    normalize_text("Call Mom, NOW!") -> "call mom now"
    CharTokenizer.encode("call") -> [ids...]; .decode(ids) -> "call"

Special tokens come first in every vocabulary: <blank> (CTC), <pad>, <sos>, <eos> (the stop token), <unk>.
The same normalisation is applied to references and hypotheses before scoring.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Iterable, Sequence

BLANK, PAD, SOS, EOS, UNK = "<blank>", "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = [BLANK, PAD, SOS, EOS, UNK]

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
_DASHES = re.compile(r"[-\u2010-\u2015_/]")
_DROP = re.compile(r"[^\w' ]")  # keeps letters and digits of any script, apostrophes, spaces
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower-case, unify apostrophes, dashes to spaces, drop other punctuation, squeeze whitespace."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    text = _DASHES.sub(" ", text)
    text = _DROP.sub("", _SPACES.sub(" ", text))
    text = re.sub(r"(^|\s)'+|'+(\s|$)", r"\1\2", text)  # quotes around words, not contractions
    return _SPACES.sub(" ", text).strip()


class CharTokenizer:
    """Characters (space, apostrophe, a-z, plus any other character seen in training text) + specials."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        self.tokens: list[str] = SPECIALS + [c for c in chars if c not in SPECIALS]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.blank, self.pad, self.sos, self.eos, self.unk = (self.index[t] for t in SPECIALS)

    @classmethod
    def build(cls, texts: Iterable[str]) -> "CharTokenizer":
        chars = set(" '" + string.ascii_lowercase)
        for t in texts:
            chars.update(normalize_text(t))
        return cls(sorted(chars))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, self.unk) for c in normalize_text(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text; stops at <eos>, drops other specials."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i >= len(SPECIALS) and i < len(self.tokens):
                out.append(self.tokens[i])
        return _SPACES.sub(" ", "".join(out)).strip()

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.tokens)}


def tokenizer_from_dict(d: dict) -> CharTokenizer:
    if d.get("kind") != "char":
        raise ValueError(f"unknown tokenizer kind {d.get('kind')!r}")
    tokens = d["tokens"]
    if tokens[: len(SPECIALS)] != SPECIALS:
        raise ValueError("tokenizer vocabulary does not start with the special tokens")
    return CharTokenizer(tokens[len(SPECIALS):])
