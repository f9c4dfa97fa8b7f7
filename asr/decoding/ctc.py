"""CTC on the encoder output: best-path decoding, and prefix scores for joint CTC/attention beam search.

    ctc_greedy(log_probs (batch, frames, vocab), lengths, blank) -> [BestPath(tokens, spans, score)] per utterance
    ctc_align(log_probs, lengths, token_lists, blank) -> [spans | None]: the best CTC path through given tokens
    CTCPrefixScorer(log_probs, lengths, blank, eos): scores candidate extensions of many prefixes at once
    CTCScorer: the prefix scorer as a beam-search scorer (asr.decoding.search.Scorer)

The prefix score of a hypothesis h is log P_ctc(h ... | x): the probability that the CTC alignment paths start with h
(Graves 2012; Watanabe et al. 2017, hybrid CTC/attention). In beam search each candidate token's attention score is
combined with the change in prefix score it causes, so a hypothesis that skips or repeats audio, or ends before the
audio does, is penalised by CTC, which has to account for every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

NEG_INF = float("-inf")


class BestPath(NamedTuple):
    tokens: list[int]
    spans: list[tuple[int, int]]  # [first, last + 1) encoder frames of each token
    score: float  # log-probability of the best path (every frame's best label)


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank: int) -> list[BestPath]:
    """Best path: the most likely label per frame, repeats merged, blanks removed; with each token's frames."""
    best, label = log_probs.max(dim=-1)  # (batch, frames)
    valid = torch.arange(log_probs.size(1), device=lengths.device)[None, :] < lengths[:, None]
    scores = torch.where(valid, best, 0.0).sum(1).tolist()
    out = []
    for seq, n, score in zip(label.tolist(), lengths.tolist(), scores):
        tokens: list[int] = []
        spans: list[tuple[int, int]] = []
        prev = None
        for t, tok in enumerate(seq[:n]):
            if tok != blank and tok == prev:
                spans[-1] = (spans[-1][0], t + 1)
            elif tok != blank:
                tokens.append(tok)
                spans.append((t, t + 1))
            prev = tok
        out.append(BestPath(tokens, spans, score))
    return out


def ctc_align(
    log_probs: Tensor, lengths: Tensor, token_lists: list[list[int]], blank: int
) -> list[list[tuple[int, int]] | None]:
    """Forced alignment (Viterbi): the most likely CTC path that spells each utterance's tokens, as each token's
    [first, last + 1) encoder frames; None where the tokens cannot fit in the frames. This gives token (and word)
    times to hypotheses of decoders that have none (attention greedy and beam search), as CTC segmentation does.

    The path runs over the extended label sequence blank, t1, blank, t2, ..., blank (S = 2U + 1 states): a state
    is entered from itself, the previous state, or (for a token that differs from the one two back) skipping a
    blank. All utterances advance together one frame at a time; a finished utterance's scores stop changing."""
    batch, frames, _ = log_probs.shape
    n_states = 2 * max((len(t) for t in token_lists), default=0) + 1
    ext = torch.full((batch, n_states), blank, dtype=torch.long, device=log_probs.device)
    for b, toks in enumerate(token_lists):
        if toks:
            ext[b, 1 : 2 * len(toks) : 2] = torch.tensor(toks, dtype=torch.long, device=log_probs.device)
    emit = log_probs.gather(2, ext[:, None, :].expand(batch, frames, n_states))  # (batch, frames, states)
    can_skip = torch.zeros_like(ext, dtype=torch.bool)
    can_skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    alpha = torch.full((batch, n_states), NEG_INF, device=log_probs.device)
    alpha[:, :2] = emit[:, 0, :2]
    choices = torch.zeros(frames, batch, n_states, dtype=torch.int8)  # 0 stay, 1 from s-1, 2 from s-2
    pad = torch.full((batch, 1), NEG_INF, device=log_probs.device)
    for t in range(1, frames):
        prev1 = torch.cat([pad, alpha[:, :-1]], 1)
        prev2 = torch.where(can_skip, torch.cat([pad, pad, alpha[:, :-2]], 1), NEG_INF)
        best, choice = torch.stack([alpha, prev1, prev2]).max(0)  # (batch, states)
        running = (t < lengths)[:, None]
        alpha = torch.where(running, best + emit[:, t], alpha)
        choices[t] = choice.to(torch.int8).cpu()
    final, steps = alpha.cpu().tolist(), choices.numpy()  # the backtrace walks plain numbers, not tensors
    out: list[list[tuple[int, int]] | None] = []
    for b, toks in enumerate(token_lists):
        last = 2 * len(toks)  # the final blank; the final token is state last - 1
        n = int(lengths[b])
        if not toks or n < len(toks):
            out.append(None if toks else [])
            continue
        s = last if final[b][last] >= final[b][last - 1] else last - 1
        if final[b][s] == NEG_INF:
            out.append(None)
            continue
        spans = [[n, 0] for _ in toks]  # [first, last + 1) frames of each token
        path = steps[:, b]
        for t in range(n - 1, -1, -1):
            if s % 2 == 1:
                span = spans[s // 2]
                span[0], span[1] = t, max(span[1], t + 1)
            if t > 0:
                s -= int(path[t, s])
        out.append([(a, e) for a, e in spans])
    return out


@dataclass
class CTCState:
    """Prefix state for each of n hypotheses (rows)."""

    r: Tensor  # (frames, n, 2): log P(prefix, ending at frame t in a non-blank [0] / blank [1])
    score: Tensor  # (n,) prefix score of each row's hypothesis
    last: Tensor  # (n,) last token of the prefix (-1 when empty)

    def select(self, rows: Tensor) -> "CTCState":
        return CTCState(self.r[:, rows], self.score[rows], self.last[rows])


class CTCPrefixScorer:
    """Vectorised prefix scoring over rows (hypotheses) x candidate tokens.

    log_probs: (rows, frames, vocab) CTC log-posteriors, one row per hypothesis (beams of an utterance repeat its
    row); lengths: (rows,) valid frames. Rows are kept/reordered with `select`, together with the states.
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank: int, eos: int):
        self.x = log_probs.float().transpose(0, 1).contiguous()  # (frames, rows, vocab)
        self.lengths = lengths
        self.blank, self.eos = blank, eos
        frames = self.x.size(0)
        self.valid = torch.arange(frames, device=lengths.device)[:, None] < lengths[None, :]  # (frames, rows)

    def select(self, rows: Tensor) -> None:
        self.x, self.lengths, self.valid = self.x[:, rows], self.lengths[rows], self.valid[:, rows]

    def initial_state(self) -> CTCState:
        n = self.x.size(1)
        r = torch.full((self.x.size(0), n, 2), NEG_INF, device=self.x.device)
        r[:, :, 1] = self.x[:, :, self.blank].cumsum(dim=0)  # the empty prefix: blanks only
        return CTCState(r, torch.zeros(n, device=self.x.device), torch.full((n,), -1, device=self.x.device))

    def score(self, state: CTCState, candidates: Tensor) -> tuple[Tensor, Tensor]:
        """candidates (n, c) token ids -> (prefix scores of g + c (n, c), their r tensors (frames, n, c, 2)).

        <eos> gets the probability that the whole utterance is exactly g."""
        frames, n = self.x.size(0), self.x.size(1)
        c = candidates.size(1)
        x_c = self.x.gather(2, candidates[None].expand(frames, n, c))  # (frames, n, c)
        x_blank = self.x[:, :, self.blank]  # (frames, n)
        r_prev = state.r
        # phi: probability of g ending at t and being ready for c; a repeated token needs a blank in between.
        both = torch.logaddexp(r_prev[..., 0], r_prev[..., 1])  # (frames, n)
        phi = both[:, :, None].expand(frames, n, c).clone()
        same = candidates == state.last[:, None]  # (n, c)
        phi[:, same] = r_prev[:, :, 1][:, :, None].expand(frames, n, c)[:, same]

        # The recursions r_n[t] = logaddexp(r_n[t-1], phi[t-1]) + x_c[t] and
        # r_b[t] = logaddexp(r_b[t-1], r_n[t-1]) + x_blank[t] are linear in the probability domain, so they unroll
        # into cumulative sums plus a log-cumsum-exp over the frame where the path entered: no Python loop over
        # frames. float64 keeps the large cumulative sums exact enough.
        empty = (state.last < 0)[:, None].expand(n, c)
        start_n = torch.where(empty, 0.0, NEG_INF).double()[
            None
        ]  # (1, n, c): c may start at frame 0 only if g is empty
        cum_c = x_c.double().cumsum(0)  # (frames, n, c)
        enter_n = torch.cat([start_n, phi[:-1].double() - cum_c[:-1]], dim=0)
        r_n = cum_c + torch.logcumsumexp(enter_n, dim=0)
        cum_b = x_blank.double().cumsum(0)[:, :, None]  # (frames, n, 1)
        enter_b = torch.cat([torch.full_like(start_n, NEG_INF), r_n[:-1] - cum_b[:-1]], dim=0)
        r_b = cum_b + torch.logcumsumexp(enter_b, dim=0)
        r = torch.stack([r_n, r_b], dim=-1).float()  # (frames, n, c, 2)

        # psi(g + c) = sum over the frame t where c starts: phi[t-1] * x_c[t] (t = 0 only for an empty g).
        start = torch.cat([r[:1, :, :, 0], phi[:-1] + x_c[1:]], dim=0)  # (frames, n, c)
        start = start.masked_fill(~self.valid[:, :, None], NEG_INF)
        psi = torch.logsumexp(start, dim=0)  # (n, c)

        # <eos>: g covers the whole utterance: r at its last valid frame.
        is_eos = candidates == self.eos
        if bool(is_eos.any()):
            last_frame = (self.lengths - 1).clamp(min=0)
            final = both.gather(0, last_frame[None]).squeeze(0)  # (n,)
            psi = torch.where(is_eos, final[:, None].expand(n, c), psi)
        return psi, r

    @staticmethod
    def advance(r: Tensor, psi: Tensor, rows: Tensor, cols: Tensor, tokens: Tensor) -> CTCState:
        """The state of the chosen extensions: hypothesis `rows[i]` extended by candidate column `cols[i]`."""
        return CTCState(r[:, rows, cols], psi[rows, cols], tokens)


class CTCScorer:
    """CTC prefix scores as a partial beam-search scorer: for each candidate token, the change in the row's prefix
    score (log P_ctc(g + c ...) - log P_ctc(g ...)); a prefix CTC already rules out stays ruled out."""

    partial = True

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank: int, eos: int):
        self.prefix = CTCPrefixScorer(log_probs, lengths, blank, eos)

    def init_state(self) -> CTCState:
        return self.prefix.initial_state()

    def score(self, state: CTCState, last: Tensor, candidates: Tensor | None) -> tuple[Tensor, tuple]:
        psi, r = self.prefix.score(state, candidates)
        # -inf - -inf would be NaN, which topk ranks first.
        delta = torch.where(torch.isfinite(state.score)[:, None], psi - state.score[:, None], NEG_INF)
        return delta, (psi, r, candidates)

    def select(self, pending: tuple, rows: Tensor, tokens: Tensor) -> CTCState:
        psi, r, candidates = pending
        # The candidate column of each kept extension. A row whose score is -inf may hold a token outside the
        # pre-beam: any column will do (argmax of no match is 0).
        cols = (candidates[rows] == tokens[:, None]).int().argmax(dim=1)
        return CTCPrefixScorer.advance(r, psi, rows, cols, tokens)

    def keep(self, state: CTCState, rows: Tensor) -> CTCState:
        self.prefix.select(rows)
        return state.select(rows)
