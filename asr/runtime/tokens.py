"""Token ids -> text and words, from the vocabulary in model.json (no sentencepiece needed to decode).

    Vocabulary(card["tokenizer"]).decode(ids) -> str          asr.text.Tokenizer.decode
    Vocabulary(...).words(ids) -> [(word, first, last + 1)]   asr.text.Tokenizer.words

A Vocabulary is an asr.text.Tokenizer (the same special ids, decode and word split) that joins tokens without a
SentencePiece model: characters as they are, pieces with "▁" read as a space, which is what SentencePiece's own
decoder does for a model trained with the identity normalisation (asr.text.SentencePieceTokenizer trains so).
It decodes only: encoding text needs the tokenizer itself (asr.text), which the runtime never does.
"""

from __future__ import annotations

from asr.text import Tokenizer


class Vocabulary(Tokenizer):
    def __init__(self, tokenizer: dict):
        super().__init__(tokenizer["tokens"], tokenizer.get("normalizer", "default"))
        self.kind = tokenizer["kind"]

    def _join(self, ids: list[int]) -> str:
        text = "".join(self.tokens[i] for i in ids)
        return text if self.kind == "char" else text.replace("▁", " ")
