"""Dataset and batching: manifest utterances -> padded waveform and token batches.

    SpeechDataset[i] -> (waveform (samples,), token ids (n,)) or None for an unreadable file (reported, skipped)
    collate(items) -> Batch(wavs (batch, samples), wav_lengths, tokens (batch, n), token_lengths)

Features are computed from the padded waveforms inside the model (on the training device), not here.
An utterance with an `offset` field (a Kaldi segment) is the stretch [offset, offset + duration) of its file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from asr.audio import AudioError, load_audio, resample
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


class SpeechDataset(Dataset):
    """Utterances -> (index, waveform, token ids). For training, optional `speed_perturb` factors (resampling, which
    changes tempo and pitch together, as Kaldi's sox speed does), drawn from torch's RNG (seeded by Lightning).
    Rooms and noise keep an utterance's length, so they run on the padded batch instead (asr/augment.py)."""

    def __init__(
        self,
        utts: Sequence[Utterance],
        tokenizer: CharTokenizer,
        sample_rate: int,
        speed_perturb: Sequence[float] = (),
    ):
        self.utts, self.tokenizer, self.sample_rate = list(utts), tokenizer, sample_rate
        self.tokens = [torch.tensor(tokenizer.encode(u.text), dtype=torch.long) for u in self.utts]
        self.speed_perturb = [float(f) for f in speed_perturb]

    def augment(self, wav: Tensor) -> Tensor:
        if self.speed_perturb:
            factor = self.speed_perturb[int(torch.randint(len(self.speed_perturb), (1,)))]
            if factor != 1.0:  # played `factor` times faster: resample from sr * factor down to sr
                wav = resample(wav, round(self.sample_rate * factor), self.sample_rate)
        return wav

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> tuple[int, Tensor, Tensor] | None:
        try:
            wav = load_utterance(self.utts[i], self.sample_rate)
        except AudioError as e:  # a file broken after the start-up check: report it, train on
            log.warning("skipping utterance %s: %s", self.utts[i].source, e)
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
    than one analysis window, longer than `max_duration`, or with an empty transcript. Several manifests joined by
    commas ("a.jsonl,b.jsonl") are read as one, in that order: multi-corpus training without a merged copy."""
    from asr.data.validate import audio_problems

    utts = [u for part in manifest.split(",") if part.strip() for u in read_manifest(part.strip())]
    kept, skipped = [], []
    for u in utts:
        if u.duration > max_duration:
            skipped.append(f"{u.source}: longer than data.max_duration={max_duration:g} s ({u.duration:.1f} s)")
            continue
        if not u.text.strip():
            skipped.append(f"{u.source}: empty transcript")
            continue
        problems = audio_problems(u, min_samples=min_frames) if check_audio else []
        for p in problems:
            if not p.error:
                log.warning("%s", p)
        errors = [p for p in problems if p.error]
        if errors:
            skipped.append(str(errors[0]))
        else:
            kept.append(u)
    for reason in skipped[:20]:
        log.warning("skipping %s", reason)
    if len(skipped) > 20:
        log.warning("%s: ... and %d more skipped", manifest, len(skipped) - 20)
    if not kept:
        raise ValueError(f"{manifest}: no usable utterances ({len(skipped)} skipped)")
    return kept
