"""Features in numpy: mono waveform -> log-mel fbank or MFCC (+ deltas), as asr.features' front end in eval mode.

    compute_features(wav (samples,) float32, cfg) -> (frames, dim) float32
    compute_batch([wav, ...], cfg) -> feats (batch, max_frames, dim) float32 zero-padded, lengths (batch,) int64

`cfg` is the model's `features` section as a plain dict (dataclasses.asdict(FeatureConfig)); missing keys take
FeatureConfig's defaults, keys the front end does not use (cmvn) are ignored. The steps are Kaldi's, as in
asr/features.py: snip_edges framing (1 + (samples - win) // hop frames, none for a signal shorter than a window),
per-frame DC removal, pre-emphasis, povey/hann/hamming window, zero padding to n_fft, power spectrum, Kaldi mel
triangles, natural log floored at float32 eps; MFCC adds an orthonormal DCT-II (no lifter) and HTK deltas and
delta-deltas. Inference never dithers (the torch front end dithers only in training); a VTLN warp (test-time
search, compute_features(warp=)) reads the log-mel channels at warped frequencies as asr.features.vtlp_positions does.
CMVN is inside the exported encoder graph. Computed in float64, returned as float32.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from asr.mel_bands import mel_bands

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # Kaldi's floor on mel energies before the log
CHUNK_FRAMES = 2048  # frames per FFT pass: bounds the float64 temporaries (~8 MB) for long recordings

# asr.config.FeatureConfig's defaults (tests/test_runtime_frontend.py keeps them in step), for keys a card lacks.
DEFAULTS: dict[str, Any] = dict(
    kind="fbank",
    sample_rate=16000,
    win_ms=25.0,
    hop_ms=10.0,
    n_fft=512,
    n_mels=80,
    n_mfcc=13,
    low_freq=20.0,
    high_freq=0.0,
    window="povey",
    preemphasis=0.97,
    remove_dc=True,
    dither=0.0,
    delta_window=2,
    cmvn="global",
)


def frame_sizes(cfg: dict) -> tuple[int, int]:
    """(window, hop) in samples: 400 and 160 at 16 kHz with 25 ms / 10 ms."""
    cfg = {**DEFAULTS, **cfg}
    win = round(cfg["sample_rate"] * cfg["win_ms"] / 1000)
    hop = round(cfg["sample_rate"] * cfg["hop_ms"] / 1000)
    if not 2 <= win <= cfg["n_fft"] or hop < 1:
        raise ValueError(f"features: need 2 <= window ({win} samples) <= n_fft ({cfg['n_fft']}) and hop >= 1 ({hop})")
    return win, hop


def frame_counts(lengths: np.ndarray, win: int, hop: int) -> np.ndarray:
    """Kaldi snip_edges frame counts: 1 + (len - win) // hop, 0 when an utterance is shorter than a window."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.where(lengths >= win, (lengths - win) // hop + 1, 0)


def kaldi_window(kind: str, win: int) -> np.ndarray:
    """Symmetric windows as Kaldi defines them (denominator win - 1); povey is hann ** 0.85. (win,) float64."""
    phase = 2 * math.pi * np.arange(win) / (win - 1)
    if kind in ("povey", "hann"):
        hann = 0.5 - 0.5 * np.cos(phase)
        return hann**0.85 if kind == "povey" else hann
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    raise ValueError(f"features: unknown window '{kind}' (known: povey, hann, hamming)")


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Hz -> mel = 1127 ln(1 + f / 700) (Kaldi's scale), float64."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """The inverse of hz_to_mel."""
    return 700.0 * np.expm1(np.asarray(m, dtype=np.float64) / 1127.0)


def mel_edges(n_mels: int, sample_rate: int, low_freq: float, high_freq: float) -> np.ndarray:
    """The n_mels + 2 equally spaced mel points from low_freq to high_freq (<= 0 means Nyquist + high_freq):
    filter i rises from edge i, peaks at edge i + 1 and falls to edge i + 2. (n_mels + 2,) float64."""
    nyquist = sample_rate / 2
    if high_freq <= 0:
        high_freq += nyquist
    if not (0 <= low_freq < nyquist and 0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"features: bad mel range low_freq={low_freq}, high_freq={high_freq} (Nyquist {nyquist})")
    lo, hi = hz_to_mel(low_freq), hz_to_mel(high_freq)
    return lo + (hi - lo) * np.linspace(0.0, 1.0, n_mels + 2)


def kaldi_mel_matrix(n_mels: int, n_fft: int, sample_rate: int, low_freq: float, high_freq: float) -> np.ndarray:
    """Kaldi mel filterbank (n_fft // 2 + 1, n_mels): power spectrum @ matrix = mel energies. Triangles are linear
    in mel between n_mels + 2 equally spaced points; the Nyquist bin gets no weight (as in Kaldi)."""
    edges = mel_edges(n_mels, sample_rate, low_freq, high_freq)  # (n_mels + 2,)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1)
    bin_mel = hz_to_mel(np.arange(n_fft // 2) * sample_rate / n_fft)  # (n_fft // 2,)
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    weights = np.maximum(np.minimum(rising, falling), 0.0)  # (n_mels, n_fft // 2)
    return np.concatenate([weights, np.zeros((n_mels, 1))], axis=1).T.copy()  # (n_fft // 2 + 1, n_mels)


def vtln_positions(warp: float, n_mels: int, sample_rate: int, low_freq: float, high_freq: float) -> np.ndarray:
    """Where each mel channel of an utterance warped by `warp` reads the unwarped one, as asr.features.vtlp_positions:
    frequencies up to 0.8 * high * min(a, 1) / a map to a * f, a line above keeps the band edge put.
    -> fractional channel indices (n_mels,) in [0, n_mels - 1]."""
    edges = mel_edges(n_mels, sample_rate, low_freq, high_freq)
    step = edges[1] - edges[0]
    high = mel_to_hz(edges[-1])  # Hz
    f = mel_to_hz(edges[1:-1])  # filter centres (n_mels,) Hz
    knee_out = 0.8 * high * min(warp, 1.0)
    knee_in = knee_out / warp
    warped = np.where(f <= knee_in, warp * f, high - (high - knee_out) / (high - knee_in) * (high - f))
    # float32 like the torch front end's positions, so both read the same neighbours
    return np.clip((hz_to_mel(warped) - edges[1]) / step, 0, n_mels - 1).astype(np.float32)


def warp_channels(feats: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """feats (frames, channels) -> feats read at fractional channel `positions` (channels,), linear interpolation."""
    lo = np.minimum(np.floor(positions).astype(np.int64), feats.shape[1] - 2)  # (channels,)
    frac = (positions - lo).astype(feats.dtype)
    return feats[:, lo] + frac * (feats[:, lo + 1] - feats[:, lo])


def dct_matrix(n_mels: int, n_ceps: int) -> np.ndarray:
    """Orthonormal DCT-II as a (n_mels, n_ceps) matrix (scipy norm='ortho'), c0 included."""
    m = np.arange(n_mels)
    k = np.arange(n_ceps)[:, None]
    basis = np.cos(math.pi / n_mels * (m + 0.5) * k) * math.sqrt(2.0 / n_mels)  # (n_ceps, n_mels)
    basis[0] /= math.sqrt(2.0)
    return basis.T.copy()


class _Setup:
    """A config's checked sizes and fixed matrices, built once per distinct config (see _setup)."""

    def __init__(self, cfg: dict):
        self.kind = cfg["kind"]
        if self.kind not in ("fbank", "mfcc"):
            raise ValueError(f"features.kind: unknown feature kind '{self.kind}' (known: fbank, mfcc)")
        self.win, self.hop = frame_sizes(cfg)
        self.n_fft, self.n_mels = int(cfg["n_fft"]), int(cfg["n_mels"])
        if self.n_fft % 2:
            raise ValueError(f"features: n_fft must be even, got {self.n_fft}")
        self.preemphasis = float(cfg["preemphasis"])
        if not 0.0 <= self.preemphasis <= 1.0:
            raise ValueError(f"features: preemphasis must be in [0, 1], got {self.preemphasis}")
        self.remove_dc = bool(cfg["remove_dc"])
        self.window = kaldi_window(cfg["window"], self.win)  # (win,)
        self.mel_range = (int(cfg["sample_rate"]), float(cfg["low_freq"]), float(cfg["high_freq"]))
        mel = kaldi_mel_matrix(self.n_mels, self.n_fft, *self.mel_range)
        # (first_filter, end_filter, mel rows of the bins it touches (bins, filters)) per band, as asr.features
        self.bands = [(m0, m1, b0, b1, mel[b0:b1, m0:m1].copy()) for m0, m1, b0, b1 in mel_bands(mel)]
        self.dim = self.n_mels
        if self.kind == "mfcc":
            self.n_mfcc, self.delta_window = int(cfg["n_mfcc"]), int(cfg["delta_window"])
            if not 1 <= self.n_mfcc <= self.n_mels:
                raise ValueError(
                    f"features: need 1 <= n_mfcc <= n_mels, got n_mfcc={self.n_mfcc}, n_mels={self.n_mels}"
                )
            if self.delta_window < 1:
                raise ValueError(f"features: delta_window must be >= 1, got {self.delta_window}")
            self.dct = dct_matrix(self.n_mels, self.n_mfcc)  # (n_mels, n_mfcc)
            self.dim = 3 * self.n_mfcc


@functools.lru_cache(maxsize=8)
def _cached_setup(items: tuple) -> _Setup:
    return _Setup(dict(items))


def _setup(cfg: dict) -> _Setup:
    full = {**DEFAULTS, **cfg}
    # Only hashable values can key the cache; a config is a flat dict of scalars.
    return _cached_setup(tuple(sorted((k, v) for k, v in full.items() if k in DEFAULTS)))


def feature_dim(cfg: dict) -> int:
    """Feature dimension a config gives: n_mels for fbank, 3 * n_mfcc for MFCC."""
    return _setup(cfg).dim


def _log_mel(x: np.ndarray, s: _Setup) -> np.ndarray:
    """(samples,) float64 -> log-mel (frames, n_mels) float64."""
    (n_frames,) = frame_counts(np.array([x.size]), s.win, s.hop)
    out = np.empty((n_frames, s.n_mels))
    if n_frames == 0:
        return out
    c = s.preemphasis
    # Kaldi pre-emphasises each frame after removing its mean m: y[j] = (x[j] - m) - c (x[j-1] - m) for j >= 1, and
    # y[0] = (1 - c)(x[0] - m). That is the frame of the once pre-emphasised signal e[n] = x[n] - c x[n-1] minus
    # (1 - c) m, except sample 0: so the signal is pre-emphasised once (frames overlap 2.5x), as asr.features does.
    emph = np.empty_like(x)
    emph[1:] = x[1:] - c * x[:-1]
    emph[0] = x[0]  # overwritten below: every frame's sample 0 is patched
    frames_view = np.lib.stride_tricks.sliding_window_view(emph, s.win)[:: s.hop][:n_frames]  # (frames, win), no copy
    starts = np.arange(n_frames) * s.hop
    if s.remove_dc:
        total = np.concatenate([[0.0], np.cumsum(x)])
        mean = (total[starts + s.win] - total[starts]) / s.win  # (frames,) each frame's mean, from one cumsum
    else:
        mean = np.zeros(n_frames)
    for start in range(0, n_frames, CHUNK_FRAMES):
        end = min(start + CHUNK_FRAMES, n_frames)
        m = mean[start:end, None]  # (n, 1)
        frames = (frames_view[start:end] - (1.0 - c) * m) * s.window  # (n, win) pre-emphasised, DC off, windowed
        frames[:, 0] = (1.0 - c) * (x[starts[start:end]] - m[:, 0]) * s.window[0]
        spectrum = np.fft.rfft(frames, n=s.n_fft)  # zero-padded to n_fft: (n, n_fft // 2 + 1)
        power = spectrum.real**2 + spectrum.imag**2
        mel = out[start:end]  # (n, n_mels): each band's energies, then their log, in place
        for m0, m1, b0, b1, weights in s.bands:
            np.matmul(power[:, b0:b1], weights, out=mel[:, m0:m1])
        np.log(np.maximum(mel, FLOAT32_EPS), out=mel)
    return out


def deltas(feats: np.ndarray, half_width: int) -> np.ndarray:
    """HTK/Kaldi regression deltas d[t] = sum_n n (x[t+n] - x[t-n]) / (2 sum_n n^2), n = 1..half_width, over one
    utterance (frames, dim); neighbours past either end are clamped to the edge frame (edge frames replicated)."""
    n = feats.shape[0]
    denom = 2 * sum(k * k for k in range(1, half_width + 1))
    t = np.arange(n)
    out = np.zeros_like(feats)
    for k in range(1, half_width + 1):
        ahead = feats[np.minimum(t + k, n - 1)]
        behind = feats[np.maximum(t - k, 0)]
        out += k * (ahead - behind)
    return out / denom


def compute_features(wav: np.ndarray, cfg: dict, warp: float | None = None) -> np.ndarray:
    """A mono waveform (samples,) in [-1, 1] -> features (frames, dim) float32; (0, dim) when shorter than a window.

    warp: a VTLN factor (None or 1.0: none); the log-mel channels are then read at the warped frequencies, before the
    DCT, as the torch front end does for test-time VTLN."""
    s = _setup(cfg)
    x = np.asarray(wav)
    if x.ndim != 1:
        raise ValueError(f"compute_features expects a mono waveform (samples,), got shape {x.shape}")
    # Round to float32 first, as the torch front end does, then work in float64.
    x = x.astype(np.float32, copy=False).astype(np.float64)
    logmel = _log_mel(x, s)  # (frames, n_mels)
    if warp is not None and warp != 1.0 and logmel.shape[0]:
        logmel = warp_channels(logmel, vtln_positions(float(warp), s.n_mels, *s.mel_range))
    if s.kind == "fbank":
        return logmel.astype(np.float32)
    ceps = logmel @ s.dct  # (frames, n_mfcc)
    d1 = deltas(ceps, s.delta_window)
    d2 = deltas(d1, s.delta_window)  # HTK's delta-deltas: the regression applied to the deltas
    return np.concatenate([ceps, d1, d2], axis=1).astype(np.float32)  # (frames, 3 * n_mfcc)


def compute_batch(wavs: list[np.ndarray], cfg: dict, warp: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms [(samples_i,)] -> feats (batch, max_frames, dim) float32, frames past each length 0; lengths
    (batch,) int64. warp: one VTLN factor for the whole batch (compute_features)."""
    dim = feature_dim(cfg)
    per_utt = [compute_features(w, cfg, warp) for w in wavs]
    lengths = np.array([f.shape[0] for f in per_utt], dtype=np.int64)
    feats = np.zeros((len(per_utt), int(lengths.max(initial=0)), dim), dtype=np.float32)
    for i, f in enumerate(per_utt):
        feats[i, : f.shape[0]] = f
    return feats, lengths
