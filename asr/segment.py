"""Cutting long recordings at pauses: an energy-based voice activity detector.

    split_on_pauses(wav (samples,), sample_rate, max_seconds) -> [Segment(start, end), ...] in seconds

The recording is cut into 10 ms frames and each frame's energy taken in dB. A frame is speech when it is loud
*relative to this recording*: above all of
    - its loud level (95th percentile of the frame energies) - `level_db`,
    - its noise floor (10th percentile) + `noise_db`, so stationary noise alone is never speech,
    - `min_dbfs`, so digital silence or dither is never speech however quiet the recording.
Speech runs separated by less than `min_silence` seconds are joined (the hangover: a short pause inside a phrase
is not a cut point); runs shorter than `min_speech` are dropped (clicks); each run is padded by `pad` seconds so
word onsets and fades are kept. A segment longer than `max_seconds` (continuous speech with no pause) is cut at
its quietest point in the second half of the allowed length, so every segment is at most `max_seconds` long.

Silence-only input gives no segments. numpy only (a torch tensor is taken as it is): the torch-free runtime
(asr.runtime) cuts with this same module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

MAX_CHUNK_SECONDS = 20.0
MIN_CHUNK_SECONDS = 0.5  # the smallest `max_seconds`: shorter chunks hold too little speech to decode
FRAME_SECONDS = 0.01


@dataclass(frozen=True)
class Segment:
    """A stretch of a recording, in seconds from its start."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def split_on_pauses(
    wav: "np.ndarray | torch.Tensor",
    sample_rate: int,
    max_seconds: float = MAX_CHUNK_SECONDS,
    *,
    level_db: float = 40.0,
    noise_db: float = 10.0,
    min_dbfs: float = -70.0,
    min_silence: float = 0.5,
    min_speech: float = 0.1,
    pad: float = 0.1,
) -> list[Segment]:
    """A mono waveform (samples,) -> the speech segments, in order, each at most `max_seconds` long.

    Segments never overlap; consecutive ones may touch where continuous speech had to be cut."""
    if not max_seconds >= MIN_CHUNK_SECONDS:
        raise ValueError(f"the maximum chunk length must be at least {MIN_CHUNK_SECONDS} s, got {max_seconds}")
    x = wav.detach().cpu().numpy() if hasattr(wav, "detach") else np.asarray(wav)  # a tensor, without importing torch
    x = np.asarray(x, dtype=np.float32).reshape(-1)  # no copy for float32: an hour of audio is 230 MB already
    hop = max(1, round(FRAME_SECONDS * sample_rate))
    if x.size == 0:
        return []
    db = frame_energy_db(x, hop)
    threshold = max(np.percentile(db, 95) - level_db, np.percentile(db, 10) + noise_db, min_dbfs)

    def frames(seconds: float) -> int:
        return round(seconds / FRAME_SECONDS)

    runs = _runs(db > threshold)
    runs = _join_close(runs, frames(min_silence))
    runs = [(s, e) for s, e in runs if e - s >= frames(min_speech)]
    padded = [(max(0, s - frames(pad)), min(len(db), e + frames(pad))) for s, e in runs]
    runs = _join_close(padded, 1)  # padding may make neighbours overlap

    # The quietest point is judged on energy smoothed over 50 ms, so a cut lands in a dip, not between two periods.
    smooth = np.convolve(db, np.ones(5) / 5, mode="same")
    max_frames = max(2, int(max_seconds / FRAME_SECONDS))
    pieces = [p for s, e in runs for p in _limit_length(s, e, smooth, max_frames)]
    n = x.size
    return [Segment(s * hop / sample_rate, min(e * hop, n) / sample_rate) for s, e in pieces]


def frame_energy_db(x: np.ndarray, hop: int) -> np.ndarray:
    """(samples,) -> mean-square energy of each `hop`-sample frame in dB full scale (a last partial frame counts)."""
    n_full = x.size // hop
    frames = x[: n_full * hop].reshape(n_full, hop)
    power = np.einsum("ij,ij->i", frames, frames) / hop  # no squared copy of the whole signal
    tail = x[n_full * hop :]
    if tail.size:
        power = np.append(power, np.mean(tail * tail))
    return 10.0 * np.log10(power.astype(np.float64) + 1e-10)  # floor -100 dB: digital silence stays finite


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Boolean (frames,) -> [(start, end)) of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _join_close(runs: list[tuple[int, int]], min_gap: int) -> list[tuple[int, int]]:
    """Merge runs whose gap is shorter than `min_gap` frames."""
    out: list[tuple[int, int]] = []
    for s, e in runs:
        if out and s - out[-1][1] < min_gap:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _limit_length(start: int, end: int, smooth_db: np.ndarray, max_frames: int) -> list[tuple[int, int]]:
    """Cut [start, end) into pieces of at most `max_frames`, each cut at the quietest frame in the second half of
    the allowed length (so no piece is needlessly short)."""
    pieces = []
    while end - start > max_frames:
        lo, hi = start + max_frames // 2, start + max_frames
        cut = hi - 1 - int(np.argmin(smooth_db[lo:hi][::-1]))  # on a tie, the cut nearest the limit
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces
