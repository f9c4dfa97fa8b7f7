"""Decoding searches in numpy, for the torch-free runtime: the same hypotheses and scores as asr.decoding.

    greedy_search(net, memory_lengths (B,), sos, eos, max_len_ratio, banned)  -> [Hypothesis] per utterance
    beam_search(net, memory_lengths, sos, eos, beam_size, ..., ctc_log_probs (B, T, V), ctc_weight, lm, lm_weight)
                                                                               -> [[Hypothesis] n-best] per utterance
    ctc_greedy(log_probs (B, T, V), lengths (B,), blank)                      -> [BestPath(tokens, spans, score)]

The decoder comes as a `StepNetwork` (start / step / select over hypothesis rows), so the same code drives ONNX
Runtime sessions (asr.runtime.model.DecoderSteps) or, in tests, the torch model. Every rule follows the torch
searches (asr.decoding.search, asr.decoding.ctc): the maximum output length, argmax ties (first wins), float32
score sums, the CTC pre-beam of 1.5 x beam candidates, the stopping rule and the length penalty; see those modules
for why each rule is what it is. Only numpy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, Sequence

import numpy as np

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """A decoded hypothesis of one utterance (fields as asr.decoding.search.Hypothesis)."""

    tokens: list[int]  # without <sos>/<eos>
    score: float  # log-probability under the decoder's scoring, <eos> included (-inf: nothing found)
    text: str = ""
    token_times: list[tuple[float, float]] | None = None
    alternatives: list["Hypothesis"] = field(default_factory=list)


class BestPath(NamedTuple):
    tokens: list[int]
    spans: list[tuple[int, int]]  # [first, last + 1) encoder frames of each token
    score: float  # log-probability of the best path


class StepNetwork(Protocol):
    """The incremental decoder over hypothesis rows."""

    def start(self, rows: np.ndarray) -> object:
        """A fresh state for rows (R,) int64: the utterance (in the encoded batch) each row belongs to."""
        ...

    def step(self, tokens: np.ndarray, state: object) -> tuple[np.ndarray, object]:
        """tokens (R,) int64, each row's newest token -> (log-probs (R, vocab) float32, new state)."""
        ...

    def select(self, state: object, rows: np.ndarray) -> object:
        """The state with only / reordered rows (R',) int64, indices into the current rows."""
        ...


def max_output_lengths(memory_lengths: np.ndarray, ratio: float) -> np.ndarray:
    """Most tokens (incl. <eos>) an utterance may produce: ratio * encoder frames, at least 2 (float32 as in torch)."""
    scaled = np.asarray(memory_lengths).astype(np.float32) * np.float32(ratio)
    return np.maximum(scaled.astype(np.int64), 2)


def _log_probs(net: StepNetwork, tokens: np.ndarray, state: object) -> tuple[np.ndarray, object]:
    logp, state = net.step(tokens, state)
    return np.array(logp, dtype=np.float32, copy=True), state  # a copy: bans write into it (ORT may own the buffer)


def greedy_search(
    net: StepNetwork,
    memory_lengths: np.ndarray,
    sos: int,
    eos: int,
    max_len_ratio: float = 1.0,
    banned: Sequence[int] = (),
) -> list[Hypothesis]:
    """The most likely next token at every step; its score is the sum of the chosen tokens' log-probabilities."""
    memory_lengths = np.asarray(memory_lengths, dtype=np.int64)
    batch = memory_lengths.shape[0]
    max_lens = max_output_lengths(memory_lengths, max_len_ratio)
    out: list[list[int]] = [[] for _ in range(batch)]
    scores = np.zeros(batch, dtype=np.float32)
    alive = np.arange(batch)  # original index of each row still decoding
    last = np.full(batch, sos, dtype=np.int64)
    banned_ids = np.asarray(list(banned), dtype=np.int64)
    state = net.start(alive.copy())
    for t in range(int(max_lens.max(initial=0))):
        logp, state = _log_probs(net, last, state)  # (rows, vocab)
        if banned_ids.size:
            logp[:, banned_ids] = NEG_INF
        token = logp.argmax(axis=-1)
        token = np.where(max_lens[alive] <= t + 1, eos, token)  # forced stop
        scores[alive] += logp[np.arange(len(token)), token]
        for row, tok in zip(alive.tolist(), token.tolist()):
            if tok != eos:
                out[row].append(tok)
        keep = np.flatnonzero(token != eos)
        if keep.size == 0:
            break
        if keep.size < alive.size:  # finished utterances leave the batch
            alive = alive[keep]
            state = net.select(state, keep)
        last = token[keep].astype(np.int64)
    return [Hypothesis(seq, float(score)) for seq, score in zip(out, scores)]


def ctc_greedy(log_probs: np.ndarray, lengths: np.ndarray, blank: int) -> list[BestPath]:
    """Best path: the most likely label per frame, repeats merged, blanks removed; with each token's frames."""
    log_probs = np.asarray(log_probs, dtype=np.float32)
    lengths = np.asarray(lengths, dtype=np.int64)
    label = log_probs.argmax(axis=-1)  # (batch, frames)
    best = np.take_along_axis(log_probs, label[..., None], axis=-1)[..., 0]
    valid = np.arange(log_probs.shape[1])[None, :] < lengths[:, None]
    scores = np.where(valid, best, np.float32(0)).sum(axis=1, dtype=np.float32)
    out = []
    for seq, n, score in zip(label.tolist(), lengths.tolist(), scores):
        tokens: list[int] = []
        spans: list[tuple[int, int]] = []
        prev = None
        for t, tok in enumerate(seq[:n]):
            if tok != blank and tok == prev:  # the same token held over frames
                spans[-1] = (spans[-1][0], t + 1)
            elif tok != blank:
                tokens.append(tok)
                spans.append((t, t + 1))
            prev = tok
        out.append(BestPath(tokens, spans, float(score)))
    return out


# --- CTC prefix scores (asr.decoding.ctc.CTCPrefixScorer) ---------------------------------------------------------


def _logsumexp0(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x))) over axis 0; -inf where every term is -inf (not NaN)."""
    top = x.max(axis=0)
    shift = np.where(np.isfinite(top), top, 0).astype(x.dtype)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - shift).sum(axis=0)) + shift


@dataclass
class CTCState:
    """Prefix state of n hypothesis rows."""

    r: np.ndarray  # (frames, n, 2) float32: log P(prefix, ending at frame t in a non-blank [0] / blank [1])
    score: np.ndarray  # (n,) float32 prefix score of each row's hypothesis
    last: np.ndarray  # (n,) int64 last token of the prefix (-1 when empty)


class CTCPrefixScorer:
    """Prefix scores of candidate extensions of many hypotheses at once (Graves 2012; Watanabe et al. 2017).

    log_probs: (utterances, frames, vocab); `rows` (n,) names the utterance of each hypothesis row. The log-probs
    stay one per utterance (beam rows index them), which is what the torch scorer computes with repeated rows."""

    def __init__(self, log_probs: np.ndarray, lengths: np.ndarray, rows: np.ndarray, blank: int, eos: int):
        self.x = np.ascontiguousarray(np.asarray(log_probs, dtype=np.float32).transpose(1, 0, 2))  # (frames, B, V)
        self.utt = np.asarray(rows, dtype=np.int64)  # (n,)
        self.lengths = np.asarray(lengths, dtype=np.int64)  # (B,)
        self.blank, self.eos = blank, eos

    def keep(self, rows: np.ndarray) -> None:
        self.utt = self.utt[rows]

    def initial_state(self) -> CTCState:
        frames, n = self.x.shape[0], self.utt.size
        r = np.full((frames, n, 2), NEG_INF, dtype=np.float32)
        # the empty prefix: blanks only (accumulated in float64, as torch's cumsum does)
        r[:, :, 1] = self.x[:, self.utt, self.blank].astype(np.float64).cumsum(axis=0).astype(np.float32)
        return CTCState(r, np.zeros(n, dtype=np.float32), np.full(n, -1, dtype=np.int64))

    def score(self, state: CTCState, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """candidates (n, c) -> (prefix scores of g + c (n, c) float32, their r (frames, n, c, 2) float32).
        <eos> gets the probability that the whole utterance is exactly g."""
        frames = self.x.shape[0]
        n, c = candidates.shape
        x_c = self.x[:, self.utt[:, None], candidates]  # (frames, n, c)
        x_blank = self.x[:, self.utt, self.blank]  # (frames, n)
        r_prev = state.r
        both = np.logaddexp(r_prev[..., 0], r_prev[..., 1])  # (frames, n)
        # phi: g ending at t and ready for c; repeating g's last token needs a blank in between
        same = candidates == state.last[:, None]  # (n, c)
        phi = np.where(same[None], r_prev[:, :, 1:2], both[:, :, None])  # (frames, n, c)

        # The recursions are linear in the probability domain: cumulative sums plus a log-cumsum-exp over the frame
        # where the path entered (float64 keeps the large sums exact enough), as in the torch scorer.
        start_n = np.where(state.last < 0, 0.0, NEG_INF)[None, :, None].repeat(c, axis=2)  # (1, n, c)
        cum_c = x_c.astype(np.float64).cumsum(axis=0)
        enter_n = np.concatenate([start_n, phi[:-1].astype(np.float64) - cum_c[:-1]], axis=0)
        r_n = cum_c + np.logaddexp.accumulate(enter_n, axis=0)
        cum_b = x_blank.astype(np.float64).cumsum(axis=0)[:, :, None]  # (frames, n, 1)
        enter_b = np.concatenate([np.full((1, n, c), NEG_INF), r_n[:-1] - cum_b[:-1]], axis=0)
        r_b = cum_b + np.logaddexp.accumulate(enter_b, axis=0)
        r = np.stack([r_n, r_b], axis=-1).astype(np.float32)  # (frames, n, c, 2)

        # psi(g + c): summed over the frame where c starts (frame 0 only for an empty g), valid frames only
        start = np.concatenate([r[:1, :, :, 0], phi[:-1] + x_c[1:]], axis=0)  # (frames, n, c)
        valid = np.arange(frames)[:, None] < self.lengths[self.utt][None, :]  # (frames, n)
        start = np.where(valid[:, :, None], start, np.float32(NEG_INF))
        psi = _logsumexp0(start).astype(np.float32)  # (n, c)

        is_eos = candidates == self.eos
        if is_eos.any():  # g covers the whole utterance: r at its last valid frame
            last_frame = np.maximum(self.lengths[self.utt] - 1, 0)
            final = both[last_frame, np.arange(n)]  # (n,)
            psi = np.where(is_eos, final[:, None], psi)
        return psi, r


# --- beam search ----------------------------------------------------------------------------------------------------


def _weighted(weight: float, scores: np.ndarray) -> np.ndarray:
    """weight * scores in float32, where -inf stays -inf even for weight 0 (0 * -inf would be NaN)."""
    if weight == 0:
        return np.where(np.isfinite(scores), np.float32(0), scores)
    return scores if weight == 1 else scores * np.float32(weight)


def _pick(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x (rows, m), idx (rows, j) -> x[r, idx[r, i]] (rows, j): np.take_along_axis on axis 1, without its Python
    overhead (several times the gather itself at beam sizes, where it runs ~10 times a step)."""
    return x[np.arange(x.shape[0])[:, None], idx]


def _topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row (rows, m), best first: (values, indices)."""
    if k < x.shape[1]:
        part = np.argpartition(-x, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(x.shape[1]), x.shape)
    vals = _pick(x, part)
    order = np.argsort(-vals, axis=1, kind="stable")
    return _pick(vals, order), _pick(part, order)


def beam_search(
    net: StepNetwork,
    memory_lengths: np.ndarray,
    sos: int,
    eos: int,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    max_len_ratio: float = 1.0,
    nbest: int = 1,
    ctc_log_probs: np.ndarray | None = None,
    ctc_weight: float = 0.0,
    blank: int = 0,
    banned: Sequence[int] = (),
    lm: StepNetwork | None = None,
    lm_weight: float = 0.0,
) -> list[list[Hypothesis]]:
    """Joint CTC/attention beam search with optional shallow fusion, batched over utterances x beams (rows
    utterance-major).

    Each extension by token y scores (1 - ctc_weight) log P_att(y) + ctc_weight (change in the CTC prefix score)
    + lm_weight log P_lm(y); without ctc_log_probs or with ctc_weight 0 the CTC term is left out (and the attention
    term is unweighted), without lm or with lm_weight 0 the LM term. `lm` is a StepNetwork over the same rows
    (asr.runtime.model.LMSteps), fed <sos> first. CTC scores only the attention decoder's best 1.5 x beam tokens of
    each row (the pre-beam). An utterance is done once `nbest` finished hypotheses rank at least as well as the best
    open one could by ending at the next step, or at its maximum length. Returns, per utterance, up to `nbest`
    hypotheses, best first (ranked by score / (tokens + 1) ** length_penalty; `score` is the raw one)."""
    if lm_weight < 0:  # the stopping rule relies on scores only falling as hypotheses grow
        raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
    memory_lengths = np.asarray(memory_lengths, dtype=np.int64)
    batch, k = memory_lengths.shape[0], beam_size
    use_ctc = ctc_log_probs is not None and ctc_weight > 0
    att_weight = 1.0 - ctc_weight if use_ctc else 1.0
    max_lens = max_output_lengths(memory_lengths, max_len_ratio)

    finished: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(batch)]  # (rank score, hypothesis)
    alive = np.arange(batch)  # original utterance of each block of k rows
    tokens = np.full((batch * k, 1), sos, dtype=np.int64)  # (rows, 1 + t)
    scores = np.full((batch, k), NEG_INF, dtype=np.float32)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 0
    ranks = np.arange(2 * k)
    banned_ids = np.asarray(list(banned), dtype=np.int64)
    row_utts = np.repeat(np.arange(batch), k)
    state = net.start(row_utts)
    ctc = CTCPrefixScorer(ctc_log_probs, memory_lengths, row_utts, blank, eos) if use_ctc else None
    ctc_state = ctc.initial_state() if ctc is not None else None
    if lm_weight == 0:
        lm = None
    lm_state = lm.start(row_utts) if lm is not None else None

    for t in range(int(max_lens.max(initial=0))):
        n = alive.size
        logp, state = _log_probs(net, tokens[:, -1], state)  # (n * k, vocab)
        vocab = logp.shape[-1]
        if banned_ids.size:
            logp[:, banned_ids] = NEG_INF
        at_limit = np.repeat(max_lens[alive] <= t + 1, k)
        if at_limit.any():  # forced stop: only <eos> is allowed
            logp[at_limit] = np.where(np.arange(vocab) == eos, logp[at_limit], np.float32(NEG_INF))
        total = _weighted(att_weight, logp)
        if ctc is not None:  # pre-beam: the attention decoder's best tokens; the others are ruled out
            candidates = _topk(logp, min(vocab, int(1.5 * k) + 1))[1]  # (n * k, c)
            psi, r = ctc.score(ctc_state, candidates)
            with np.errstate(invalid="ignore"):  # -inf - -inf: replaced below
                delta = np.where(np.isfinite(ctc_state.score)[:, None], psi - ctc_state.score[:, None], NEG_INF)
            joint = _pick(total, candidates) + _weighted(ctc_weight, delta.astype(np.float32))
            total = np.full_like(total, NEG_INF)
            total[np.arange(total.shape[0])[:, None], candidates] = joint
        if lm is not None:  # over the whole vocabulary, after the CTC pre-beam (as the torch search adds it)
            lm_logp, lm_state = _log_probs(lm, tokens[:, -1], lm_state)
            total = total + _weighted(lm_weight, lm_logp)
        cand = (scores[:, :, None] + total.reshape(n, k, vocab)).reshape(n, k * vocab)
        top_scores, top_idx = _topk(cand, min(2 * k, k * vocab))  # (n, 2k): enough to refill k unfinished
        src_beam, top_tok = top_idx // vocab, top_idx % vocab
        is_eos = top_tok == eos
        m = is_eos.shape[1]

        # Finished: <eos> extensions that rank within the top k.
        ended = is_eos & (ranks[:m] < k) & np.isfinite(top_scores)
        for b, j in zip(*np.nonzero(ended)):
            seq = tokens[b * k + int(src_beam[b, j]), 1:].tolist()
            score = float(top_scores[b, j])
            finished[int(alive[b])].append((score / (len(seq) + 1) ** length_penalty, Hypothesis(seq, score)))

        # Continue with the k best non-<eos> extensions (<eos> ones sort last).
        order = np.argsort(is_eos * (2 * k) + ranks[:m], axis=1, kind="stable")[:, :k]
        scores = np.where(_pick(is_eos, order), np.float32(NEG_INF), _pick(top_scores, order))
        rows = (np.arange(n)[:, None] * k + _pick(src_beam, order)).reshape(-1)
        new_tokens = _pick(top_tok, order).reshape(-1)
        tokens = np.concatenate([tokens[rows], new_tokens[:, None]], axis=1)
        state = net.select(state, rows)
        if lm is not None:
            lm_state = lm.select(lm_state, rows)
        if ctc is not None:
            # Each kept extension's candidate column; a dead row (-inf) may hold a token outside the pre-beam: any
            # column will do (argmax of no match is 0).
            cols = (candidates[rows] == new_tokens[:, None]).argmax(axis=1)
            ctc_state = CTCState(r[:, rows, cols], psi[rows, cols], new_tokens)

        # Best rank an open hypothesis could reach by ending at the next step (all have length t + 1); float32
        # division as the torch search does it, so that ties decide the same way.
        best_open = (scores.max(axis=1) / np.float32((t + 2) ** length_penalty)).tolist()
        done = np.array(
            [sum(rank >= bound for rank, _ in finished[u]) >= nbest for u, bound in zip(alive.tolist(), best_open)]
        ) | (max_lens[alive] <= t + 1)
        if done.all():
            break
        if done.any():  # done utterances leave the batch
            keep = np.flatnonzero(~done)
            keep_rows = (keep[:, None] * k + np.arange(k)).reshape(-1)
            alive, scores, tokens = alive[keep], scores[keep], tokens[keep_rows]
            state = net.select(state, keep_rows)
            if lm is not None:
                lm_state = lm.select(lm_state, keep_rows)
            if ctc is not None:
                ctc.keep(keep_rows)
                ctc_state = CTCState(ctc_state.r[:, keep_rows], ctc_state.score[keep_rows], ctc_state.last[keep_rows])

    results = []
    for hyps in finished:
        hyps.sort(key=lambda h: h[0], reverse=True)  # stable: ties keep the order they finished in
        results.append([h for _, h in hyps[:nbest]])
    return results


# --- non-autoregressive searches (asr.decoding.nat) -----------------------------------------------------------------


class NATNetwork(Protocol):
    """The non-autoregressive head over one encoded batch (B utterances); every call covers the whole batch."""

    max_length: int  # the length classifier's largest token count (model.nat_max_length)

    def log_probs(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """tokens (B, n) int64 (<sos> placeholders at hidden positions, <pad> past each length), lengths (B,) ->
        log-probabilities (B, n, vocab) float32 of every position, filled in parallel."""
        ...

    def length_logits(self) -> np.ndarray:
        """Scores over token counts 0..max_length of each utterance, (B, max_length + 1)."""
        ...


def _placeholder_rows(lengths: np.ndarray, placeholder: int, pad: int) -> np.ndarray:
    """(B,) counts -> (B, max count) rows of placeholders, padded (at least one column)."""
    n = int(lengths.max(initial=0))
    columns = np.arange(max(n, 1))
    return np.where(columns[None, :] < lengths[:, None], placeholder, pad).astype(np.int64)


def _nat_log_probs(net: NATNetwork, rows: np.ndarray, lengths: np.ndarray, banned: Sequence[int]) -> np.ndarray:
    logp = np.array(net.log_probs(rows, lengths), dtype=np.float32, copy=True)  # (B, n, vocab)
    logp[..., list(banned)] = NEG_INF
    return logp


def nat_length(
    net: NATNetwork,
    memory_lengths: np.ndarray,
    sos: int,
    eos: int,
    pad: int,
    blank: int,
    length_from: str = "classifier",
    ctc_log_probs: np.ndarray | None = None,
) -> list[Hypothesis]:
    """Length from the classifier (or from the CTC best path, `length_from="ctc"`, which needs ctc_log_probs
    (B, T, V)), then every position filled in one pass; specials and <eos> are never chosen."""
    memory_lengths = np.asarray(memory_lengths, dtype=np.int64)
    if length_from == "classifier":
        lengths = np.asarray(net.length_logits()).argmax(axis=-1).astype(np.int64)  # (B,)
    elif length_from == "ctc":
        if ctc_log_probs is None:
            raise ValueError("length_from='ctc' needs ctc_log_probs")
        lengths = np.array([len(p.tokens) for p in ctc_greedy(ctc_log_probs, memory_lengths, blank)], dtype=np.int64)
    else:
        raise ValueError(f"length_from must be classifier or ctc, got {length_from!r}")
    rows = _placeholder_rows(lengths, sos, pad)
    logp = _nat_log_probs(net, rows, lengths, (blank, pad, sos, eos))
    ids, best = logp.argmax(axis=-1), logp.max(axis=-1)  # (B, n)
    return [Hypothesis(ids[i, :n].tolist(), float(best[i, :n].sum(dtype=np.float32))) for i, n in enumerate(lengths)]


def nat_max(
    net: NATNetwork, memory_lengths: np.ndarray, sos: int, eos: int, pad: int, blank: int, max_len_ratio: float = 1.0
) -> list[Hypothesis]:
    """A row of as many placeholders as the longest allowed output, filled in one pass, cut at the first <eos> (whose
    log-probability counts in the score)."""
    lengths = np.minimum(max_output_lengths(np.asarray(memory_lengths), max_len_ratio), net.max_length + 1)
    rows = _placeholder_rows(lengths, sos, pad)
    logp = _nat_log_probs(net, rows, lengths, (blank, pad, sos))
    ids, best = logp.argmax(axis=-1), logp.max(axis=-1)
    out = []
    for i, n in enumerate(lengths.tolist()):
        seq = ids[i, :n].tolist()
        end = seq.index(eos) if eos in seq else n
        out.append(Hypothesis(seq[:end], float(best[i, : min(end + 1, n)].sum(dtype=np.float32))))
    return out


def mask_ctc(
    net: NATNetwork,
    memory_lengths: np.ndarray,
    ctc_log_probs: np.ndarray,
    sos: int,
    eos: int,
    pad: int,
    blank: int,
    threshold: float = 0.99,
    iterations: int = 3,
) -> list[Hypothesis]:
    """Mask-CTC (Higuchi et al. 2020): the CTC best path is the draft; its tokens whose confidence (highest frame
    posterior) is below `threshold` are hidden and re-predicted over `iterations` passes, each filling in the most
    confident share of what is still hidden. Length and token frames (`token_times`, encoder frames) are the draft's."""
    memory_lengths = np.asarray(memory_lengths, dtype=np.int64)
    ctc_log_probs = np.asarray(ctc_log_probs, dtype=np.float32)
    frame_probs = np.exp(ctc_log_probs.max(axis=-1))  # (B, T)
    drafts = ctc_greedy(ctc_log_probs, memory_lengths, blank)
    lengths = np.array([len(d.tokens) for d in drafts], dtype=np.int64)
    rows = _placeholder_rows(lengths, sos, pad)
    hidden = np.zeros(rows.shape, dtype=bool)
    for i, d in enumerate(drafts):
        if d.tokens:
            conf = np.array([frame_probs[i, s:e].max() for s, e in d.spans], dtype=np.float32)
            low = conf < np.float32(threshold)  # compared in float32, as torch does
            rows[i, : len(d.tokens)] = np.where(low, sos, d.tokens)
            hidden[i, : len(d.tokens)] = low
    banned = (blank, pad, sos, eos)
    for it in range(iterations):
        if not hidden.any():
            break
        logp = _nat_log_probs(net, rows, lengths, banned)
        ids, best = logp.argmax(axis=-1), logp.max(axis=-1)
        for i in range(rows.shape[0]):
            todo = np.flatnonzero(hidden[i])
            if todo.size == 0:
                continue
            k = todo.size if it == iterations - 1 else -(-todo.size // (iterations - it))  # ceil: easy-first share
            pick = todo[np.argsort(-best[i, todo], kind="stable")[:k]]
            rows[i, pick] = ids[i, pick]
            hidden[i, pick] = False
    logp = _nat_log_probs(net, rows, lengths, banned)
    chosen = np.take_along_axis(logp, np.maximum(rows, 0)[..., None], axis=2)[..., 0]  # (B, n)
    return [
        Hypothesis(rows[i, :n].tolist(), float(chosen[i, :n].sum(dtype=np.float32)), token_times=list(drafts[i].spans))
        for i, n in enumerate(lengths.tolist())
    ]
