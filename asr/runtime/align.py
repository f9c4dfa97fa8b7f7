"""CTC forced alignment in numpy: token times for the attention decoders' hypotheses, as asr.decoding.ctc.ctc_align.

    ctc_align(log_probs (T, V), length, tokens, blank) -> [(first, last + 1) encoder frames per token] or None

Viterbi over the extended labels blank, t1, blank, t2, ..., blank (2U + 1 states): a state is entered from itself,
the one before, or, for a token unlike the one two back, over a blank. Ties go to the earlier choice (stay, then
from s-1, then from s-2), as in the torch version, so both give the same spans.
"""

from __future__ import annotations

import numpy as np

NEG_INF = float("-inf")


def ctc_align(log_probs: np.ndarray, length: int, tokens: list[int], blank: int) -> list[tuple[int, int]] | None:
    if not tokens:
        return []
    n = int(length)
    if n < len(tokens):
        return None
    ext = np.full(2 * len(tokens) + 1, blank, dtype=np.int64)
    ext[1::2] = tokens
    emit = log_probs[:n, ext].astype(np.float32)  # (frames, states)
    can_skip = np.zeros(ext.size, dtype=bool)
    can_skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    alpha = np.full(ext.size, NEG_INF, dtype=np.float32)
    alpha[:2] = emit[0, :2]
    choices = np.zeros((n, ext.size), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    candidates = np.full((3, ext.size), NEG_INF, dtype=np.float32)
    for t in range(1, n):
        candidates[0] = alpha
        candidates[1, 1:] = alpha[:-1]
        candidates[2, 2:] = np.where(can_skip[2:], alpha[:-2], NEG_INF)
        choice = candidates.argmax(axis=0)  # the first of equal maxima
        choices[t] = choice
        alpha = candidates[choice, np.arange(ext.size)] + emit[t]
    last = ext.size - 1
    s = last if alpha[last] >= alpha[last - 1] else last - 1
    if alpha[s] == NEG_INF:
        return None
    spans = [[n, 0] for _ in tokens]
    for t in range(n - 1, -1, -1):
        if s % 2 == 1:
            span = spans[s // 2]
            span[0], span[1] = t, max(span[1], t + 1)
        if t > 0:
            s -= int(choices[t, s])
    return [(a, e) for a, e in spans]
