"""Token ids -> text and words, from the vocabulary in model.json (no sentencepiece needed to decode).

    Vocabulary(card["tokenizer"]).decode(ids) -> str          as asr.text.Tokenizer.decode
    Vocabulary(...).words(ids) -> [(word, first, last + 1)]   as asr.text.Tokenizer.words

Characters join as they are; SentencePiece pieces join with "▁" read as a space, which is what SentencePiece's own
decoder does for a model trained with the identity normalisation (asr.text.SentencePieceTokenizer trains so).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

N_SPECIALS = 5  # <blank> <pad> <sos> <eos> <unk> (asr.text.SPECIALS), ids 0-4
EOS = 3
_SPACES = re.compile(r"\s+")


class Vocabulary:
    def __init__(self, tokenizer: dict):
        self.kind = tokenizer["kind"]
        self.tokens: list[str] = list(tokenizer["tokens"])

    def __len__(self) -> int:
        return len(self.tokens)

    def content_ids(self, ids: Iterable[int]) -> list[int]:
        """The ids up to the first <eos>, without specials or out-of-vocabulary ids."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if N_SPECIALS <= i < len(self.tokens):
                out.append(i)
        return out

    def _join(self, ids: list[int]) -> str:
        text = "".join(self.tokens[i] for i in ids)
        return text if self.kind == "char" else text.replace("▁", " ")

    def decode(self, ids: Iterable[int]) -> str:
        return _SPACES.sub(" ", self._join(self.content_ids(ids))).strip()

    def words(self, ids: Sequence[int]) -> list[tuple[str, int, int]]:
        """(text, first, last + 1) per word, indexes into `ids`: a word starts after a space token (characters) or at
        a piece that starts with "▁"."""
        out: list[tuple[str, int, int]] = []
        current: list[int] = []

        def flush() -> None:
            text = self._join([int(ids[i]) for i in current]).strip()
            if text:
                out.append((text, current[0], current[-1] + 1))
            current.clear()

        for i, t in enumerate(ids):
            t = int(t)
            if t == EOS:
                break
            if not N_SPECIALS <= t < len(self.tokens):
                continue
            piece = self.tokens[t]
            if piece.isspace() or piece.startswith("▁"):
                flush()
            if piece.strip().strip("▁"):
                current.append(i)
        flush()
        return out
