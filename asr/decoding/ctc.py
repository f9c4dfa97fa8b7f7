"""CTC on the encoder output: greedy decoding, and prefix scores for joint CTC/attention beam search.

    ctc_greedy(log_probs (batch, frames, vocab), lengths, blank) -> token-id lists
    CTCPrefixScorer(log_probs, lengths, blank, eos): scores candidate extensions of many prefixes at once

The prefix score of a hypothesis h is log P_ctc(h ... | x): the probability that the CTC alignment paths start with h
(Graves 2012; Watanabe et al. 2017, hybrid CTC/attention). In beam search each candidate token's attention score is
combined with the change in prefix score it causes, so a hypothesis that skips or repeats audio, or ends before the
audio does, is penalised by CTC, which has to account for every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NEG_INF = float("-inf")


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank: int) -> list[list[int]]:
    """Best path: the most likely token per frame, repeats merged, blanks removed."""
    best = log_probs.argmax(dim=-1)  # (batch, frames)
    out = []
    for seq, n in zip(best.tolist(), lengths.tolist()):
        tokens, prev = [], None
        for t in seq[:n]:
            if t != prev and t != blank:
                tokens.append(t)
            prev = t
        out.append(tokens)
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
    def advance(state: CTCState, r: Tensor, psi: Tensor, rows: Tensor, cols: Tensor, tokens: Tensor) -> CTCState:
        """The state of the chosen extensions: hypothesis `rows[i]` extended by candidate column `cols[i]`."""
        return CTCState(r[:, rows, cols], psi[rows, cols], tokens)
