"""Autoregressive search over the decoder: greedy and batched beam search, both incremental (KV cache).

    greedy_search(network, memory (batch, frames, d), memory_lengths, sos, eos, ...) -> [Hypothesis] per utterance
    beam_search(network, memory, memory_lengths, sos, eos, ..., ctc_log_probs, lm) -> [[Hypothesis] n-best] per utt.
    scored_beam_search([(scorer, weight), ...], max_lengths, sos, eos, ...)       -> the loop itself

Each step feeds only the newest token: the decoder's self-attention keys/values of the prefix and the cross-attention
keys/values of the encoder output live in a `DecoderCache`, so a step costs O(prefix) instead of re-running the
prefix. Utterances that are done leave the batch. The output ends at <eos>, or is forced to end at a maximum length
tied to the input length (`max_len_ratio` tokens per encoder frame), which stops runaway loops.

Beam search adds up weighted `Scorer`s: the attention decoder (`AttentionScorer`), CTC prefix scores
(`asr.decoding.ctc.CTCScorer`) and a token LM (`LMScorer`, shallow fusion). A scorer gives each row (hypothesis) a
log-probability for the next tokens and keeps per-row state that the search reorders after pruning; the loop has no
per-scorer branches. The first scorer is the primary one: banned tokens and the forced stop are applied to its
scores, and a partial scorer (CTC, whose cost grows with the number of candidates) scores only the primary scorer's
best 1.5 x beam tokens of each row (the pre-beam).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor

from asr.decoding.ctc import CTCScorer

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """A decoded hypothesis of one utterance."""

    tokens: list[int]  # without <sos>/<eos>
    score: float  # log-probability under the decoder's scoring, <eos> included (-inf: nothing found)
    text: str = ""  # filled in by the decoding layer (asr.decoding.decode)
    token_times: list[tuple[float, float]] | None = None  # (start, end) seconds per token, where the decoder has them
    alternatives: list["Hypothesis"] = field(default_factory=list)  # the rest of the n-best list, best first


class DecoderNetwork(Protocol):
    """What search needs of the network (asr.model.SpeechTransformer)."""

    def new_cache(self) -> Any: ...

    def step(self, last: Tensor, memory: Tensor, memory_lengths: Tensor, cache: Any) -> Tensor: ...


class Scorer(Protocol):
    """A source of next-token scores for beam search. Rows are hypotheses (utterances x beams, utterance-major)."""

    partial: bool  # True: scores only candidate tokens (the pre-beam), not the whole vocabulary

    def init_state(self) -> Any: ...

    def score(self, state: Any, last: Tensor, candidates: Tensor | None) -> tuple[Tensor, Any]:
        """Newest tokens (rows,) -> log-probabilities of the next token, (rows, vocab) or, for a partial scorer,
        (rows, candidates) for `candidates` (rows, c); and the state of every extension (pending selection)."""
        ...

    def select(self, pending: Any, rows: Tensor, tokens: Tensor) -> Any:
        """The state of the kept extensions: row `rows[i]` extended by `tokens[i]` (rows stay within an utterance)."""
        ...

    def keep(self, state: Any, rows: Tensor) -> Any:
        """Only `rows` go on (utterances that are done leave the batch)."""
        ...


class FusionLM(Protocol):
    """What shallow fusion needs of a language model (rows = hypotheses), e.g. `asr.lm.TransformerLM`."""

    def init_state(self, rows: int) -> Any: ...  # the state has .select(rows)

    def step(self, state: Any, last: Tensor) -> tuple[Tensor, Any]: ...  # (rows,) -> (rows, vocab) log-probs


def max_output_lengths(memory_lengths: Tensor, ratio: float) -> Tensor:
    """Most tokens (incl. <eos>) an utterance may produce: ratio * encoder frames, at least 2."""
    return (memory_lengths.float() * ratio).long().clamp(min=2)


class AttentionScorer:
    """The attention decoder as a scorer. memory (utterances, frames, d) has one row per utterance and the rows of
    the search are utterances x `beams` (utterance-major): the cross-attention keys/values are computed once per
    utterance, and its beams attend to them together (asr.model.layers.MultiHeadAttention)."""

    partial = False

    def __init__(self, network: DecoderNetwork, memory: Tensor, memory_lengths: Tensor, beams: int = 1):
        self.network, self.memory, self.memory_lengths, self.beams = network, memory, memory_lengths, beams

    def init_state(self) -> Any:
        return self.network.new_cache()

    def score(self, cache: Any, last: Tensor, candidates: Tensor | None = None) -> tuple[Tensor, Any]:
        return self.network.step(last, self.memory, self.memory_lengths, cache), cache  # the cache grew in place

    def select(self, cache: Any, rows: Tensor, tokens: Tensor) -> Any:
        cache.reorder(rows)  # within an utterance: the cross-attention keys/values stay
        return cache

    def keep(self, cache: Any, rows: Tensor) -> Any:
        utterances = rows.view(-1, self.beams)[:, 0] // self.beams  # rows come in whole blocks of beams
        self.memory, self.memory_lengths = self.memory[utterances], self.memory_lengths[utterances]
        cache.keep(rows, utterances)
        return cache


class LMScorer:
    """A token LM (shallow fusion) as a scorer; its state follows the same row moves as the decoder cache."""

    partial = False

    def __init__(self, lm: FusionLM, rows: int):
        self.lm, self.rows = lm, rows

    def init_state(self) -> Any:
        return self.lm.init_state(self.rows)

    def score(self, state: Any, last: Tensor, candidates: Tensor | None = None) -> tuple[Tensor, Any]:
        return self.lm.step(state, last)

    def select(self, pending: Any, rows: Tensor, tokens: Tensor) -> Any:
        return pending.select(rows)

    def keep(self, state: Any, rows: Tensor) -> Any:
        return state.select(rows)


@torch.no_grad()
def greedy_search(
    network: DecoderNetwork,
    memory: Tensor,
    memory_lengths: Tensor,
    sos: int,
    eos: int,
    max_len_ratio: float = 1.0,
    banned: Sequence[int] = (),
) -> list[Hypothesis]:
    """The most likely next token at every step; its score is the sum of the chosen tokens' log-probabilities."""
    batch, device = memory.size(0), memory.device
    max_lens = max_output_lengths(memory_lengths, max_len_ratio)
    out: list[list[int]] = [[] for _ in range(batch)]
    scores = torch.zeros(batch, device=device)
    alive = torch.arange(batch, device=device)  # original index of each row still decoding
    last = torch.full((batch,), sos, dtype=torch.long, device=device)
    banned_ids = torch.tensor(list(banned), dtype=torch.long, device=device)
    cache = network.new_cache()
    for t in range(int(max_lens.max())):
        logp = network.step(last, memory, memory_lengths, cache)  # (rows, vocab)
        if banned_ids.numel():
            logp[:, banned_ids] = NEG_INF
        token = logp.argmax(dim=-1)
        token = torch.where(max_lens[alive] <= t + 1, torch.full_like(token, eos), token)  # forced stop
        scores[alive] += logp.gather(1, token[:, None]).squeeze(1)
        for row, tok in zip(alive.tolist(), token.tolist()):
            if tok != eos:
                out[row].append(tok)
        keep = (token != eos).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        if keep.numel() < alive.numel():  # finished utterances leave the batch
            alive, memory, memory_lengths = alive[keep], memory[keep], memory_lengths[keep]
            cache.keep(keep)
        last = token[keep]
    return [Hypothesis(seq, score) for seq, score in zip(out, scores.tolist())]


@torch.no_grad()
def beam_search(
    network: DecoderNetwork,
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
    banned: Sequence[int] = (),
    lm: FusionLM | None = None,
    lm_weight: float = 0.0,
) -> list[list[Hypothesis]]:
    """Joint CTC/attention beam search with optional shallow fusion, batched over utterances x beams.

    Each extension by token y scores (1 - ctc_weight) log P_att(y) + ctc_weight (change in the CTC prefix score)
    + lm_weight log P_lm(y); with ctc_log_probs None or ctc_weight 0 the CTC term is left out (and the attention term
    is unweighted), with lm None or lm_weight 0 the LM term. `banned` tokens (<blank>, <pad>, <sos>) are never
    emitted. Returns, per utterance, up to `nbest` hypotheses, best first."""
    if lm_weight < 0:  # the stopping rule relies on scores only falling as hypotheses grow
        raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
    k = beam_size
    lengths_rows = memory_lengths.repeat_interleave(k, dim=0)  # (batch * k,): the CTC scorer's rows
    use_ctc = ctc_log_probs is not None and ctc_weight > 0
    scorers: list[tuple[Scorer, float]] = [
        (AttentionScorer(network, memory, memory_lengths, k), 1.0 - ctc_weight if use_ctc else 1.0)
    ]
    if use_ctc:
        scorers.append((CTCScorer(ctc_log_probs.repeat_interleave(k, dim=0), lengths_rows, blank, eos), ctc_weight))
    if lm is not None and lm_weight > 0:
        scorers.append((LMScorer(lm, memory.size(0) * k), lm_weight))
    max_lens = max_output_lengths(memory_lengths, max_len_ratio)
    return scored_beam_search(scorers, max_lens, sos, eos, k, length_penalty, nbest, banned)


def _weighted(weight: float, scores: Tensor) -> Tensor:
    """weight * scores, where -inf (a token ruled out) stays -inf even for weight 0 (0 * -inf would be NaN)."""
    if weight == 0:
        return scores.masked_fill(torch.isfinite(scores), 0.0)
    return scores if weight == 1 else weight * scores


@torch.no_grad()
def scored_beam_search(
    scorers: Sequence[tuple[Scorer, float]],
    max_lens: Tensor,
    sos: int,
    eos: int,
    beam_size: int,
    length_penalty: float = 1.0,
    nbest: int = 1,
    banned: Sequence[int] = (),
) -> list[list[Hypothesis]]:
    """Batched beam search over weighted scorers, whose rows are (utterances x beam_size), utterance-major.
    max_lens: (batch,) most tokens per utterance, <eos> included.

    Each step keeps, per utterance, the `beam_size` best unfinished extensions; extensions ending in <eos> that rank
    within the top `beam_size` are set aside as finished. An utterance is done once `nbest` finished hypotheses
    score at least as well as the best unfinished one could if it ended at the next step (for length_penalty 0
    this is exact, as scores only fall), or at its maximum length; its rows then leave the batch. Counting any
    `beam_size` finished hypotheses instead would stop too early with a confident model: low-scoring <eos>
    extensions fill the top ranks while the right hypothesis is still growing.
    """
    batch, k = max_lens.numel(), beam_size
    device = max_lens.device
    finished: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(batch)]  # (rank score, hypothesis)
    alive = torch.arange(batch, device=device)  # original utterance index of each block of k rows
    tokens = torch.full((batch * k, 1), sos, dtype=torch.long, device=device)  # (batch * k, 1 + t)
    scores = torch.full((batch, k), NEG_INF, device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 0
    ranks = torch.arange(2 * k, device=device)
    states = [s.init_state() for s, _ in scorers]
    banned_ids = torch.tensor(list(banned), dtype=torch.long, device=device)
    (primary, primary_weight), others = scorers[0], scorers[1:]

    for t in range(int(max_lens.max())):
        n = alive.numel()
        last = tokens[:, -1]
        logp, pending0 = primary.score(states[0], last, None)  # (n * k, vocab)
        vocab = logp.size(-1)
        if banned_ids.numel():
            logp[:, banned_ids] = NEG_INF
        at_limit = (max_lens[alive] <= t + 1).repeat_interleave(k)
        if at_limit.any():  # forced stop: only <eos> is allowed
            logp[at_limit] = torch.where(torch.arange(vocab, device=device) == eos, logp[at_limit], NEG_INF)
        total = _weighted(primary_weight, logp)
        pending, candidates = [pending0], None
        for (scorer, weight), state in zip(others, states[1:]):
            if scorer.partial:  # pre-beam: the primary scorer's best tokens; the others are ruled out
                if candidates is None:
                    candidates = logp.topk(min(vocab, int(1.5 * k) + 1), dim=1).indices  # (n * k, c)
                part, p = scorer.score(state, last, candidates)
                joint = total.gather(1, candidates) + _weighted(weight, part)
                total = torch.full_like(total, NEG_INF).scatter_(1, candidates, joint)
            else:
                full, p = scorer.score(state, last, None)
                total = total + _weighted(weight, full.to(total.dtype))
            pending.append(p)
        cand = (scores[:, :, None] + total.view(n, k, vocab)).view(n, k * vocab)
        top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)  # (n, 2k): enough to refill k unfinished
        src_beam, top_tok = top_idx // vocab, top_idx % vocab
        is_eos = top_tok == eos

        # Finished: <eos> extensions that rank within the top k.
        ended = is_eos & (ranks[: is_eos.size(1)] < k) & torch.isfinite(top_scores)
        for b, j in ended.nonzero().tolist():
            seq = tokens[b * k + int(src_beam[b, j]), 1:].tolist()
            score = float(top_scores[b, j])
            finished[int(alive[b])].append((score / (len(seq) + 1) ** length_penalty, Hypothesis(seq, score)))

        # Continue with the k best non-<eos> extensions (stable sort puts <eos> ones last).
        order = (is_eos.long() * (2 * k) + ranks[: is_eos.size(1)]).argsort(dim=1)[:, :k]
        scores = top_scores.gather(1, order).masked_fill(is_eos.gather(1, order), NEG_INF)
        rows = (torch.arange(n, device=device)[:, None] * k + src_beam.gather(1, order)).view(-1)
        new_tokens = top_tok.gather(1, order).view(-1)
        tokens = torch.cat([tokens[rows], new_tokens[:, None]], dim=1)
        states = [s.select(p, rows, new_tokens) for (s, _), p in zip(scorers, pending)]

        # Best score an unfinished hypothesis could reach by ending at the next step (all have length t + 1).
        best_open = (scores.max(dim=1).values / (t + 2) ** length_penalty).tolist()
        done = torch.tensor(
            [sum(r >= bound for r, _ in finished[u]) >= nbest for u, bound in zip(alive.tolist(), best_open)],
            device=device,
        ) | (max_lens[alive] <= t + 1)
        if bool(done.all()):
            break
        if bool(done.any()):  # done utterances leave the batch
            keep = (~done).nonzero().squeeze(1)
            keep_rows = (keep[:, None] * k + torch.arange(k, device=device)).view(-1)
            alive, scores, tokens = alive[keep], scores[keep], tokens[keep_rows]
            states = [s.keep(st, keep_rows) for (s, _), st in zip(scorers, states)]

    results = []
    for hyps in finished:
        hyps.sort(key=lambda h: h[0], reverse=True)
        results.append([h for _, h in hyps[:nbest]])
    return results
