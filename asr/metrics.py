"""Metrics: word and character error rates through jiwer, after the same normalisation on both sides.

error_rates(refs, hyps) -> ErrorRates(wer=..., cer=..., substitutions=..., deletions=..., insertions=...)
error_rates(refs, hyps, normalizer="english")   # a named normaliser (asr.text.NORMALIZERS), e.g. the model's
word_errors(refs, hyps) -> WordErrors(substitutions=Counter({("five", "nine"): 3}), deletions=..., insertions=...)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import jiwer

from asr.text import Normalizer, get_normalizer


@dataclass
class ErrorRates:
    wer: float  # percent
    cer: float  # percent
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    char_errors: int
    ref_chars: int
    sentences: int
    sentence_errors: int

    def summary(self) -> str:
        return (
            f"WER {self.wer:.2f}% (S {self.substitutions} D {self.deletions} I {self.insertions} "
            f"of {self.ref_words} words), CER {self.cer:.2f}%, "
            f"SER {100.0 * self.sentence_errors / max(self.sentences, 1):.1f}% "
            f"({self.sentences} utterances)"
        )


def _counts(refs: list[str], hyps: list[str], chars: bool) -> tuple[int, int, int, int]:
    """(S, D, I, reference length) in words or characters; empty references count hypothesis tokens as insertions."""
    s = d = i = n = 0
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    for r, h in zip(refs, hyps):
        if not r:
            i += len(h) if chars else len(h.split())
    if pairs:
        rs, hs = [p[0] for p in pairs], [p[1] for p in pairs]
        out = jiwer.process_characters(rs, hs) if chars else jiwer.process_words(rs, hs)
        s, d, i = s + out.substitutions, d + out.deletions, i + out.insertions
        n = sum(len(r) if chars else len(r.split()) for r in rs)
    return s, d, i, n


def error_rates(
    refs: Sequence[str], hyps: Sequence[str], normalize: bool = True, normalizer: str | Normalizer | None = "default"
) -> ErrorRates:
    """Scores after applying `normalizer` to references and hypotheses alike (`normalize=False` or None: only
    whitespace is squeezed)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    norm = get_normalizer(normalizer) if normalize and normalizer is not None else (lambda t: " ".join(t.split()))
    refs = [norm(r) for r in refs]
    hyps = [norm(h) for h in hyps]
    s, d, i, n = _counts(refs, hyps, chars=False)
    cs, cd, ci, cn = _counts(refs, hyps, chars=True)
    return ErrorRates(
        wer=100.0 * (s + d + i) / max(n, 1),
        cer=100.0 * (cs + cd + ci) / max(cn, 1),
        substitutions=s,
        deletions=d,
        insertions=i,
        ref_words=n,
        char_errors=cs + cd + ci,
        ref_chars=cn,
        sentences=len(refs),
        sentence_errors=sum(r != h for r, h in zip(refs, hyps)),
    )


@dataclass
class WordErrors:
    """What the errors are, from the word alignment (what sclite's dtl report lists): (ref, hyp) pairs substituted,
    reference words deleted, hypothesis words inserted, each with its count."""

    substitutions: Counter = field(default_factory=Counter)  # (ref word, hyp word) -> count
    deletions: Counter = field(default_factory=Counter)  # ref word -> count
    insertions: Counter = field(default_factory=Counter)  # hyp word -> count

    def add(self, ref: list[str], hyp: list[str], chunks: Sequence) -> None:
        """Count one utterance's errors from its jiwer alignment chunks (indices into the word lists)."""
        for c in chunks:
            r, h = ref[c.ref_start_idx : c.ref_end_idx], hyp[c.hyp_start_idx : c.hyp_end_idx]
            if c.type == "substitute":
                self.substitutions.update(zip(r, h))
            elif c.type == "delete":
                self.deletions.update(r)
            elif c.type == "insert":
                self.insertions.update(h)

    def most_common(self, n: int = 10) -> list[tuple[str, int]]:
        """The n most frequent errors, written "ref -> hyp", "ref -> (deleted)", "(inserted) -> hyp"."""
        named = Counter({f"{r} -> {h}": c for (r, h), c in self.substitutions.items()})
        named.update({f"{r} -> (deleted)": c for r, c in self.deletions.items()})
        named.update({f"(inserted) -> {h}": c for h, c in self.insertions.items()})
        return sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def word_errors(
    refs: Sequence[str], hyps: Sequence[str], normalize: bool = True, normalizer: str | Normalizer | None = "default"
) -> WordErrors:
    """The word errors behind `error_rates`' S, D and I counts, after the same normalisation."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    norm = get_normalizer(normalizer) if normalize and normalizer is not None else (lambda t: " ".join(t.split()))
    out = WordErrors()
    for ref, hyp in zip(refs, hyps):
        r, h = norm(ref).split(), norm(hyp).split()
        if not r:  # jiwer cannot align an empty reference: all of the hypothesis is inserted
            out.insertions.update(h)
        else:
            out.add(r, h, jiwer.process_words(" ".join(r), " ".join(h)).alignments[0])
    return out
