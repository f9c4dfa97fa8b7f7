"""The Speech-Transformer (Dong et al. 2018): conv subsampling + Transformer encoder, autoregressive decoder, CTC head
and an optional non-autoregressive head. Callers use the plain methods of `SpeechTransformer`:

    encode(feats (batch, frames, n_features), lengths) -> memory (batch, frames/4, d_model), memory lengths
    ctc_log_probs(memory)                              -> (batch, frames/4, vocab) frame-level token log-posteriors
    decode(tokens (batch, n), memory, memory_lengths)  -> logits (batch, n, vocab), cross-attention weights
    step(last (rows,), memory, memory_lengths, cache)  -> next-token log-probs (rows, vocab); the cache grows a step
    nat_logits(...), nat_length_logits(...)            -> the non-autoregressive head (asr/model/nat.py)

Blocks are pre-LayerNorm (normalise, transform, add the residual): they train stably without a long warmup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection

import torch
from torch import Tensor, nn

from asr.config import ModelConfig
from asr.model.conformer import ConformerEncoder
from asr.model.layers import (
    Conv2dSubsampling,
    DecoderLayer,
    Dropout,
    FeedForward,
    MultiHeadAttention,
    PositionalEncoding,
    padding_mask,
)
from asr.model.nat import NATDecoder


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.attn_norm, self.attn = nn.LayerNorm(d_model), MultiHeadAttention(d_model, n_heads, attn_dropout)
        self.ff_norm, self.ff = nn.LayerNorm(d_model), FeedForward(d_model, d_ff, dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), mask=mask)[0])
        return x + self.dropout(self.ff(self.ff_norm(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.subsample = Conv2dSubsampling(cfg.n_features, cfg.d_model, cfg.conv_channels)
        self.pos = PositionalEncoding(cfg.d_model, cfg.dropout)
        layer = (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.attn_dropout)
        self.layers = nn.ModuleList(EncoderLayer(*layer) for _ in range(cfg.n_encoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(
        self, feats: Tensor, lengths: Tensor, inter_layers: Collection[int] = ()
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """-> memory (batch, frames/4, d_model), lengths, and the normalised outputs of the layers numbered (from 1)
        in `inter_layers`, for intermediate CTC."""
        x, lengths = self.subsample(feats, lengths)  # (batch, frames/4, d_model)
        x = self.pos(x)
        mask = padding_mask(lengths, x.size(1))[:, None, None, :]  # (batch, 1, 1, frames/4)
        inter = []
        for i, layer in enumerate(self.layers, 1):
            x = layer(x, mask)
            if i in inter_layers:
                inter.append(self.norm(x))
        return self.norm(x), lengths, inter


@dataclass
class DecoderCache:
    """What incremental decoding keeps between steps, passed explicitly to `SpeechTransformer.step` (whisper style).

    Rows are hypotheses. Self-attention keys/values grow by one position per step; cross-attention keys/values are the
    projected encoder output, computed at the first step and reused."""

    kv: dict = field(default_factory=dict)  # MultiHeadAttention -> (k, v), each (rows, heads, time, d_head)
    cross: frozenset = frozenset()  # the cross-attention modules among the keys
    offset: int = 0  # tokens fed so far (every row has fed the same number)

    def reorder(self, rows: Tensor) -> None:
        """Keep/reorder rows among the beams of each utterance: the encoder's keys/values are the same for every
        beam of an utterance, so only the self-attention entries move."""
        for module, (k, v) in self.kv.items():
            if module not in self.cross:
                self.kv[module] = (k.index_select(0, rows), v.index_select(0, rows))

    def keep(self, rows: Tensor, utterances: Tensor | None = None) -> None:
        """Keep only `rows` (utterances that are done leave the batch): every entry, cross-attention included.
        When the cross-attention entries hold one row per utterance (beam search), `utterances` says which stay."""
        for module, (k, v) in self.kv.items():
            pick = utterances if module in self.cross and utterances is not None else rows
            self.kv[module] = (k.index_select(0, pick), v.index_select(0, pick))


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


ENCODERS = {"transformer": Encoder, "conformer": ConformerEncoder}


class SpeechTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set from the tokenizer")
        self.cfg = cfg
        if cfg.encoder not in ENCODERS:
            raise ValueError(f"model.encoder must be one of {', '.join(ENCODERS)}, got {cfg.encoder!r}")
        self.encoder = ENCODERS[cfg.encoder](cfg)
        self.decoder = Decoder(cfg)
        self.ctc = nn.Linear(cfg.d_model, cfg.vocab_size)  # frame-level token posteriors for joint CTC
        self.nat = NATDecoder(cfg) if cfg.nat_decoder_layers > 0 else None

    def forward(
        self, feats: Tensor, feat_lengths: Tensor, tokens: Tensor, token_lengths: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Teacher forcing: returns logits (batch, n, vocab), encoder lengths, cross-attention weights."""
        memory, memory_lengths = self.encode(feats, feat_lengths)
        layers = range(self.cfg.n_decoder_layers) if need_weights else ()
        logits, weights = self.decode(tokens, memory, memory_lengths, token_lengths, weight_layers=layers)
        return logits, memory_lengths, weights

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, frames, n_features) -> memory (batch, frames/4, d_model), its lengths (batch,)."""
        memory, lengths, _ = self.encoder(feats, lengths)
        return memory, lengths

    def encode_with_intermediate(
        self, feats: Tensor, lengths: Tensor, layers: Collection[int]
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """`encode`, plus the outputs of encoder layers `layers` (numbered from 1; each (batch, frames/4, d_model),
        through the encoder's final LayerNorm) for intermediate CTC (Lee & Watanabe 2021)."""
        return self.encoder(feats, lengths, layers)

    def ctc_log_probs(self, memory: Tensor) -> Tensor:
        """memory (batch, frames/4, d_model) -> CTC log-posteriors (batch, frames/4, vocab), float32."""
        return self.ctc(memory).float().log_softmax(-1)

    def decode(
        self,
        tokens: Tensor,
        memory: Tensor,
        memory_lengths: Tensor,
        token_lengths: Tensor | None = None,
        weight_layers: Collection[int] = (),
    ) -> tuple[Tensor, list[Tensor | None]]:
        """Teacher-forced decoder pass: tokens (batch, n) -> logits (batch, n, vocab) and the cross-attention weights
        (batch, heads, n, frames/4) of the layers in `weight_layers` (None for the others)."""
        return self.decoder(tokens, memory, memory_lengths, token_lengths, weight_layers=weight_layers)

    def new_cache(self) -> DecoderCache:
        """An empty cache for `step`: nothing fed yet."""
        return DecoderCache(cross=frozenset(layer.cross_attn for layer in self.decoder.layers))

    def step(self, last: Tensor, memory: Tensor, memory_lengths: Tensor, cache: DecoderCache) -> Tensor:
        """One incremental decoder step: each row's newest token (rows,) -> log P(next | prefix, audio) (rows, vocab).

        `cache` holds the keys/values of the tokens fed before (rows in the same order as `last` and `memory`) and
        is extended in place by this step."""
        logits, _ = self.decoder(last[:, None], memory, memory_lengths, kv_cache=cache.kv, offset=cache.offset)
        cache.offset += 1
        return logits[:, -1].float().log_softmax(dim=-1)

    @property
    def has_nat(self) -> bool:
        return self.nat is not None

    def nat_logits(self, tokens: Tensor, lengths: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        """The non-autoregressive head: tokens (batch, n) with <sos> placeholders -> logits (batch, n, vocab)."""
        return self._nat_head()(tokens, lengths, memory, memory_lengths)

    def nat_length_logits(self, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        """The NAT head's length classifier: memory -> scores over token counts 0..nat_max_length (batch, n + 1)."""
        return self._nat_head().length_logits(memory, memory_lengths)

    def _nat_head(self) -> NATDecoder:
        if self.nat is None:
            raise ValueError("this model has no non-autoregressive head (trained with model.nat_decoder_layers = 0)")
        return self.nat
