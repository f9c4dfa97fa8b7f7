"""Bootstrap statistics for corpus error rates (Bisani & Ney 2004; Kaldi's compute-wer-bootci).

    bootstrap_interval(errors, ref_words, n_resamples=1000, seed=0) -> Interval(low, high)   (fractions, not %)
    paired_bootstrap(errors_a, errors_b, ref_words, ...) -> PairedComparison(prob_b_better, delta interval, ...)

Utterances are the unit of resampling: errors within an utterance are correlated, so resampling words would make
the interval too narrow. Each resample draws n utterances with replacement and recomputes the corpus rate
sum(errors) / sum(reference words), exactly as the headline WER is computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

# Resamples are drawn in blocks so that (block, utterances) index arrays stay around 16 MB however big the set is.
_BLOCK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def __contains__(self, x: float) -> bool:
        return self.low <= x <= self.high


@dataclass(frozen=True)
class PairedComparison:
    """System A against system B on the same utterances. delta = WER(B) - WER(A) (fractions): negative = B better."""

    wer_a: float
    wer_b: float
    delta: float
    delta_interval: Interval
    prob_b_better: float  # share of resamples where B has the lower WER (ties count half)
    n_utterances: int
    level: float = 0.95

    @property
    def verdict(self) -> str:
        tail = (1.0 - self.level) / 2
        if self.prob_b_better >= 1.0 - tail:
            return "B better"
        if self.prob_b_better <= tail:
            return "A better"
        return "no significant difference"


def _resample_index(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of (k, n) utterance indices, k resamples each, n_resamples in total; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    done = 0
    while done < n_resamples:
        k = min(block, n_resamples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def _rates(errors: np.ndarray, words: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return errors[idx].sum(axis=1) / np.maximum(words[idx].sum(axis=1), 1)


def _check(n: int, *arrays: Sequence) -> None:
    if n == 0:
        raise ValueError("bootstrap needs at least one utterance")
    if any(len(a) != n for a in arrays):
        raise ValueError(f"per-utterance arrays differ in length: {[len(a) for a in arrays]}")


def bootstrap_interval(
    errors: Sequence[int], ref_words: Sequence[int], n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Percentile bootstrap interval of the corpus error rate (a fraction) from per-utterance error and word counts."""
    e, w = np.asarray(errors, dtype=np.float64), np.asarray(ref_words, dtype=np.float64)
    _check(len(e), w)
    rates = np.concatenate([_rates(e, w, idx) for idx in _resample_index(len(e), n_resamples, seed)])
    tail = 100 * (1.0 - level) / 2
    low, high = np.percentile(rates, [tail, 100 - tail])
    return Interval(float(low), float(high))


def paired_bootstrap(
    errors_a: Sequence[int],
    errors_b: Sequence[int],
    ref_words: Sequence[int],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedComparison:
    """Paired bootstrap: both systems are scored on the same resampled utterances, so the variation that comes from
    which utterances happen to be in the set cancels and only their difference is left.

    prob_b_better is Kaldi's "probability of system 2 improving system 1": the share of resamples where B's WER is
    lower than A's; ties count half, so two identical systems give exactly 0.5."""
    a, b = np.asarray(errors_a, dtype=np.float64), np.asarray(errors_b, dtype=np.float64)
    w = np.asarray(ref_words, dtype=np.float64)
    _check(len(a), b, w)
    deltas = np.concatenate(
        [_rates(b, w, idx) - _rates(a, w, idx) for idx in _resample_index(len(a), n_resamples, seed)]
    )
    prob = float(np.mean(deltas < 0) + 0.5 * np.mean(deltas == 0))
    tail = 100 * (1.0 - level) / 2
    low, high = np.percentile(deltas, [tail, 100 - tail])
    total = max(w.sum(), 1)
    wer_a, wer_b = a.sum() / total, b.sum() / total
    return PairedComparison(
        float(wer_a), float(wer_b), float(wer_b - wer_a), Interval(float(low), float(high)), prob, len(a), level
    )
