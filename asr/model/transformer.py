"""The Speech-Transformer (Dong et al. 2018): conv subsampling + Transformer encoder, autoregressive decoder.

    encode(feats (batch, frames, n_features), lengths) -> (batch, frames/4, d_model), encoder lengths
    decode(tokens (batch, n), encoder out, encoder lengths) -> logits (batch, n, vocab)

Blocks are pre-LayerNorm (normalise, transform, add the residual): they train stably without a long warmup.
"""

from __future__ import annotations

from typing import Collection

import torch
from torch import Tensor, nn

from asr.config import ModelConfig
from asr.model.layers import (
    Conv2dSubsampling,
    Dropout,
    FeedForward,
    MultiHeadAttention,
    PositionalEncoding,
    padding_mask,
)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.attn_norm, self.attn = nn.LayerNorm(d_model), MultiHeadAttention(d_model, n_heads, attn_dropout)
        self.ff_norm, self.ff = nn.LayerNorm(d_model), FeedForward(d_model, d_ff, dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), mask=mask)[0])
        return x + self.dropout(self.ff(self.ff_norm(x)))


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


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.subsample = Conv2dSubsampling(cfg.n_features, cfg.d_model, cfg.conv_channels)
        self.pos = PositionalEncoding(cfg.d_model, cfg.dropout)
        layer = (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.attn_dropout)
        self.layers = nn.ModuleList(EncoderLayer(*layer) for _ in range(cfg.n_encoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = self.subsample(feats, lengths)  # (batch, frames/4, d_model)
        x = self.pos(x)
        mask = padding_mask(lengths, x.size(1))[:, None, None, :]  # (batch, 1, 1, frames/4)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x), lengths


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # std d^-1/2, so that after the sqrt(d) scaling in PositionalEncoding embeddings and positions have similar
        # magnitude (the default N(0, 1) would drown the positions, which attention needs to find its place).
        nn.init.normal_(self.embed.weight, std=cfg.d_model**-0.5)
        self.pos = PositionalEncoding(cfg.d_model, cfg.dropout)
        layer = (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.attn_dropout)
        self.layers = nn.ModuleList(DecoderLayer(*layer) for _ in range(cfg.n_decoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(
        self,
        tokens: Tensor,
        memory: Tensor,
        memory_lengths: Tensor,
        token_lengths: Tensor | None = None,
        kv_cache: dict | None = None,
        offset: int = 0,
        weight_layers: Collection[int] = (),
    ) -> tuple[Tensor, list[Tensor | None]]:
        """tokens (batch, n) -> logits (batch, n, vocab), and per layer its cross-attention weights
        (batch, heads, n, frames) if the layer is in `weight_layers`, else None.

        Training passes the whole prefix with a causal mask; incremental decoding passes one new token with
        `kv_cache` holding the past keys/values and `offset` its position.
        """
        x = self.pos(self.embed(tokens), offset)  # (batch, n, d_model)
        n = tokens.size(1)
        if kv_cache is None:
            causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()  # position i sees 0..i
            self_mask = causal[None, None]  # (1, 1, n, n)
            if token_lengths is not None:
                self_mask = self_mask & padding_mask(token_lengths, n)[:, None, None, :]
        else:
            self_mask = None  # one new query: it may see every cached position
        memory_mask = padding_mask(memory_lengths, memory.size(1))[:, None, None, :]
        weights = []
        for i, layer in enumerate(self.layers):
            x, w = layer(x, memory, self_mask, memory_mask, kv_cache, need_weights=i in weight_layers)
            weights.append(w)
        return self.out(self.norm(x)), weights


class SpeechTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set from the tokenizer")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.ctc = nn.Linear(cfg.d_model, cfg.vocab_size)  # frame-level token posteriors for joint CTC
        if cfg.nat_decoder_layers > 0:
            from asr.model.nat import NATDecoder  # nat.py builds on the layers defined here

            self.nat = NATDecoder(cfg)
        else:
            self.nat = None

    def forward(
        self, feats: Tensor, feat_lengths: Tensor, tokens: Tensor, token_lengths: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Teacher forcing: returns logits (batch, n, vocab), encoder lengths, cross-attention weights."""
        memory, memory_lengths = self.encoder(feats, feat_lengths)
        layers = range(len(self.decoder.layers)) if need_weights else ()
        logits, weights = self.decoder(tokens, memory, memory_lengths, token_lengths, weight_layers=layers)
        return logits, memory_lengths, weights
