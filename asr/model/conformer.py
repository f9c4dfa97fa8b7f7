"""Conformer encoder (Gulati et al. 2020), the encoder ESPnet, icefall and NeMo train ASR with; `model.encoder:
conformer` puts it in place of the Transformer encoder (the decoders, CTC and NAT heads are unchanged).

    ConformerEncoder(cfg)(feats (batch, frames, n_features), lengths) -> memory (batch, frames/4, d_model), lengths, []
    ConformerLayer(x (batch, T, d), pos (2T - 1, d), mask (batch, 1, 1, T)) -> (batch, T, d):
        x + FF/2  ->  + self-attention with relative positions  ->  + convolution module  ->  + FF/2  ->  LayerNorm

Relative positions (Transformer-XL, Dai et al. 2019; ESPnet's RelPositionMultiHeadedAttention): query i scores key j
as ((q_i + u) . k_j + (q_i + v) . W p_(i-j)) / sqrt(d_head), where p_r is the sinusoidal encoding of the distance r
and u, v are learnt per-head biases. The positional term enters scaled_dot_product_attention as an additive bias, so
the content term keeps the fused kernel. No absolute positions are added: distances alone carry order.

The convolution module: pointwise (Linear d -> 2d) + GLU, a depthwise conv over time (padding frames zeroed first,
so a batch's padding never leaks into valid frames), LayerNorm (not the paper's BatchNorm: its statistics would mix
padding and change with batch composition), Swish, pointwise d -> d. Pointwise convs are Linear layers: the same
arithmetic, the faster kernel on the CPU, and MatMuls that int8 export quantises.
"""

from __future__ import annotations

import math
from typing import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr.config import ModelConfig
from asr.model.layers import Conv2dSubsampling, Dropout, padding_mask


def relative_positions(length: int, dim: int, device=None) -> Tensor:
    """Sinusoidal encodings of the distances -(length - 1) .. length - 1: (2 * length - 1, dim), sin at even and cos
    at odd columns as asr.model.layers.sinusoidal_encoding. Computed from `length` alone (no table), so an exported
    graph computes it for any length."""
    r = torch.arange(-(length - 1), length, device=device, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = r * inv_freq  # (2T - 1, dim / 2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(-1, dim)


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative position scores (see the module docstring)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.d_head))  # content bias
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.d_head))  # position bias
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
        """x (batch, T, d), pos (2T - 1, d) = relative_positions(T, d), mask (batch, 1, 1, T) True at valid keys."""
        b, t, _ = x.shape
        h, dh = self.n_heads, self.d_head
        q, k, v = self.qkv(x).view(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)  # each (batch, heads, T, d_head)
        p = self.pos(pos.to(x.dtype)).view(-1, h, dh).transpose(0, 1)  # (heads, 2T - 1, d_head)
        q_u = q + self.pos_bias_u[None, :, None, :]
        q_v = q + self.pos_bias_v[None, :, None, :]
        bd = q_v @ p.transpose(-1, -2)  # (batch, heads, T, 2T - 1): query i against every distance
        idx = torch.arange(t, device=x.device)
        rel = (idx[:, None] - idx[None, :]) + (t - 1)  # (T, T): the column of distance i - j
        bd = bd.gather(-1, rel.expand(b, h, t, t))  # (batch, heads, T, T)
        bias = (bd / math.sqrt(dh)).masked_fill(~mask, float("-inf"))
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q_u, k, v, attn_mask=bias, dropout_p=dropout)  # content term inside
        return self.out(y.transpose(1, 2).reshape(b, t, h * dh))


class ConvModule(nn.Module):
    """Pointwise + GLU -> depthwise conv over time -> LayerNorm -> Swish -> pointwise: (batch, T, d) -> same."""

    def __init__(self, d_model: int, kernel_size: int, dropout: float):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"model.conv_kernel must be odd (same length out as in), got {kernel_size}")
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """valid (batch, T, 1): 1 at real frames, 0 at padding."""
        x = F.glu(self.pointwise_in(x), dim=-1) * valid  # (batch, T, d); padding zeroed before it is convolved
        # As a (k, 1) conv2d: the same weights and sums, but oneDNN's 2-D depthwise kernel; its 1-D path was 3x
        # slower forward and backward on the CPU (21 against 6.5 ms for a 27 x 55-frame batch at 1 thread), an
        # eighth of a Conformer layer's step.
        conv = self.depthwise
        y = F.conv2d(
            x.transpose(1, 2)[..., None],
            conv.weight[..., None],
            conv.bias,
            padding=(conv.padding[0], 0),
            groups=conv.groups,
        )  # (batch, d, T, 1)
        x = y[..., 0].transpose(1, 2)  # (batch, T, d)
        return self.dropout(self.pointwise_out(F.silu(self.norm(x))))


class SwishFeedForward(nn.Sequential):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__(nn.Linear(d_model, d_ff), nn.SiLU(), Dropout(dropout), nn.Linear(d_ff, d_model))


class ConformerLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, kernel_size: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.ff1_norm, self.ff1 = nn.LayerNorm(d_model), SwishFeedForward(d_model, d_ff, dropout)
        self.attn_norm, self.attn = nn.LayerNorm(d_model), RelPositionAttention(d_model, n_heads, attn_dropout)
        self.conv_norm, self.conv = nn.LayerNorm(d_model), ConvModule(d_model, kernel_size, dropout)
        self.ff2_norm, self.ff2 = nn.LayerNorm(d_model), SwishFeedForward(d_model, d_ff, dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor, valid: Tensor) -> Tensor:
        x = x + 0.5 * self.dropout(self.ff1(self.ff1_norm(x)))  # macaron: half-step feed-forwards around the core
        x = x + self.dropout(self.attn(self.attn_norm(x), pos, mask))
        x = x + self.conv(self.conv_norm(x), valid)
        x = x + 0.5 * self.dropout(self.ff2(self.ff2_norm(x)))
        return self.norm(x)


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.subsample = Conv2dSubsampling(cfg.n_features, cfg.d_model, cfg.conv_channels)
        self.scale = math.sqrt(cfg.d_model)
        self.input_dropout = Dropout(cfg.dropout)
        layer = (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.conv_kernel, cfg.dropout, cfg.attn_dropout)
        self.layers = nn.ModuleList(ConformerLayer(*layer) for _ in range(cfg.n_encoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(
        self, feats: Tensor, lengths: Tensor, inter_layers: Collection[int] = ()
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """-> memory (batch, frames/4, d_model), lengths, and the normalised outputs of the layers numbered (from 1)
        in `inter_layers`, for intermediate CTC."""
        x, lengths = self.subsample(feats, lengths)  # (batch, frames/4, d_model)
        x = self.input_dropout(x * self.scale)
        t = x.size(1)
        pos = relative_positions(t, x.size(-1), x.device)  # (2T - 1, d_model)
        valid = padding_mask(lengths, t)  # (batch, T)
        mask = valid[:, None, None, :]
        valid = valid[..., None].to(x.dtype)
        inter = []
        for i, layer in enumerate(self.layers, 1):
            x = layer(x, pos, mask, valid)
            if i in inter_layers:
                inter.append(self.norm(x))
        return self.norm(x), lengths, inter
