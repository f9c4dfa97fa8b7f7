"""Non-autoregressive decoding with the NAT head (asr/model/nat.py): a fixed number of parallel passes, no beam.

    nat_length(network, memory, memory_lengths, tokenizer) -> [Hypothesis] per utterance: one pass, predicted length
    nat_max(network, memory, memory_lengths, tokenizer)    -> one pass over a maximum length, cut at the first <eos>
    mask_ctc(network, memory, memory_lengths, ctc_log_probs, tokenizer) -> the CTC draft, unsure tokens re-predicted

A score is the summed log-probability of the chosen tokens under the head. Special tokens are never chosen.
Mask-CTC keeps the draft's positions, so its hypotheses carry each token's CTC frames (`token_times`, in encoder
frames here; asr.decoding.decode turns them into seconds).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from asr.decoding.ctc import ctc_greedy
from asr.decoding.search import Hypothesis, max_output_lengths
from asr.model.nat import placeholder_rows
from asr.model.transformer import SpeechTransformer


def _log_probs(
    network: SpeechTransformer, rows: Tensor, lengths: Tensor, memory: Tensor, memory_lengths: Tensor, banned: list[int]
) -> Tensor:
    logp = network.nat_logits(rows, lengths, memory, memory_lengths).float().log_softmax(-1)  # (batch, n, vocab)
    logp[..., banned] = float("-inf")
    return logp


def _specials(tokenizer, allow_eos: bool) -> list[int]:
    banned = [tokenizer.blank, tokenizer.pad, tokenizer.sos]
    return banned if allow_eos else banned + [tokenizer.eos]


@torch.no_grad()
def nat_length(
    network: SpeechTransformer,
    memory: Tensor,
    memory_lengths: Tensor,
    tokenizer,
    length_from: str = "classifier",
    ctc_log_probs: Tensor | None = None,
) -> list[Hypothesis]:
    """Length from the classifier over pooled encoder states (or from the CTC best path, `length_from="ctc"`, which
    needs `ctc_log_probs` (batch, frames, vocab)), then every position filled in one pass."""
    if length_from == "classifier":
        lengths = network.nat_length_logits(memory, memory_lengths).argmax(-1)  # (batch,)
    elif length_from == "ctc":
        paths = ctc_greedy(ctc_log_probs, memory_lengths, tokenizer.blank)
        lengths = torch.tensor([len(p.tokens) for p in paths], device=memory.device)
    else:
        raise ValueError(f"length_from must be classifier or ctc, got {length_from!r}")
    rows = placeholder_rows(lengths, tokenizer.sos, tokenizer.pad)
    best, ids = _log_probs(network, rows, lengths, memory, memory_lengths, _specials(tokenizer, False)).max(-1)
    return [Hypothesis(ids[i, :n].tolist(), float(best[i, :n].sum())) for i, n in enumerate(lengths.tolist())]


@torch.no_grad()
def nat_max(
    network: SpeechTransformer, memory: Tensor, memory_lengths: Tensor, tokenizer, max_len_ratio: float = 1.0
) -> list[Hypothesis]:
    """A row of as many start tokens as the longest allowed output; the output ends at the first <eos>."""
    lengths = max_output_lengths(memory_lengths, max_len_ratio).clamp(max=network.cfg.nat_max_length + 1)
    rows = placeholder_rows(lengths, tokenizer.sos, tokenizer.pad)
    best, ids = _log_probs(network, rows, lengths, memory, memory_lengths, _specials(tokenizer, True)).max(-1)
    out = []
    for i, n in enumerate(lengths.tolist()):
        seq = ids[i, :n].tolist()
        end = seq.index(tokenizer.eos) if tokenizer.eos in seq else n
        out.append(Hypothesis(seq[:end], float(best[i, : min(end + 1, n)].sum())))
    return out


def _confidences(log_probs: Tensor, lengths: Tensor, blank: int) -> list[tuple[list[int], list, list[float]]]:
    """CTC best path with a confidence per token: the highest posterior over the frames that emit it."""
    probs = log_probs.max(-1).values.exp()  # (batch, frames)
    out = []
    for path, p in zip(ctc_greedy(log_probs, lengths, blank), probs.tolist()):
        out.append((path.tokens, path.spans, [max(p[s:e]) for s, e in path.spans]))
    return out


@torch.no_grad()
def mask_ctc(
    network: SpeechTransformer,
    memory: Tensor,
    memory_lengths: Tensor,
    ctc_log_probs: Tensor,
    tokenizer,
    threshold: float = 0.99,
    iterations: int = 3,
) -> list[Hypothesis]:
    """Mask-CTC (Higuchi et al. 2020): the CTC best path is the draft; its tokens with confidence below `threshold`
    are hidden and re-predicted in parallel over `iterations` passes, each filling in the most confident share of
    what is still hidden (Mask-Predict's easy-first order). The length (and each token's frames) is the draft's."""
    drafts = _confidences(ctc_log_probs, memory_lengths, tokenizer.blank)
    lengths = torch.tensor([len(t) for t, _, _ in drafts], device=memory.device)
    rows = placeholder_rows(lengths, tokenizer.sos, tokenizer.pad)
    hidden = torch.zeros_like(rows, dtype=torch.bool)
    for i, (tokens, _, conf) in enumerate(drafts):
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
    return [
        Hypothesis(rows[i, :n].tolist(), float(chosen[i, :n].sum()), token_times=list(drafts[i][1]))
        for i, n in enumerate(lengths.tolist())
    ]
