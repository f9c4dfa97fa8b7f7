"""Features: padded waveform batch -> log-mel fbank or MFCC (+ deltas), global CMVN, SpecAugment.

    Fbank(cfg)(wav (batch, samples) float in [-1, 1], lengths (batch,))
        -> feats (batch, frames, n_mels), frame_lengths (batch,)
    MFCC(cfg)(wav, lengths) -> feats (batch, frames, 3 * n_mfcc) [cepstra, deltas, delta-deltas], frame_lengths
    Fbank/MFCC(cfg)(wav, lengths, warp=(batch,) factors) -> the same with VTLP: each utterance's frequency axis
        warped by its factor (training augmentation; see vtlp_positions)
    make_frontend(cfg) -> Fbank or MFCC, chosen by cfg.kind
    GlobalCMVN(dim)(feats, lengths) -> (feats - mean) / std, padding kept at 0; stats from CMVNStats
        (utterance_mean=True: each utterance's own mean removed first)
    SpecAugment(cfg, n_features)(feats, lengths) -> feats with frequency/time masks set to 0 (training only)

The fbank follows Kaldi's compute-fbank-feats (and torchaudio.compliance.kaldi.fbank): snip_edges framing
(frames = 1 + (samples - win) // hop, from each utterance's true length), dither, per-frame DC removal,
pre-emphasis, povey/hann/hamming window, zero-padding to n_fft, power spectrum, mel triangles linear in
1127 ln(1 + f/700), natural log floored at float32 eps; no energy term. Frames past an utterance's length are 0.

Speed (one CPU thread does > 5,000 audio-seconds per second; see scripts/bench_features.py): only the valid frames
of a padded batch are computed, packed into chunks of one reused (frames, n_fft) buffer; pre-emphasis and DC removal
are folded into signal-level and rank-1 operations; the mel filterbank is applied as a few banded matmuls over only
the FFT bins each group of filters touches (the dense 257 x 80 matrix is 97% zeros; 4 bands do 23% of its work).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr.config import FeatureConfig, SpecAugmentConfig
from asr.mel_bands import mel_bands

FLOAT32_EPS = torch.finfo(torch.float32).eps  # Kaldi's floor on mel energies before the log


# ---------------------------------------------------------------------------------------------------------------
# Fixed matrices (computed once in float64, stored as float32 buffers)


def frame_sizes(cfg: FeatureConfig) -> tuple[int, int]:
    """(window, hop) in samples: 400 and 160 at 16 kHz with 25 ms / 10 ms."""
    win = round(cfg.sample_rate * cfg.win_ms / 1000)
    hop = round(cfg.sample_rate * cfg.hop_ms / 1000)
    if not 2 <= win <= cfg.n_fft or hop < 1:
        raise ValueError(f"features: need 2 <= window ({win} samples) <= n_fft ({cfg.n_fft}) and hop >= 1 ({hop})")
    return win, hop


def frame_counts(lengths: Tensor, win: int, hop: int) -> Tensor:
    """Kaldi snip_edges frame counts: 1 + (len - win) // hop, 0 when an utterance is shorter than a window."""
    return torch.where(lengths >= win, torch.div(lengths - win, hop, rounding_mode="floor") + 1, 0)


def kaldi_window(kind: str, win: int) -> Tensor:
    """Symmetric windows as Kaldi defines them (torch's periodic=False); povey is hann ** 0.85."""
    hann = torch.hann_window(win, periodic=False, dtype=torch.float64)
    if kind == "povey":
        return hann.pow(0.85)
    if kind == "hann":
        return hann
    if kind == "hamming":
        return torch.hamming_window(win, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64)
    raise ValueError(f"features: unknown window '{kind}' (known: povey, hann, hamming)")


def hz_to_mel(f: Tensor | float) -> Tensor:
    """Hz -> mel = 1127 ln(1 + f / 700) (Kaldi's scale), float64."""
    return 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    """The inverse of hz_to_mel."""
    return 700.0 * torch.expm1(m / 1127.0)


def mel_edges(n_mels: int, sample_rate: int, low_freq: float, high_freq: float) -> Tensor:
    """The n_mels + 2 equally spaced mel points from low_freq to high_freq (<= 0 means Nyquist + high_freq):
    filter i rises from edge i, peaks at edge i + 1 and falls to edge i + 2. (n_mels + 2,) float64."""
    nyquist = sample_rate / 2
    if high_freq <= 0:
        high_freq += nyquist
    if not (0 <= low_freq < nyquist and 0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"features: bad mel range low_freq={low_freq}, high_freq={high_freq} (Nyquist {nyquist})")
    lo, hi = hz_to_mel(low_freq), hz_to_mel(high_freq)
    return lo + (hi - lo) * torch.linspace(0, 1, n_mels + 2, dtype=torch.float64)


def kaldi_mel_matrix(n_mels: int, n_fft: int, sample_rate: int, low_freq: float, high_freq: float) -> Tensor:
    """Kaldi mel filterbank as a (n_fft // 2 + 1, n_mels) matrix: power spectrum @ matrix = mel energies.

    Triangles are linear in mel, between the points of mel_edges. Like Kaldi, the Nyquist bin gets no weight.
    """
    edges = mel_edges(n_mels, sample_rate, low_freq, high_freq)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1)
    bin_mel = hz_to_mel(torch.arange(n_fft // 2, dtype=torch.float64) * sample_rate / n_fft)  # (n_fft // 2,)
    up = (bin_mel - left) / (centre - left)
    down = (right - bin_mel) / (right - centre)
    weights = torch.clamp(torch.minimum(up, down), min=0)  # (n_mels, n_fft // 2)
    return F.pad(weights, (0, 1)).T.contiguous()  # + Nyquist column -> (n_fft // 2 + 1, n_mels)


def dct_matrix(n_mels: int, n_ceps: int) -> Tensor:
    """Orthonormal DCT-II as a (n_mels, n_ceps) matrix (scipy/librosa norm='ortho'), c0 included."""
    m = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_ceps, dtype=torch.float64)[:, None]
    basis = torch.cos(math.pi / n_mels * (m + 0.5) * k) * math.sqrt(2.0 / n_mels)  # (n_ceps, n_mels)
    basis[0] /= math.sqrt(2.0)
    return basis.T.contiguous()


# ---------------------------------------------------------------------------------------------------------------
# Front ends


class Fbank(nn.Module):
    """Kaldi-compatible log-mel filterbank over a padded waveform batch (see the module docstring)."""

    # Valid frames are processed in chunks of at most this many (2048 frames = 20 s of audio, ~4 MB per
    # temporary). One chunk per batch would allocate tens of MB per call, and fresh large allocations cost page
    # faults that can double the run time; much smaller chunks pay per-op overhead instead.
    chunk_frames = 2048

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        self.win, self.hop = frame_sizes(cfg)
        if cfg.n_fft % 2:
            raise ValueError(f"features: n_fft must be even, got {cfg.n_fft}")
        if not 0.0 <= cfg.preemphasis <= 1.0:
            raise ValueError(f"features: preemphasis must be in [0, 1], got {cfg.preemphasis}")
        mel = kaldi_mel_matrix(cfg.n_mels, cfg.n_fft, cfg.sample_rate, cfg.low_freq, cfg.high_freq)
        self.bands = mel_bands(mel.numpy())
        # Only bins [bin_lo, bin_hi) carry weight; the power spectrum is computed for those alone.
        self.bin_lo = min(b[2] for b in self.bands)
        self.bin_hi = max(b[3] for b in self.bands)
        self.register_buffer("window", kaldi_window(cfg.window, self.win).float(), persistent=False)
        self.register_buffer("mel_matrix", mel[self.bin_lo : self.bin_hi].float(), persistent=False)

    @property
    def dim(self) -> int:
        return self.cfg.n_mels

    def forward(self, wav: Tensor, lengths: Tensor | None = None, warp: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav (batch, samples) in [-1, 1], lengths (batch,) -> (batch, frames, n_mels), frame counts (batch,).

        warp (batch,): VTLP factors (1 = none); channel i then reads the spectrum at warp * its centre frequency.
        """
        if wav.dim() != 2:
            raise ValueError(f"Fbank expects a (batch, samples) waveform batch, got shape {tuple(wav.shape)}")
        cfg, win, hop = self.cfg, self.win, self.hop
        wav = wav.to(self.window.dtype)
        batch, samples = wav.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long, device=wav.device)
        lengths = lengths.to(wav.device)
        if batch and int(lengths.max()) > samples:
            raise ValueError(f"Fbank: a length ({int(lengths.max())}) exceeds the padded batch ({samples} samples)")
        counts = frame_counts(lengths, win, hop)  # (batch,)
        counts_list = counts.tolist()  # one host sync: the output size depends on it
        out = wav.new_zeros(batch, max(counts_list, default=0), cfg.n_mels)
        if sum(counts_list) == 0:
            return out, counts

        if self.training and cfg.dither > 0:
            # Gaussian noise of cfg.dither int16 steps. Kaldi draws it per frame; drawing it once per sample of
            # the signal gives every frame the same noise distribution at 2.5x fewer draws.
            wav = wav + torch.randn_like(wav) * (cfg.dither / 32768.0)
        # Kaldi pre-emphasises each frame after removing its mean m: y[j] = (x[j] - m) - c (x[j-1] - m) for
        # j >= 1 and y[0] = (1 - c)(x[0] - m). That is the frame of the once pre-emphasised signal x[n] - c x[n-1]
        # minus the constant (1 - c) m, except sample 0. So the signal is pre-emphasised once (frames overlap
        # 2.5x), the mean comes off as a rank-1 update after windowing, and sample 0 is patched.
        c = cfg.preemphasis
        emph = torch.empty_like(wav)  # (batch, samples)
        torch.mul(wav[:, :1], 1.0 - c, out=emph[:, :1])
        torch.sub(wav[:, 1:], wav[:, :-1], alpha=c, out=emph[:, 1:])
        emph_frames = emph.unfold(1, win, hop)  # (batch, all_frames, win): strided views, no copies
        raw_frames = wav.unfold(1, win, hop)
        first = raw_frames[..., 0]  # (batch, all_frames): sample 0 of each frame, for the patch
        if cfg.remove_dc:
            dc = raw_frames.mean(dim=-1)  # (batch, all_frames)
            first = first - dc
        patch_scale = (1.0 - c) * self.window[0]  # Kaldi's y[0] = (1 - c)(x[0] - m), windowed; 0 for povey/hann

        buf = wav.new_empty(min(self.chunk_frames, sum(counts_list)), cfg.n_fft)
        buf[:, win:].zero_()  # zero-padding to n_fft; the rows are overwritten only up to `win`
        for pieces in chunk_pieces(counts_list, self.chunk_frames):
            row = 0
            for b, start, end in pieces:  # valid frames of utterance b -> window -> rows of buf
                rows = buf[row : row + end - start]
                torch.mul(emph_frames[b, start:end], self.window, out=rows[:, :win])
                if cfg.remove_dc:
                    rows[:, :win].addr_(dc[b, start:end], self.window, alpha=-(1.0 - c))
                torch.mul(first[b, start:end], patch_scale, out=rows[:, 0])
                row += end - start
            mel = self._mel_energies(buf[:row])  # (row, n_mels)
            row = 0
            for b, start, end in pieces:  # the log writes straight into the padded output
                torch.log(mel[row : row + end - start], out=out[b, start:end])
                row += end - start
        if warp is not None:
            out = warp_channels(out, vtlp_positions(warp.to(out.device), cfg))
        return out, counts

    def _mel_energies(self, frames: Tensor) -> Tensor:
        """Windowed, zero-padded frames (n, n_fft) -> mel energies floored at float32 eps (n, n_mels)."""
        spectrum = torch.fft.rfft(frames)[:, self.bin_lo : self.bin_hi]  # (n, bins) complex
        # |X|^2 without abs(): squaring the real/imag parts in place avoids hypot and a temporary.
        parts = torch.view_as_real(spectrum).square_()  # (n, bins, 2)
        power = parts[..., 0] + parts[..., 1]  # (n, bins)
        # One matmul per band of filters, over only the bins the band touches: (n, band bins) @ (band bins, filters).
        # Under mixed precision autocast would run these in bf16/fp16; features stay in float32.
        lo = self.bin_lo
        with torch.autocast(frames.device.type, enabled=False):
            per_band = [
                power[:, b0 - lo : b1 - lo] @ self.mel_matrix[b0 - lo : b1 - lo, m0:m1]  # (n, m1 - m0)
                for m0, m1, b0, b1 in self.bands
            ]
        mel = torch.cat(per_band, dim=1)  # (n, n_mels)
        return mel.clamp_min_(FLOAT32_EPS)


def chunk_pieces(counts: list[int], chunk: int) -> list[list[tuple[int, int, int]]]:
    """Cut each utterance's frames [0, count) into pieces (utt, start, end) packed into chunks of <= chunk frames.

    >>> chunk_pieces([3, 4], 5)
    [[(0, 0, 3), (1, 0, 2)], [(1, 2, 4)]]
    """
    chunks: list[list[tuple[int, int, int]]] = [[]]
    room = chunk
    for b, n in enumerate(counts):
        start = 0
        while start < n:
            if room == 0:
                chunks.append([])
                room = chunk
            end = min(n, start + room)
            chunks[-1].append((b, start, end))
            room -= end - start
            start = end
    return chunks


def deltas(feats: Tensor, lengths: Tensor, half_width: int) -> Tensor:
    """HTK/Kaldi regression deltas d[t] = sum_n n (x[t+n] - x[t-n]) / (2 sum_n n^2), n = 1..half_width.

    feats (batch, frames, dim), lengths (batch,). Neighbours are clamped into each utterance's own [0, length), so
    edge frames are replicated at its true end and padding never leaks in. Values at padded frames are meaningless
    (mask them). All 2N+1 taps are fetched with one index_select and combined with one matmul.
    """
    batch, n_frames, dim = feats.shape
    offsets = torch.arange(-half_width, half_width + 1, device=feats.device)  # (taps,)
    weights = offsets.to(feats.dtype) / (2 * sum(n * n for n in range(1, half_width + 1)))  # (taps,)
    last = (lengths.to(feats.device) - 1).clamp_min(0)  # (batch,)
    t = torch.arange(n_frames, device=feats.device)
    src = (t + offsets[:, None, None]).clamp_min(0)  # (taps, 1, frames)
    src = torch.minimum(src, last[:, None])  # (taps, batch, frames): frame index within each utterance
    src = src + (torch.arange(batch, device=feats.device) * n_frames)[:, None]  # -> row of feats viewed 2-D
    taps = feats.reshape(batch * n_frames, dim).index_select(0, src.view(-1))  # (taps * batch * frames, dim)
    return (weights @ taps.view(len(offsets), -1)).view(batch, n_frames, dim)


class MFCC(nn.Module):
    """Kaldi log-mel fbank -> orthonormal DCT-II (n_mfcc, c0 included, no liftering) + deltas + delta-deltas.

    Delta-deltas are HTK's: the delta regression applied to the deltas (Kaldi instead applies one 4N+1-tap filter
    to the cepstra; the two differ only within 2N frames of an utterance's ends).
    """

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        if not 1 <= cfg.n_mfcc <= cfg.n_mels:
            raise ValueError(f"features: need 1 <= n_mfcc <= n_mels, got n_mfcc={cfg.n_mfcc}, n_mels={cfg.n_mels}")
        if cfg.delta_window < 1:
            raise ValueError(f"features: delta_window must be >= 1, got {cfg.delta_window}")
        self.cfg = cfg
        self.fbank = Fbank(cfg)
        self.register_buffer("dct", dct_matrix(cfg.n_mels, cfg.n_mfcc).float(), persistent=False)

    @property
    def dim(self) -> int:
        return 3 * self.cfg.n_mfcc

    def forward(self, wav: Tensor, lengths: Tensor | None = None, warp: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav (batch, samples), lengths (batch,) -> (batch, frames, 3 * n_mfcc), frame counts (batch,).
        warp (batch,): VTLP factors, applied to the log-mel before the DCT."""
        logmel, counts = self.fbank(wav, lengths, warp)  # (batch, frames, n_mels), padding 0
        with torch.autocast(logmel.device.type, enabled=False):  # float32 matmuls even under mixed precision
            ceps = logmel @ self.dct  # (batch, frames, n_mfcc)
            d1 = deltas(ceps, counts, self.cfg.delta_window)
            d2 = deltas(d1, counts, self.cfg.delta_window)
        feats = torch.cat([ceps, d1, d2], dim=-1)  # (batch, frames, 3 * n_mfcc)
        valid = torch.arange(feats.shape[1], device=feats.device) < counts[:, None]
        return feats * valid[..., None], counts


def make_frontend(cfg: FeatureConfig) -> nn.Module:
    """The feature extractor cfg.kind names: Fbank ("fbank") or MFCC ("mfcc")."""
    if cfg.kind == "fbank":
        return Fbank(cfg)
    if cfg.kind == "mfcc":
        return MFCC(cfg)
    raise ValueError(f"features.kind: unknown feature kind '{cfg.kind}' (known: fbank, mfcc)")


# ---------------------------------------------------------------------------------------------------------------
# Normalisation


def valid_mask(lengths: Tensor, n_frames: int) -> Tensor:
    """(batch, n_frames) bool, True for frames t < length."""
    return torch.arange(n_frames, device=lengths.device) < lengths[:, None]


class GlobalCMVN(nn.Module):
    """(x - mean) / std with corpus statistics; the buffers travel in the state_dict (and the model file).

    With utterance_mean=True each utterance's own mean comes off first (cepstral mean normalisation, as Kaldi's
    per-utterance CMVN or ESPnet's utterance_mvn): a fixed microphone or room colouring, and part of a voice's
    spectral tilt, is a constant offset in the log-mel domain, which a corpus mean cannot remove for a speaker
    the corpus never heard. The corpus statistics are then those of the mean-removed features (mean ~0).
    """

    def __init__(self, dim: int, utterance_mean: bool = False):
        super().__init__()
        self.utterance_mean = utterance_mean
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        """Load (dim,) statistics, e.g. CMVNStats.mean_std() over the training set (of `centre`'s output)."""
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(
                f"GlobalCMVN: stats must have shape {tuple(self.mean.shape)}, "
                f"got mean {tuple(mean.shape)}, std {tuple(std.shape)}"
            )
        if not bool((std > 0).all()):
            raise ValueError("GlobalCMVN: std must be positive")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def centre(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """Each utterance minus its own mean over valid frames when utterance_mean, else feats unchanged."""
        if not self.utterance_mean:
            return feats
        mask = valid_mask(lengths.to(feats.device), feats.shape[1])[..., None]  # (batch, frames, 1)
        count = mask.sum(dim=1).clamp_min(1)  # (batch, 1)
        return feats - (feats * mask).sum(dim=1, keepdim=True) / count[..., None]

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """feats (batch, frames, dim), lengths (batch,) -> normalised feats; padded frames stay exactly 0."""
        mask = valid_mask(lengths.to(feats.device), feats.shape[1])[..., None]  # (batch, frames, 1)
        return ((self.centre(feats, lengths) - self.mean) / self.std) * mask


class CMVNStats:
    """Accumulates per-dimension count, sum and sum of squares (float64) over valid frames only."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: Tensor | None = None
        self.sum_sq: Tensor | None = None

    def add(self, feats: Tensor, lengths: Tensor) -> None:
        """feats (batch, frames, dim), lengths (batch,)."""
        mask = valid_mask(lengths.to(feats.device), feats.shape[1])
        x = feats[mask].double()  # (valid frames, dim)
        s, s2 = x.sum(dim=0).cpu(), x.square().sum(dim=0).cpu()
        if self.sum is None:
            self.sum, self.sum_sq = s, s2
        else:
            self.sum += s
            self.sum_sq += s2
        self.count += x.shape[0]

    def mean_std(self, floor: float = 1e-5) -> tuple[Tensor, Tensor]:
        """(mean, std) float32 tensors; std is floored so constant dimensions do not divide by ~0."""
        if self.sum is None or self.count == 0:
            raise ValueError("CMVNStats: no frames accumulated")
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean.square()).clamp_min(0)
        return mean.float(), var.sqrt().clamp_min(floor).float()


# ---------------------------------------------------------------------------------------------------------------
# Augmentation


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al. 2019) on normalised features; identity in eval or when disabled.

    Widths are drawn uniformly from [0, max] per utterance and mask, with torch's global RNG (so Lightning's
    seed_everything makes it reproducible). Time masks stay within each utterance's true length.
    """

    def __init__(self, cfg: SpecAugmentConfig, n_features: int):
        super().__init__()
        self.cfg = cfg
        self.n_features = n_features
        # freq_width is given for 80 mel bins; keep the same fraction of the spectrum for other dims.
        self.freq_width = min(round(cfg.freq_width * n_features / 80), n_features)

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """feats (batch, frames, dim), lengths (batch,) -> feats with the masked bands and frames set to 0."""
        cfg = self.cfg
        if not (self.training and cfg.enabled):
            return feats
        batch, n_frames, dim = feats.shape
        device = feats.device
        lengths = lengths.to(device)
        freq = torch.zeros(batch, dim, dtype=torch.bool, device=device)
        time = torch.zeros(batch, n_frames, dtype=torch.bool, device=device)
        if cfg.freq_masks > 0:
            widths = uniform_int(torch.full((batch, cfg.freq_masks), self.freq_width, device=device))
            starts = uniform_int(dim - widths)
            freq = spans(starts, widths, dim)  # (batch, dim)
        if cfg.time_masks > 0:
            max_width = torch.clamp((cfg.time_width * lengths).floor().long(), max=cfg.time_width_max)  # (batch,)
            widths = uniform_int(max_width[:, None].expand(batch, cfg.time_masks))
            starts = uniform_int(lengths[:, None] - widths)  # masks end by the utterance's true end
            time = spans(starts, widths, n_frames)  # (batch, frames)
        if cfg.time_warp > 0:
            feats = time_warp(feats, lengths, cfg.time_warp)
        return feats.masked_fill(freq[:, None, :] | time[:, :, None], 0.0)


def time_warp(feats: Tensor, lengths: Tensor, max_warp: int) -> Tensor:
    """SpecAugment's time warp: a random frame c of each utterance moves to c + d (|d| <= max_warp) and both sides
    are stretched linearly to fit, keeping the utterance length. Per utterance (lengths differ); cheap next to the
    model. feats (batch, frames, dim) -> same shape."""
    out = feats.clone()
    for i, n in enumerate(lengths.tolist()):
        if n <= 2 * max_warp + 2:
            continue
        c = int(torch.randint(max_warp + 1, n - max_warp, (1,)))
        d = int(torch.randint(-max_warp, max_warp + 1, (1,)))
        x = feats[i, :n].t()[None]  # (1, dim, n)
        left = F.interpolate(x[..., :c], size=c + d, mode="linear", align_corners=False)
        right = F.interpolate(x[..., c:], size=n - c - d, mode="linear", align_corners=False)
        out[i, :n] = torch.cat([left, right], dim=-1)[0].t()
    return out


def vtlp_positions(factors: Tensor, cfg: FeatureConfig, boundary: float = 0.8) -> Tensor:
    """VTLP (Jaitly & Hinton 2013): where each mel channel of a warped utterance reads the unwarped one.

    A vocal tract a factor a longer or shorter moves the formants by about 1/a, not the pitch; so warping the
    frequency axis per utterance mimics new speakers. Frequencies up to boundary * high_freq * min(a, 1) / a map
    to a * f; above, a line joins that point to (high_freq, high_freq), so the band edge stays put (Kaldi's VTLN
    warp has the same shape). factors (batch,) -> fractional channel indices (batch, n_mels) in [0, n_mels - 1].
    """
    edges = mel_edges(cfg.n_mels, cfg.sample_rate, cfg.low_freq, cfg.high_freq).to(factors.device)
    step = edges[1] - edges[0]
    high = mel_to_hz(edges[-1])  # Hz
    f = mel_to_hz(edges[1:-1])[None]  # filter centres (1, n_mels) Hz
    a = factors.to(torch.float64)[:, None]  # (batch, 1)
    knee_out = boundary * high * torch.clamp(a, max=1.0)  # where the warped axis leaves the line a * f
    knee_in = knee_out / a
    warped = torch.where(f <= knee_in, a * f, high - (high - knee_out) / (high - knee_in) * (high - f))
    pos = (hz_to_mel(warped) - edges[1]) / step  # (batch, n_mels) fractional channel index
    return pos.clamp(0, cfg.n_mels - 1).float()


def warp_channels(feats: Tensor, positions: Tensor) -> Tensor:
    """feats (batch, frames, channels), positions (batch, channels) -> feats read at those fractional channels
    (linear interpolation). Padding frames stay 0."""
    channels = feats.shape[-1]
    lo = positions.floor().long().clamp(max=channels - 2)  # (batch, channels)
    frac = (positions - lo).to(feats.dtype)[:, None, :]  # (batch, 1, channels)
    lo = lo[:, None, :].expand(-1, feats.shape[1], -1)  # (batch, frames, channels)
    return torch.lerp(feats.gather(2, lo), feats.gather(2, lo + 1), frac)


def uniform_int(high: Tensor) -> Tensor:
    """Integers uniform in [0, high] (inclusive) elementwise, from torch's global RNG."""
    high = high.clamp_min(0)
    u = torch.rand(high.shape, device=high.device)
    # u * (high + 1) can round up to high + 1 in float32 when u is within an ulp of 1.
    return torch.minimum((u * (high + 1)).floor().long(), high)


def spans(starts: Tensor, widths: Tensor, size: int) -> Tensor:
    """Union over masks of [start, start + width): starts, widths (batch, n_masks) -> (batch, size) bool."""
    pos = torch.arange(size, device=starts.device)
    inside = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])  # (batch, n_masks, size)
    return inside.any(dim=1)
