"""Dataset and batching: manifest utterances -> padded waveform and token batches.

    SpeechDataset[i] -> (waveform (samples,), token ids (n,)) or None for an unreadable file (reported, skipped)
    collate(items) -> Batch(wavs (batch, samples), wav_lengths, tokens (batch, n), token_lengths)

Features are computed from the padded waveforms inside the model (on the training device), not here.
An utterance with an `offset` field (a Kaldi segment) is the stretch [offset, offset + duration) of its file.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Sequence

import scipy.fft
import torch
import torchaudio
from torch import Tensor
from torch.utils.data import Dataset

from asr.audio import AudioError, audio_info, load_audio
from asr.data.manifest import Utterance, read_manifest
from asr.text import CharTokenizer

log = logging.getLogger("asr")


@dataclass
class Batch:
    wavs: Tensor  # (batch, samples) float32, zero-padded
    wav_lengths: Tensor  # (batch,)
    tokens: Tensor  # (batch, n) token ids, padded with <pad>
    token_lengths: Tensor  # (batch,)
    indices: Tensor  # (batch,) positions in the dataset, to find the utterance again

    def __len__(self) -> int:
        return self.wavs.size(0)


def load_utterance(u: Utterance, sample_rate: int) -> Tensor:
    """The utterance's waveform: the whole file, or only [offset, offset + duration) when it has an `offset`."""
    if "offset" in u.extra:
        return load_audio(u.audio_filepath, sample_rate, offset=float(u.extra["offset"]), duration=u.duration)
    return load_audio(u.audio_filepath, sample_rate)


def uniform(lo: float, hi: float) -> float:
    """One draw from U[lo, hi) with torch's RNG (seeded by Lightning, so augmentation is reproducible)."""
    return lo + float(torch.rand(1)) * (hi - lo)


def room_impulse_response(rt60: float, drr_db: float, sample_rate: int) -> Tensor:
    """A simulated room: a unit direct path, then exponentially decaying Gaussian noise (the late reverberation
    of a diffuse field) that falls 60 dB in `rt60` seconds, scaled to a direct-to-reverberant energy ratio of
    `drr_db`. -> (samples,), rt60 seconds long."""
    n = max(int(rt60 * sample_rate), 2)
    t = torch.arange(n) / sample_rate
    tail = torch.randn(n) * torch.exp(-3 * math.log(10) * t / rt60)  # amplitude 10**-3 (-60 dB) at t = rt60
    tail[0] = 0.0
    tail *= math.sqrt(10 ** (-drr_db / 10) / float(tail.pow(2).sum().clamp(min=1e-12)))
    tail[0] = 1.0
    return tail


class SpeechDataset(Dataset):
    """Utterances -> (index, waveform, token ids). For training, optional waveform augmentation, in this order:
    `speed_perturb` factors (resampling, which changes tempo and pitch together, as Kaldi's sox speed does);
    reverberation in a simulated room with probability `reverb_prob`, RT60 uniform in `reverb_rt60` = [min, max]
    seconds and direct-to-reverberant ratio uniform in REVERB_DRR_DB; white noise at a random SNR in `noise_snr` =
    [min, max] dB. All drawn from torch's RNG (seeded by Lightning)."""

    REVERB_DRR_DB = (0.0, 10.0)  # from reverberant far-field (0 dB) to a near microphone in a live room

    def __init__(
        self,
        utts: Sequence[Utterance],
        tokenizer: CharTokenizer,
        sample_rate: int,
        speed_perturb: Sequence[float] = (),
        noise_snr: Sequence[float] = (),
        reverb_rt60: Sequence[float] = (),
        reverb_prob: float = 0.5,
    ):
        self.utts, self.tokenizer, self.sample_rate = list(utts), tokenizer, sample_rate
        self.tokens = [torch.tensor(tokenizer.encode(u.text), dtype=torch.long) for u in self.utts]
        self.speed_perturb = [float(f) for f in speed_perturb]
        if noise_snr and len(noise_snr) != 2:
            raise ValueError(f"data.noise_snr must be [min_db, max_db], got {list(noise_snr)}")
        self.noise_snr = [float(x) for x in noise_snr]
        if reverb_rt60 and not (len(reverb_rt60) == 2 and 0 < reverb_rt60[0] <= reverb_rt60[1]):
            raise ValueError(f"data.reverb_rt60 must be [min, max] seconds, 0 < min <= max, got {list(reverb_rt60)}")
        if not 0 <= reverb_prob <= 1:
            raise ValueError(f"data.reverb_prob must be in [0, 1], got {reverb_prob}")
        self.reverb_rt60, self.reverb_prob = [float(x) for x in reverb_rt60], float(reverb_prob)

    @functools.lru_cache(maxsize=8)
    def _resampler(self, factor: float) -> torchaudio.transforms.Resample:
        """The resampling kernel is built once per factor (building it costs more than applying it)."""
        orig, new = round(self.sample_rate * factor), self.sample_rate
        g = math.gcd(orig, new)
        return torchaudio.transforms.Resample(orig // g, new // g)

    def augment(self, wav: Tensor) -> Tensor:
        if self.speed_perturb:
            factor = self.speed_perturb[int(torch.randint(len(self.speed_perturb), (1,)))]
            if factor != 1.0:  # played `factor` times faster: resample from sr * factor down to sr
                wav = self._resampler(factor)(wav)
        if self.reverb_rt60 and float(torch.rand(1)) < self.reverb_prob:
            wav = self.reverberate(wav)
        if self.noise_snr:
            snr_db = uniform(*self.noise_snr)
            power = wav.pow(2).mean().clamp(min=1e-10)
            wav = wav + torch.randn_like(wav) * torch.sqrt(power / 10 ** (snr_db / 10))
        return wav

    def reverberate(self, wav: Tensor) -> Tensor:
        """`wav` as heard in a random simulated room: same length (the tail past the end is cut, so the
        transcript still lines up) and same power (so the level augmentations stay where they were)."""
        rir = room_impulse_response(uniform(*self.reverb_rt60), uniform(*self.REVERB_DRR_DB), self.sample_rate)
        # FFT convolution at a 2-3-5-smooth length: 0.7 ms for 2 s of audio in a 0.6 s room (one thread), against
        # 15-19 ms for torchaudio's fftconvolve at the exact length, which slowed FSDD training by a third.
        n = scipy.fft.next_fast_len(wav.numel() + rir.numel() - 1, real=True)
        spectrum = scipy.fft.rfft(wav.numpy(), n) * scipy.fft.rfft(rir.numpy(), n)
        wet = torch.from_numpy(scipy.fft.irfft(spectrum, n)[: wav.numel()]).to(wav.dtype)
        return wet * torch.sqrt(wav.pow(2).mean() / wet.pow(2).mean().clamp(min=1e-12))

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> tuple[int, Tensor, Tensor] | None:
        try:
            wav = load_utterance(self.utts[i], self.sample_rate)
        except AudioError as e:  # a file broken after the start-up check: report it, train on
            log.warning("skipping utterance: %s", e)
            return None
        return i, self.augment(wav), self.tokens[i]


def collate(items: list, pad: int) -> Batch | None:
    items = [x for x in items if x is not None]
    if not items:
        return None
    wav_lengths = torch.tensor([w.numel() for _, w, _ in items])
    token_lengths = torch.tensor([t.numel() for _, _, t in items])
    wavs = torch.zeros(len(items), int(wav_lengths.max()))
    tokens = torch.full((len(items), int(token_lengths.max())), pad, dtype=torch.long)
    for j, (_, w, t) in enumerate(items):
        wavs[j, : w.numel()] = w
        tokens[j, : t.numel()] = t
    return Batch(wavs, wav_lengths, tokens, token_lengths, torch.tensor([i for i, _, _ in items]))


def load_split(
    manifest: str, max_duration: float = float("inf"), check_audio: bool = True, min_frames: int = 400
) -> list[Utterance]:
    """Read a manifest and drop (and report) utterances that cannot be used: missing or unreadable audio, shorter
    than one analysis window, longer than `max_duration`, or with an empty transcript."""
    utts = read_manifest(manifest)
    kept, skipped = [], []
    for u in utts:
        reason = None
        if u.duration > max_duration:
            reason = f"longer than data.max_duration={max_duration:g} s ({u.duration:.1f} s)"
        elif not u.text.strip():
            reason = "empty transcript"
        elif check_audio:
            try:
                frames, sr = audio_info(u.audio_filepath)
                if "offset" in u.extra:  # a segment: its own length, and it must lie inside the file
                    end = float(u.extra["offset"]) + u.duration
                    if end * sr > frames + 0.01 * sr:
                        reason = f"segment ends at {end:.2f} s, after the end of the file ({frames / sr:.2f} s)"
                    frames = int(u.duration * sr)
                if reason is None and frames * 16000 < min_frames * sr:
                    reason = f"too short ({frames} samples)"
            except AudioError as e:
                reason = str(e)
        if reason:
            skipped.append((u.audio_filepath, reason))
        else:
            kept.append(u)
    for path, reason in skipped[:20]:
        log.warning("%s: skipping %s: %s", manifest, path, reason)
    if len(skipped) > 20:
        log.warning("%s: ... and %d more skipped", manifest, len(skipped) - 20)
    if not kept:
        raise ValueError(f"{manifest}: no usable utterances ({len(skipped)} skipped)")
    return kept
