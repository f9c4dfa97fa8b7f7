"""Mel filterbank as a few banded matmuls: shared by the torch front end (asr.features) and the numpy runtime
(asr.runtime.features), so it imports only numpy.

    mel_bands(mel (bins, n_mels)) -> [(first_filter, end_filter, first_bin, end_bin)], one per group of filters

The dense (n_fft // 2 + 1, n_mels) matrix is ~97% zeros: each triangle covers a few bins. Applying each group of
neighbouring filters to only the bins it touches does a quarter of the work, and keeps each matmul small enough that
a multi-threaded BLAS runs it on the calling thread (a dense 267 x 257 x 80 product spreads over every core, which
costs more than it gains next to other work).
"""

from __future__ import annotations

import math

import numpy as np


def mel_bands(mel: np.ndarray, cost_per_matmul: int = 1024) -> list[tuple[int, int, int, int]]:
    """Split the filters into contiguous groups, each applied as one matmul over only the bins it touches.

    Returns (first_filter, end_filter, first_bin, end_bin) per group. Filters are sorted by frequency, so a group's
    bins are one range. Groups are chosen by dynamic programming to minimise the multiply-adds per frame plus a
    fixed cost per matmul (call overhead, less efficient small GEMMs), measured in multiply-adds.
    """
    mel = np.asarray(mel)
    n_mels = mel.shape[1]
    lo, hi = [], []  # nonzero bin range [lo, hi) of each filter
    for m in range(n_mels):
        nonzero = np.flatnonzero(mel[:, m] > 0).tolist()
        # A filter narrower than an FFT bin can catch none (e.g. many mels, low_freq 0): its output is log(eps),
        # as in Kaldi. Any range gives that; use bin 0.
        lo.append(nonzero[0] if nonzero else 0)
        hi.append(nonzero[-1] + 1 if nonzero else 1)
    best = [0.0] + [math.inf] * n_mels  # best[j]: cheapest cover of filters [0, j)
    split = [0] * (n_mels + 1)  # best[j] ends with the group [split[j], j)
    bounds = {}
    for j in range(1, n_mels + 1):
        band_lo, band_hi = lo[j - 1], hi[j - 1]
        for i in range(j - 1, -1, -1):  # group [i, j), grown downwards
            band_lo, band_hi = min(band_lo, lo[i]), max(band_hi, hi[i])
            cost = best[i] + (j - i) * (band_hi - band_lo) + cost_per_matmul
            if cost < best[j]:
                best[j], split[j], bounds[j] = cost, i, (band_lo, band_hi)
    groups = []
    j = n_mels
    while j > 0:
        groups.append((split[j], j, *bounds[j]))
        j = split[j]
    return groups[::-1]
