"""Non-autoregressive decoder head: every output token in one pass, from a row of start tokens.

    NATDecoder(cfg).forward(tokens (batch, n), lengths, memory, memory_lengths) -> logits (batch, n, vocab)
    NATDecoder.length_logits(memory, memory_lengths) -> (batch, max_length + 1): a classifier of the token count

The Speech-Transformer design decides the output length one of two ways: a length predictor over the encoder output
(`nat-length`), or a fixed maximum tied to the input length with everything after the first <eos> ignored
(`nat-max`). The head is a conditional masked language model (Ghazvininejad et al. 2019, Mask-Predict): its input
row holds known tokens and <sos> placeholders ("start tokens") at the positions to predict, self-attention has no
causal mask, and cross-attention reads the shared encoder. With every position a placeholder it is the plain
one-pass decoder; with some tokens given it refines a draft, as Mask-CTC does with the CTC output
(Higuchi et al. 2020). Trained jointly with the autoregressive decoder and CTC (`loss.nat_weight`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from asr.config import ModelConfig
from asr.model.layers import DecoderLayer, PositionalEncoding, padding_mask


class NATDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.d_model**-0.5)  # as in Decoder: positions must not be drowned
        self.pos = PositionalEncoding(cfg.d_model, cfg.dropout)
        layer = (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.attn_dropout)
        self.layers = nn.ModuleList(DecoderLayer(*layer) for _ in range(cfg.nat_decoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.max_length = cfg.nat_max_length
        self.length = nn.Linear(cfg.d_model, cfg.nat_max_length + 1)

    def forward(self, tokens: Tensor, lengths: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        """tokens (batch, n) with placeholders where predictions are wanted -> logits (batch, n, vocab)."""
        x = self.pos(self.embed(tokens))  # (batch, n, d_model)
        self_mask = padding_mask(lengths, tokens.size(1))[:, None, None, :]  # every real position sees every other
        memory_mask = padding_mask(memory_lengths, memory.size(1))[:, None, None, :]
        for layer in self.layers:
            x, _ = layer(x, memory, self_mask, memory_mask)
        return self.out(self.norm(x))

    def length_logits(self, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        """Mean of the valid encoder frames -> scores over token counts 0..max_length."""
        valid = padding_mask(memory_lengths, memory.size(1)).unsqueeze(-1).to(memory.dtype)  # (batch, frames, 1)
        pooled = (memory * valid).sum(1) / valid.sum(1).clamp(min=1)  # (batch, d_model)
        return self.length(pooled)


def placeholder_rows(lengths: Tensor, placeholder: int, pad: int) -> Tensor:
    """(batch,) counts -> (batch, max count) rows of placeholders, padded."""
    n = int(lengths.max()) if lengths.numel() else 0
    rows = torch.full((lengths.numel(), max(n, 1)), pad, dtype=torch.long, device=lengths.device)
    return rows.masked_fill(padding_mask(lengths, rows.size(1)), placeholder)
