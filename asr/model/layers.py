"""Building blocks of the Speech-Transformer: masks, positional encoding, conv subsampling, attention, feed-forward,
and the decoder layer that the autoregressive and the non-autoregressive decoders share.

Shapes: batch first; `lengths` travel with every padded tensor and masks are derived from them here only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Dropout(nn.Module):
    """Dropout whose CPU mask comes from numpy's PCG64 bit stream instead of torch's bernoulli_.

    On the CPU, torch draws dropout masks one element at a time with mt19937: it was a quarter of a training step
    here. Raw PCG64 bytes are ~25x cheaper; a byte >= round(p * 256) keeps the element (p is quantised to 1/256).
    The numpy generator is seeded from torch's RNG, so `seed_everything` still makes training reproducible.
    Elsewhere (CUDA) this is plain F.dropout.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p <= 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        n = x.numel()
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        raw = rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n].reshape(x.shape)
        keep = torch.from_numpy(raw) >= round(self.p * 256)
        # x * (mask / (1 - p)): the same values as where(keep, x, 0) / (1 - p), and half the time forward and
        # backward (a mul's backward is one mul; where's builds a zeros tensor and selects again)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(batch,) lengths -> (batch, max_len) bool, True at valid positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def sinusoidal_encoding(length: int, dim: int, device=None) -> Tensor:
    """(length, dim) sin/cos positional encoding of Vaswani et al. 2017."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * inv_freq)
    pe[:, 1::2] = torch.cos(pos * inv_freq)
    return pe


class PositionalEncoding(nn.Module):
    """x * sqrt(d_model) + PE, then dropout. The table grows on demand, so any input length works."""

    def __init__(self, d_model: int, dropout: float, max_len: int = 2000):
        super().__init__()
        self.scale = math.sqrt(d_model)
        self.dropout = Dropout(dropout)
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        end = offset + x.size(1)
        if end > self.pe.size(0):
            self.pe = sinusoidal_encoding(max(end, 2 * self.pe.size(0)), self.pe.size(1), x.device)
        return self.dropout(x * self.scale + self.pe[offset:end].to(x.dtype))


class Conv2dSubsampling(nn.Module):
    """Two 3x3 stride-2 convolutions: (batch, frames, feats) -> (batch, ~frames/4, d_model).

    `channels` is kept narrower than d_model: the second conv's cost grows with channels**2 and at full width it
    would cost more than the whole Transformer for small models.
    """

    def __init__(self, n_features: int, d_model: int, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, 2), nn.ReLU(), nn.Conv2d(channels, channels, 3, 2), nn.ReLU()
        )
        freq_out = ((n_features - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq_out, d_model)

    @staticmethod
    def output_lengths(lengths: Tensor) -> Tensor:
        return ((lengths - 1) // 2 - 1) // 2

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(x.unsqueeze(1))  # (batch, channels, frames/4, feats/4)
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))  # (batch, frames/4, d_model)
        return x, self.output_lengths(lengths).clamp(min=1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with an optional key/value cache for incremental decoding.

    `kv_cache` is a dict owned by the caller (Whisper style): self-attention appends this step's keys/values under
    its own key; cross-attention stores the encoder's projected keys/values once and reuses them every step.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)  # (batch, heads, time, d_head)

    def forward(
        self,
        x: Tensor,
        source: Tensor | None = None,
        mask: Tensor | None = None,
        kv_cache: dict | None = None,
        cross: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (batch, tq, d) queries; source: (batch, tk, d) keys/values (default x).
        mask: bool, broadcastable to (batch, heads, tq, tk), True where attention is allowed.
        Cross-attention in beam search: x has beams * utterances rows (utterance-major) and source one per utterance;
        each utterance's beams then attend as extra queries of one attention call (mask: (utterances, 1, 1, tk)).
        Returns (batch, tq, d) and, if need_weights, the attention weights (batch, heads, tq, tk)."""
        q = self._heads(self.q(x))
        if cross and kv_cache is not None and self in kv_cache:
            k, v = kv_cache[self]  # encoder keys/values computed at the first step
        else:
            k, v = self.kv(x if source is None else source).chunk(2, dim=-1)
            k, v = self._heads(k), self._heads(v)
            if kv_cache is not None:
                if not cross and self in kv_cache:  # self-attention: append this step to the past
                    pk, pv = kv_cache[self]
                    k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
                kv_cache[self] = (k, v)
        dropout = self.dropout if self.training else 0.0
        rows, groups = q.size(0), q.size(0) // k.size(0)
        if groups > 1:  # beams of one utterance share its encoder keys/values: fold them into the query axis
            _, h, tq, dh = q.shape
            q = q.view(k.size(0), groups, h, tq, dh).transpose(1, 2).reshape(k.size(0), h, groups * tq, dh)
        if need_weights:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            y = F.dropout(weights, dropout, self.training) @ v
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        if groups > 1:  # (utterances, heads, beams * tq, ...) -> (rows, heads, tq, ...)
            y = y.view(k.size(0), h, groups, tq, dh).transpose(1, 2).reshape(rows, h, tq, dh)
            if weights is not None:
                weights = weights.view(k.size(0), h, groups, tq, -1).transpose(1, 2).reshape(rows, h, tq, -1)
        b, h, t, dh = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * dh)), weights


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__(nn.Linear(d_model, d_ff), nn.ReLU(), Dropout(dropout), nn.Linear(d_ff, d_model))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.self_norm, self.self_attn = nn.LayerNorm(d_model), MultiHeadAttention(d_model, n_heads, attn_dropout)
        self.cross_norm, self.cross_attn = nn.LayerNorm(d_model), MultiHeadAttention(d_model, n_heads, attn_dropout)
        self.ff_norm, self.ff = nn.LayerNorm(d_model), FeedForward(d_model, d_ff, dropout)
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None,
        memory_mask: Tensor,
        kv_cache: dict | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        x = x + self.dropout(self.self_attn(self.self_norm(x), mask=self_mask, kv_cache=kv_cache)[0])
        y, weights = self.cross_attn(
            self.cross_norm(x), memory, mask=memory_mask, kv_cache=kv_cache, cross=True, need_weights=need_weights
        )
        x = x + self.dropout(y)
        return x + self.dropout(self.ff(self.ff_norm(x))), weights
