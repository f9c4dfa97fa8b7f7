"""Waveform augmentation on the padded training batch, inside the model (so on the GPU when there is one):

    WaveformAugment(rt60, prob, snr)(wavs (batch, samples), lengths (batch,)) -> wavs, same shape
        a `prob` share of the utterances reverberated in simulated rooms, then white noise at a random SNR;
        each utterance keeps its length and level, and the padding stays zero.
    room_impulse_responses(rt60 (batch,), drr_db (batch,), sample_rate) -> (batch, taps)

Speed perturbation stays in the data path (asr/data/dataset.py): it changes an utterance's length.
Features-level augmentation (SpecAugment, VTLP) is in asr/features.py.
"""

from __future__ import annotations

import math
from typing import Sequence

import scipy.fft
import torch
from torch import Tensor, nn


def room_impulse_responses(rt60: Tensor, drr_db: Tensor, sample_rate: int) -> Tensor:
    """Simulated rooms: a unit direct path, then exponentially decaying Gaussian noise (the late reverberation of a
    diffuse field) that falls 60 dB in each room's `rt60` seconds and stops there, scaled to a direct-to-reverberant
    energy ratio of `drr_db`. (batch,), (batch,) -> (batch, taps), taps = the longest RT60 in samples."""
    taps = max(int(float(rt60.max()) * sample_rate), 2)
    t = torch.arange(taps, device=rt60.device) / sample_rate  # (taps,)
    rt60 = rt60[:, None]
    decay = torch.exp(-3 * math.log(10) * t / rt60) * (t < rt60)  # amplitude 10**-3 (-60 dB) at t = rt60
    tail = torch.randn(rt60.shape[0], taps, device=rt60.device) * decay  # (batch, taps)
    tail[:, 0] = 0.0
    tail = tail * torch.sqrt(10 ** (-drr_db[:, None] / 10) / tail.pow(2).sum(1, keepdim=True).clamp(min=1e-12))
    tail[:, 0] = 1.0
    return tail


def valid_samples(lengths: Tensor, n: int) -> Tensor:
    """(batch,) lengths -> (batch, n) float mask, 1 on each utterance's own samples."""
    return (torch.arange(n, device=lengths.device) < lengths[:, None]).float()


def mean_power(wavs: Tensor, mask: Tensor) -> Tensor:
    """Mean square over each utterance's own samples: (batch, n) -> (batch, 1)."""
    return (wavs.pow(2) * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)


def uniform(lo: float, hi: float, n: int, device: torch.device) -> Tensor:
    """n draws from U[lo, hi) with torch's RNG (seeded by Lightning, so augmentation is reproducible)."""
    return lo + torch.rand(n, device=device) * (hi - lo)


class WaveformAugment(nn.Module):
    """Rooms and noise for training batches; identity in eval mode or when both are off.

    rt60 = [min, max] seconds: a `prob` share of the utterances is heard in a simulated room, RT60 uniform in the
    range and direct-to-reverberant ratio uniform in DRR_DB; then snr = [min, max] dB: white noise at a random SNR.
    """

    DRR_DB = (0.0, 10.0)  # from reverberant far-field (0 dB) to a near microphone in a live room

    def __init__(self, sample_rate: int, rt60: Sequence[float] = (), prob: float = 0.5, snr: Sequence[float] = ()):
        super().__init__()
        if rt60 and not (len(rt60) == 2 and 0 < rt60[0] <= rt60[1]):
            raise ValueError(f"data.reverb_rt60 must be [min, max] seconds, 0 < min <= max, got {list(rt60)}")
        if not 0 <= prob <= 1:
            raise ValueError(f"data.reverb_prob must be in [0, 1], got {prob}")
        if snr and len(snr) != 2:
            raise ValueError(f"data.noise_snr must be [min_db, max_db], got {list(snr)}")
        self.sample_rate, self.prob = sample_rate, float(prob)
        self.rt60, self.snr = [float(x) for x in rt60], [float(x) for x in snr]

    def forward(self, wavs: Tensor, lengths: Tensor) -> Tensor:
        if not self.training:
            return wavs
        lengths = lengths.to(wavs.device)
        if self.rt60 and self.prob > 0:
            rows = (torch.rand(wavs.shape[0], device=wavs.device) < self.prob).nonzero().squeeze(1)
            if rows.numel():
                wavs = wavs.index_copy(0, rows, self.reverberate(wavs[rows], lengths[rows]))
        if self.snr:
            mask = valid_samples(lengths, wavs.shape[1])
            snr_db = uniform(*self.snr, wavs.shape[0], wavs.device)[:, None]
            noise_power = mean_power(wavs, mask).clamp(min=1e-10) / 10 ** (snr_db / 10)
            wavs = wavs + torch.randn_like(wavs) * torch.sqrt(noise_power) * mask
        return wavs

    def reverberate(self, wavs: Tensor, lengths: Tensor) -> Tensor:
        """(batch, samples) as heard in random rooms: the tail past each utterance's end is cut (so the transcript
        still lines up and the padding stays zero) and its power is restored (so the SNR range means what it says)."""
        batch, n = wavs.shape
        rooms = room_impulse_responses(
            uniform(*self.rt60, batch, wavs.device), uniform(*self.DRR_DB, batch, wavs.device), self.sample_rate
        )  # (batch, taps)
        # One batched FFT convolution, at a 2-3-5-smooth length (FFTs of awkward lengths are several times slower).
        size = scipy.fft.next_fast_len(n + rooms.shape[1] - 1, real=True)
        spectrum = torch.fft.rfft(wavs, size) * torch.fft.rfft(rooms, size)
        mask = valid_samples(lengths, n)
        wet = torch.fft.irfft(spectrum, size)[:, :n] * mask  # (batch, samples)
        return wet * torch.sqrt(mean_power(wavs, mask) / mean_power(wet, mask).clamp(min=1e-12))
