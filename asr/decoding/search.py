"""Autoregressive search over the decoder: greedy and batched beam search, both incremental (KV cache).

    greedy_search(decoder, memory (batch, frames, d), memory_lengths, ...) -> list of token-id lists
    beam_search(decoder, memory, memory_lengths, ...) -> list (per utterance) of n-best `Hypothesis`

Each step feeds only the newest token: the decoder's self-attention keys/values of the prefix and the cross-attention
keys/values of the encoder output live in a cache dict, so a step costs O(prefix) instead of re-running the prefix.
Utterances that are done leave the batch. The output ends at <eos>, or is forced to end at a maximum length tied to
the input length (`max_len_ratio` tokens per encoder frame), which stops runaway loops.

Beam search can add a token-level language model (shallow fusion): any object with `init_state(rows)`,
`step(state, last_tokens (rows,)) -> (log_probs (rows, vocab), state)` and `state.select(rows)`, e.g.
`asr.lm.TransformerLM`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from asr.decoding.ctc import CTCPrefixScorer, CTCState
from asr.model.transformer import Decoder


class FusionLM(Protocol):
    """What beam search needs of a language model for shallow fusion (rows = hypotheses)."""

    def init_state(self, rows: int) -> Any: ...

    def step(self, state: Any, last: Tensor) -> tuple[Tensor, Any]: ...  # (rows,) -> (rows, vocab) log-probs


@dataclass
class Hypothesis:
    tokens: list[int]  # without <sos>/<eos>
    score: float  # total log-probability, <eos> included (with an LM: the fused score)
    norm_score: float  # score / (len + 1) ** length_penalty: what the beam ranks by


def max_output_lengths(memory_lengths: Tensor, ratio: float) -> Tensor:
    """Most tokens (incl. <eos>) an utterance may produce: ratio * encoder frames, at least 2."""
    return (memory_lengths.float() * ratio).long().clamp(min=2)


def _select(cache: dict, rows: Tensor, skip: set | None = None) -> None:
    """Keep/reorder the batch rows of every cached key/value tensor (in place)."""
    for module, (k, v) in cache.items():
        if skip is None or module not in skip:
            cache[module] = (k.index_select(0, rows), v.index_select(0, rows))


def _step(decoder: Decoder, last: Tensor, memory: Tensor, lengths: Tensor, cache: dict, t: int) -> Tensor:
    """One incremental step: last tokens (n, 1) -> log-probabilities (n, vocab)."""
    logits, _ = decoder(last, memory, lengths, kv_cache=cache, offset=t)
    return logits[:, -1].float().log_softmax(dim=-1)


@torch.no_grad()
def greedy_search(
    decoder: Decoder, memory: Tensor, memory_lengths: Tensor, sos: int, eos: int, max_len_ratio: float = 1.0
) -> list[list[int]]:
    batch = memory.size(0)
    max_lens = max_output_lengths(memory_lengths, max_len_ratio)
    out: list[list[int]] = [[] for _ in range(batch)]
    alive = torch.arange(batch, device=memory.device)  # original index of each row still decoding
    last = torch.full((batch, 1), sos, dtype=torch.long, device=memory.device)
    cache: dict = {}
    for t in range(int(max_lens.max())):
        logp = _step(decoder, last, memory, memory_lengths, cache, t)
        token = logp.argmax(dim=-1)
        token = torch.where(max_lens[alive] <= t + 1, torch.full_like(token, eos), token)  # forced stop
        for row, tok in zip(alive.tolist(), token.tolist()):
            if tok != eos:
                out[row].append(tok)
        keep = (token != eos).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        if keep.numel() < alive.numel():  # finished utterances leave the batch
            alive, memory, memory_lengths = alive[keep], memory[keep], memory_lengths[keep]
            _select(cache, keep)
        last = token[keep, None]
    return out


def _joint_scores(
    logp: Tensor, ctc: CTCPrefixScorer, state: CTCState, weight: float, beam_size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Attention log-probs (rows, vocab) -> joint scores, -inf outside each row's pre-beam.

    Also returns the candidates' CTC prefix scores and states, and for each (row, token) its pre-beam column
    (-1 outside), so the chosen extensions can carry their CTC state forward."""
    rows, vocab = logp.shape
    width = min(vocab, int(1.5 * beam_size) + 1)
    att, cand = logp.topk(width, dim=1)  # (rows, width)
    psi, r = ctc.score(state, cand)
    # A prefix CTC already rules out (score -inf) stays ruled out; -inf - -inf would be NaN, which topk ranks first.
    delta = torch.where(torch.isfinite(state.score)[:, None], psi - state.score[:, None], float("-inf"))
    joint = ((1 - weight) * att + weight * delta).masked_fill(~torch.isfinite(att), float("-inf"))
    out = torch.full_like(logp, float("-inf")).scatter_(1, cand, joint)
    col = torch.full((rows, vocab), -1, dtype=torch.long, device=logp.device)
    col.scatter_(1, cand, torch.arange(width, device=logp.device).expand(rows, width))
    return out, psi, r, col


@torch.no_grad()
def beam_search(
    decoder: Decoder,
    memory: Tensor,
    memory_lengths: Tensor,
    sos: int,
    eos: int,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    max_len_ratio: float = 1.0,
    nbest: int = 1,
    ctc_log_probs: Tensor | None = None,
    ctc_weight: float = 0.0,
    blank: int = 0,
    banned: tuple[int, ...] = (),
    lm: FusionLM | None = None,
    lm_weight: float = 0.0,
) -> list[list[Hypothesis]]:
    """Batched beam search: (utterances x beam) rows decode together in one tensor.

    With `ctc_log_probs` (batch, frames, vocab) and 0 < ctc_weight, each extension scores
    (1 - ctc_weight) * attention log-prob + ctc_weight * change in CTC prefix score (joint CTC/attention decoding);
    only the 1.5 x beam_size best tokens of each hypothesis by attention are CTC-scored (the pre-beam).
    `banned` tokens (<blank>, <pad>, <sos>, ...) are never emitted.

    With `lm` and 0 < lm_weight (shallow fusion), every extension by token y, <eos> included, also gets
    lm_weight * log P_lm(y | prefix); with CTC the pre-beam is still chosen by attention alone. The LM state follows
    the same row reordering and removal as the decoder cache. lm None or lm_weight 0 is the search without an LM.

    Each step keeps, per utterance, the `beam_size` best unfinished extensions; extensions ending in <eos> that rank
    within the top `beam_size` are set aside as finished. An utterance is done once `nbest` finished hypotheses
    score at least as well as the best unfinished one could if it ended at the next step (for length_penalty 0
    this is exact, as scores only fall), or at its maximum length; its rows then leave the batch. Counting any
    `beam_size` finished hypotheses instead would stop too early with a confident model: low-scoring <eos>
    extensions fill the top ranks while the right hypothesis is still growing.
    """
    batch, k = memory.size(0), beam_size
    device = memory.device
    max_lens = max_output_lengths(memory_lengths, max_len_ratio)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]

    alive = torch.arange(batch, device=device)  # original utterance index of each block of k rows
    memory = memory.repeat_interleave(k, dim=0)  # (batch * k, frames, d)
    memory_lengths = memory_lengths.repeat_interleave(k, dim=0)
    tokens = torch.full((batch * k, 1), sos, dtype=torch.long, device=device)  # (batch * k, 1 + t)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 0
    cache: dict = {}
    cross = {layer.cross_attn for layer in decoder.layers}
    ranks = torch.arange(2 * k, device=device)
    use_ctc = ctc_log_probs is not None and ctc_weight > 0
    if use_ctc:
        ctc = CTCPrefixScorer(ctc_log_probs.repeat_interleave(k, dim=0), memory_lengths, blank, eos)
        ctc_state = ctc.initial_state()
    if lm_weight < 0:  # the stopping rule relies on scores only falling as hypotheses grow
        raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
    use_lm = lm is not None and lm_weight > 0
    if use_lm:
        lm_state = lm.init_state(batch * k)
    banned_ids = torch.tensor(banned, dtype=torch.long, device=device)

    for t in range(int(max_lens.max())):
        n = alive.numel()
        logp = _step(decoder, tokens[:, -1:], memory, memory_lengths, cache, t)  # (n * k, vocab)
        vocab = logp.size(-1)
        at_limit = (max_lens[alive] <= t + 1).repeat_interleave(k)
        if banned_ids.numel():
            logp[:, banned_ids] = float("-inf")
        if at_limit.any():  # forced stop: only <eos> is allowed
            logp[at_limit] = torch.where(
                torch.arange(vocab, device=device) == eos, logp[at_limit], torch.tensor(float("-inf"), device=device)
            )
        if use_ctc:
            logp, ctc_psi, ctc_r, ctc_col = _joint_scores(logp, ctc, ctc_state, ctc_weight, k)
        if use_lm:  # -inf (banned, forced stop, outside the CTC pre-beam) stays -inf
            lm_logp, lm_state = lm.step(lm_state, tokens[:, -1])  # (n * k, vocab)
            logp = logp + lm_weight * lm_logp.to(logp.dtype)
        cand = (scores[:, :, None] + logp.view(n, k, vocab)).view(n, k * vocab)
        top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)  # (n, 2k): enough to refill k unfinished
        src_beam, top_tok = top_idx // vocab, top_idx % vocab
        is_eos = top_tok == eos

        # Finished: <eos> extensions that rank within the top k.
        ended = is_eos & (ranks[: is_eos.size(1)] < k) & torch.isfinite(top_scores)
        for b, j in ended.nonzero().tolist():
            row = b * k + int(src_beam[b, j])
            seq = tokens[row, 1:].tolist()
            score = float(top_scores[b, j])
            finished[int(alive[b])].append(Hypothesis(seq, score, score / (len(seq) + 1) ** length_penalty))

        # Continue with the k best non-<eos> extensions (stable sort puts <eos> ones last).
        order = (is_eos.long() * (2 * k) + ranks[: is_eos.size(1)]).argsort(dim=1)[:, :k]
        scores = top_scores.gather(1, order).masked_fill(is_eos.gather(1, order), float("-inf"))
        rows = (torch.arange(n, device=device)[:, None] * k + src_beam.gather(1, order)).view(-1)
        new_tokens = top_tok.gather(1, order).view(-1)
        tokens = torch.cat([tokens[rows], new_tokens[:, None]], dim=1)
        _select(cache, rows, skip=cross)  # cross-attention keys are the same for every beam of an utterance
        if use_ctc:  # rows whose score is -inf may point at a token outside the pre-beam: any column will do
            cols = ctc_col[rows, new_tokens].clamp(min=0)
            ctc_state = CTCPrefixScorer.advance(ctc_state, ctc_r, ctc_psi, rows, cols, new_tokens)
        if use_lm:
            lm_state = lm_state.select(rows)

        # Best score an unfinished hypothesis could reach by ending at the next step (all have length t + 1).
        best_open = (scores.max(dim=1).values / (t + 2) ** length_penalty).tolist()
        done = torch.tensor(
            [sum(h.norm_score >= bound for h in finished[u]) >= nbest for u, bound in zip(alive.tolist(), best_open)],
            device=device,
        ) | (max_lens[alive] <= t + 1)
        if bool(done.all()):
            break
        if bool(done.any()):  # done utterances leave the batch
            keep = (~done).nonzero().squeeze(1)
            keep_rows = (keep[:, None] * k + torch.arange(k, device=device)).view(-1)
            alive, scores = alive[keep], scores[keep]
            tokens, memory, memory_lengths = tokens[keep_rows], memory[keep_rows], memory_lengths[keep_rows]
            _select(cache, keep_rows)
            if use_ctc:
                ctc.select(keep_rows)
                ctc_state = ctc_state.select(keep_rows)
            if use_lm:
                lm_state = lm_state.select(keep_rows)

    results = []
    for hyps in finished:
        hyps.sort(key=lambda h: h.norm_score, reverse=True)
        results.append(hyps[:nbest])
    return results
