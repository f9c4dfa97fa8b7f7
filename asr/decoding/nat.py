"""Non-autoregressive decoding with the NAT head (asr/model/nat.py): a fixed number of parallel passes, no beam.

    nat_length(network, memory, memory_lengths, tokenizer) -> [(token ids, score), ...]   one pass, predicted length
    nat_max(network, memory, memory_lengths, tokenizer)    -> one pass over a maximum length, cut at the first <eos>
    mask_ctc(network, memory, memory_lengths, tokenizer)   -> CTC draft, low-confidence tokens re-predicted

A score is the summed log-probability of the chosen tokens under the head. Special tokens are never chosen.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from asr.decoding.ctc import ctc_greedy
from asr.decoding.search import max_output_lengths
from asr.model.nat import placeholder_rows
from asr.model.transformer import SpeechTransformer


def _head(network: SpeechTransformer):
    if network.nat is None:
        raise ValueError("this model has no non-autoregressive head (trained with model.nat_decoder_layers = 0)")
    return network.nat


def _log_probs(
    network: SpeechTransformer, rows: Tensor, lengths: Tensor, memory: Tensor, memory_lengths: Tensor, banned: list[int]
) -> Tensor:
    logp = _head(network)(rows, lengths, memory, memory_lengths).float().log_softmax(-1)  # (batch, n, vocab)
    logp[..., banned] = float("-inf")
    return logp


def _specials(tokenizer, allow_eos: bool) -> list[int]:
    banned = [tokenizer.blank, tokenizer.pad, tokenizer.sos]
    return banned if allow_eos else banned + [tokenizer.eos]


@torch.no_grad()
def nat_length(
    network: SpeechTransformer, memory: Tensor, memory_lengths: Tensor, tokenizer, length_from: str = "classifier"
) -> list[tuple[list[int], float]]:
    """Length from the classifier over pooled encoder states (or from the CTC best path, `length_from="ctc"`), then
    every position filled in one pass."""
    if length_from == "classifier":
        lengths = _head(network).length_logits(memory, memory_lengths).argmax(-1)  # (batch,)
    elif length_from == "ctc":
        ctc = network.ctc(memory).log_softmax(-1)
        lengths = torch.tensor([len(s) for s in ctc_greedy(ctc, memory_lengths, tokenizer.blank)], device=memory.device)
    else:
        raise ValueError(f"length_from must be classifier or ctc, got {length_from!r}")
    rows = placeholder_rows(lengths, tokenizer.sos, tokenizer.pad)
    best, ids = _log_probs(network, rows, lengths, memory, memory_lengths, _specials(tokenizer, False)).max(-1)
    return [(ids[i, :n].tolist(), float(best[i, :n].sum())) for i, n in enumerate(lengths.tolist())]


@torch.no_grad()
def nat_max(
    network: SpeechTransformer, memory: Tensor, memory_lengths: Tensor, tokenizer, max_len_ratio: float = 1.0
) -> list[tuple[list[int], float]]:
    """A row of as many start tokens as the longest allowed output; the output ends at the first <eos>."""
    nat = _head(network)
    lengths = max_output_lengths(memory_lengths, max_len_ratio).clamp(max=nat.max_length + 1)
    rows = placeholder_rows(lengths, tokenizer.sos, tokenizer.pad)
    best, ids = _log_probs(network, rows, lengths, memory, memory_lengths, _specials(tokenizer, True)).max(-1)
    out = []
    for i, n in enumerate(lengths.tolist()):
        seq = ids[i, :n].tolist()
        end = seq.index(tokenizer.eos) if tokenizer.eos in seq else n
        out.append((seq[:end], float(best[i, : min(end + 1, n)].sum())))
    return out


def _ctc_draft(log_probs: Tensor, lengths: Tensor, blank: int) -> list[tuple[list[int], list[float]]]:
    """CTC best path with a confidence per token: the highest posterior over the frames that emit it."""
    probs, best = log_probs.exp().max(-1)  # (batch, frames)
    out = []
    for seq, p, n in zip(best.tolist(), probs.tolist(), lengths.tolist()):
        tokens, conf, prev = [], [], None
        for t in range(n):
            if seq[t] != blank and seq[t] != prev:
                tokens.append(seq[t])
                conf.append(p[t])
            elif seq[t] != blank and seq[t] == prev:
                conf[-1] = max(conf[-1], p[t])
            prev = seq[t]
        out.append((tokens, conf))
    return out


@torch.no_grad()
def mask_ctc(
    network: SpeechTransformer,
    memory: Tensor,
    memory_lengths: Tensor,
    tokenizer,
    threshold: float = 0.99,
    iterations: int = 3,
) -> list[tuple[list[int], float]]:
    """Mask-CTC (Higuchi et al. 2020): the CTC best path is the draft; its tokens with confidence below `threshold`
    are hidden and re-predicted in parallel over `iterations` passes, each filling in the most confident share of
    what is still hidden (Mask-Predict's easy-first order). The length is the CTC draft's."""
    drafts = _ctc_draft(network.ctc(memory).float().log_softmax(-1), memory_lengths, tokenizer.blank)
    lengths = torch.tensor([len(t) for t, _ in drafts], device=memory.device)
    rows = placeholder_rows(lengths, tokenizer.sos, tokenizer.pad)
    hidden = torch.zeros_like(rows, dtype=torch.bool)
    for i, (tokens, conf) in enumerate(drafts):
        if tokens:
            rows[i, : len(tokens)] = torch.tensor(tokens, device=rows.device)
            low = torch.tensor(conf, device=rows.device) < threshold
            hidden[i, : len(tokens)] = low
            rows[i, : len(tokens)][low] = tokenizer.sos
    banned = _specials(tokenizer, False)
    for it in range(iterations):
        if not bool(hidden.any()):
            break
        best, ids = _log_probs(network, rows, lengths, memory, memory_lengths, banned).max(-1)
        for i in range(rows.size(0)):
            todo = hidden[i].nonzero().squeeze(1)
            if todo.numel() == 0:
                continue
            k = todo.numel() if it == iterations - 1 else math.ceil(todo.numel() / (iterations - it))
            pick = todo[best[i, todo].topk(k).indices]  # the most confident hidden positions first
            rows[i, pick] = ids[i, pick]
            hidden[i, pick] = False
    logp = _log_probs(network, rows, lengths, memory, memory_lengths, banned)
    chosen = logp.gather(2, rows.clamp(min=0)[..., None]).squeeze(-1)
    return [(rows[i, :n].tolist(), float(chosen[i, :n].sum())) for i, n in enumerate(lengths.tolist())]
