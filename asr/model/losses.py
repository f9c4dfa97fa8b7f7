"""Losses over decoder logits.

label_smoothed_nll(logits (batch, n, vocab), targets (batch, n), pad) -> scalar mean over real tokens
ctc_loss(logits (batch, frames, vocab), frame lengths, targets (batch, n), target lengths) -> scalar
guided_attention_loss(weights (batch, heads, n, frames), token lengths, frame lengths, sigma) -> scalar
SpeakerAdversary(d_model, n_speakers)(memory (batch, frames, d_model), frame lengths, speaker ids (batch,))
    -> (scalar cross-entropy of a speaker classifier behind a gradient reversal, its frame accuracy)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def label_smoothed_nll(logits: Tensor, targets: Tensor, pad: int, smoothing: float = 0.1) -> Tensor:
    """Cross-entropy against (1 - smoothing) on the target and smoothing spread over the vocabulary;
    padded positions are ignored and the mean is over real target tokens."""
    return F.cross_entropy(
        logits.transpose(1, 2).float(), targets, ignore_index=pad, label_smoothing=smoothing, reduction="mean"
    )


def ctc_loss(log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor, blank: int) -> Tensor:
    """CTC over the encoder frames (log_probs (batch, frames, vocab), e.g. `SpeechTransformer.ctc_log_probs`), per
    target token (the scale of the attention loss, so that ctc_weight means what it says). Utterances too short for
    their transcript give an infinite loss: zero_infinity drops them instead of poisoning the batch."""
    logp = log_probs.float().transpose(0, 1)  # (frames, batch, vocab)
    loss = F.ctc_loss(logp, targets, lengths, target_lengths, blank=blank, reduction="sum", zero_infinity=True)
    return loss / target_lengths.sum().clamp(min=1)


def guided_attention_penalty(out_lengths: Tensor, in_lengths: Tensor, n_max: int, t_max: int, sigma: float) -> Tensor:
    """W[b, n, t] = 1 - exp(-(n/N - t/T)^2 / (2 sigma^2)) with each utterance's true lengths N, T; 0 on padding.

    Near the diagonal the penalty is ~0, far from it ~1 (Tachibana et al. 2017). Positions are taken at the centre
    of their cells ((n + 0.5) / N): with n / N, the single token of a one-word utterance would be pushed to attend
    to the leading silence."""
    n = torch.arange(n_max, device=out_lengths.device, dtype=torch.float32)[None, :, None]
    t = torch.arange(t_max, device=out_lengths.device, dtype=torch.float32)[None, None, :]
    N = out_lengths.float()[:, None, None]
    T = in_lengths.float()[:, None, None]
    w = 1.0 - torch.exp(-(((n + 0.5) / N - (t + 0.5) / T) ** 2) / (2 * sigma**2))  # (batch, n_max, t_max)
    valid = (n < N) & (t < T)
    return w * valid


def guided_attention_loss(
    weights: Tensor, out_lengths: Tensor, in_lengths: Tensor, sigma: float, heads: int = 0
) -> Tensor:
    """Expected penalty per output token: sum_t A[n, t] W[n, t], averaged over real tokens and the guided heads.

    weights: cross-attention (batch, heads, n, frames) whose rows sum to 1 over frames."""
    if heads > 0:
        weights = weights[:, :heads]
    w = guided_attention_penalty(out_lengths, in_lengths, weights.size(2), weights.size(3), sigma)
    per_token = (weights.float() * w[:, None]).sum(-1)  # (batch, heads, n)
    return per_token.sum() / (out_lengths.sum().clamp(min=1) * weights.size(1))


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: Tensor, scale: float = 1.0) -> Tensor:
    """Identity forward; backward multiplies the gradient by -scale (Ganin & Lempitsky 2015)."""
    return _ReverseGradient.apply(x, scale)


class SpeakerAdversary(nn.Module):
    """A speaker classifier on every encoder frame, behind a gradient reversal: domain-adversarial training
    (Ganin & Lempitsky 2015) with speakers as the domains, as in speaker-invariant training (Meng et al. 2018).
    The classifier learns to tell the training speakers apart; the reversed gradient pushes the encoder to make
    that impossible, i.e. to drop what identifies a voice. Frames, not an utterance mean, because a new voice
    misleads the decoder frame by frame. Training only: the model file does not carry it."""

    def __init__(self, d_model: int, n_speakers: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, n_speakers))

    def forward(self, memory: Tensor, lengths: Tensor, speakers: Tensor) -> tuple[Tensor, Tensor]:
        """memory (batch, frames, d_model), lengths (batch,), speakers (batch,) class ids, -1 for unknown ->
        (mean cross-entropy over the real frames of known speakers, their frame accuracy)."""
        logits = self.net(reverse_gradient(memory)).float()  # (batch, frames, n_speakers)
        frames = torch.arange(memory.shape[1], device=memory.device)
        valid = (frames[None, :] < lengths.to(memory.device)[:, None]) & (speakers[:, None] >= 0)
        if not valid.any():  # no frame of a known speaker: no loss (cross_entropy would give NaN)
            zero = logits.sum() * 0.0
            return zero, zero.detach()
        targets = torch.where(valid, speakers[:, None].expand_as(valid), -100)  # (batch, frames)
        loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100)
        accuracy = (logits.argmax(-1) == targets)[valid].float().mean()
        return loss, accuracy.detach()
