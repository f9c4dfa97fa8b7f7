"""CTC prefix scores against brute force over every alignment path, and joint CTC/attention beam search."""

import itertools
import math

import torch

from asr.decoding import beam_search, ctc_greedy
from asr.decoding.ctc import CTCPrefixScorer
from asr.model.transformer import DecoderCache

BLANK, EOS = 0, 3


def collapse(path):
    out, prev = [], None
    for t in path:
        if t != prev and t != BLANK:
            out.append(t)
        prev = t
    return tuple(out)


def brute_force(logp, n_frames, prefix, exact):
    """log of the total probability of the paths whose collapse starts with (or equals) `prefix`."""
    vocab = logp.size(1)
    total = []
    for path in itertools.product(range(vocab), repeat=n_frames):
        seq = collapse(path)
        if (seq == prefix) if exact else (seq[: len(prefix)] == prefix):
            total.append(sum(float(logp[t, s]) for t, s in enumerate(path)))
    return math.log(sum(math.exp(v) for v in total)) if total else float("-inf")


def test_prefix_scores_match_brute_force():
    torch.manual_seed(0)
    vocab, frames = 6, 5  # tokens: 0 blank, 3 eos (never in CTC paths), 4 and 5 real
    logits = torch.randn(2, frames, vocab)
    logits[:, :, EOS] = -30.0
    logp = logits.log_softmax(-1)
    lengths = torch.tensor([5, 4])  # the second row has a padded last frame
    scorer = CTCPrefixScorer(logp, lengths, BLANK, EOS)
    state = scorer.initial_state()
    cand = torch.tensor([[4, 5, EOS], [4, 5, EOS]])
    psi, r = scorer.score(state, cand)
    for row in range(2):
        n = int(lengths[row])
        assert math.isclose(float(psi[row, 0]), brute_force(logp[row], n, (4,), exact=False), rel_tol=1e-4)
        assert math.isclose(float(psi[row, 1]), brute_force(logp[row], n, (5,), exact=False), rel_tol=1e-4)
    # Extend both rows with token 4, then score 4 again (a repeat needs a blank between), 5, and <eos>.
    rows, cols = torch.tensor([0, 1]), torch.tensor([0, 0])
    state = CTCPrefixScorer.advance(r, psi, rows, cols, torch.tensor([4, 4]))
    psi2, _ = scorer.score(state, cand)
    for row in range(2):
        n = int(lengths[row])
        assert math.isclose(float(psi2[row, 0]), brute_force(logp[row], n, (4, 4), exact=False), rel_tol=1e-4)
        assert math.isclose(float(psi2[row, 1]), brute_force(logp[row], n, (4, 5), exact=False), rel_tol=1e-4)
        assert math.isclose(float(psi2[row, 2]), brute_force(logp[row], n, (4,), exact=True), rel_tol=1e-4)


def test_ctc_greedy_collapses_and_respects_lengths():
    logp = torch.full((1, 7, 5), -10.0)
    for t, tok in enumerate([0, 4, 4, 0, 4, 2, 2]):
        logp[0, t, tok] = 0.0
    (path,) = ctc_greedy(logp, torch.tensor([7]), BLANK)
    assert path.tokens == [4, 4, 2]
    assert path.spans == [(1, 3), (4, 5), (5, 7)]  # frames [start, end) of each token
    assert path.score == 0.0  # the best path's log-probability
    assert ctc_greedy(logp, torch.tensor([3]), BLANK)[0].tokens == [4]


def test_joint_decoding_follows_ctc_when_attention_is_unsure():
    """An attention decoder that is indifferent between tokens: joint decoding must output what CTC hears."""

    class Indifferent:
        def new_cache(self):
            return DecoderCache()

        def step(self, last, memory, lengths, cache):
            logp = torch.full((last.size(0), 6), math.log(1 / 3))
            logp[:, :3] = -30.0  # blank, pad, sos never
            logp[:, EOS] = math.log(1 / 3)
            return logp

    frames = 12
    ctc = torch.full((1, frames, 6), -12.0)
    for t, tok in enumerate([0, 5, 5, 0, 0, 4, 0, 0, 5, 0, 0, 0]):
        ctc[0, t, tok] = 0.0
    ctc = ctc.log_softmax(-1)
    memory, lengths = torch.zeros(1, frames, 4), torch.tensor([frames])
    hyp = beam_search(
        Indifferent(),
        memory,
        lengths,
        sos=2,
        eos=EOS,
        beam_size=3,
        ctc_log_probs=ctc,
        ctc_weight=0.5,
        blank=BLANK,
        banned=(0, 1, 2),
    )[0][0]
    assert hyp.tokens == [5, 4, 5]


def _best_path_spans(log_probs, tokens, blank=0):
    """Brute force: every label path of the frames, the best one that collapses to `tokens`, as token spans."""
    import itertools

    frames, vocab = log_probs.shape
    best, best_path = float("-inf"), None
    for path in itertools.product(range(vocab), repeat=frames):
        collapsed = [p for t, p in enumerate(path) if p != blank and (t == 0 or p != path[t - 1])]
        if collapsed == tokens:
            score = sum(float(log_probs[t, p]) for t, p in enumerate(path))
            if score > best:
                best, best_path = score, path
    if best_path is None:
        return None
    spans: list[list[int]] = []
    for t, p in enumerate(best_path):
        if p != blank and (t == 0 or p != best_path[t - 1]):
            spans.append([t, t + 1])
        elif p != blank:
            spans[-1][1] = t + 1
    return [tuple(s) for s in spans]


def test_ctc_align_finds_the_best_path_through_the_tokens():
    from asr.decoding.ctc import ctc_align

    g = torch.Generator().manual_seed(0)
    token_lists = [[1, 2], [1, 1], [2], [2, 1, 2]]
    for _ in range(10):
        log_probs = torch.randn(4, 6, 3, generator=g).log_softmax(-1)
        lengths = torch.tensor([6, 5, 4, 6])
        got = ctc_align(log_probs, lengths, token_lists, blank=0)
        for b, tokens in enumerate(token_lists):
            assert got[b] == _best_path_spans(log_probs[b, : lengths[b]], tokens)
    # Too few frames for the tokens (a repeat needs a blank between): no alignment; no tokens: no spans.
    assert ctc_align(log_probs[:2], torch.tensor([1, 6]), [[1, 1], []], blank=0) == [None, []]
