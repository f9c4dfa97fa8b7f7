"""The numpy searches of the runtime (asr.runtime.search) against the torch ones (asr.decoding) on the same network.

A tiny seeded, untrained Recognizer is made to emit real multi-token hypotheses (a scaled output layer with a random
bias; a scaled CTC head for peaky CTC posteriors), and wrapped in a StepNetwork adapter over `network.step`, so the
numpy searches and the torch searches see the same log-probabilities. A second part imports asr.runtime.search with
torch & co. made unimportable and runs it on a pure-numpy network.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES

from asr.config import load_config
from asr.decoding.ctc import ctc_greedy as torch_ctc_greedy
from asr.decoding.search import beam_search as torch_beam_search
from asr.decoding.search import greedy_search as torch_greedy_search
from asr.model.transformer import DecoderCache
from asr.recognizer import Recognizer
from asr.runtime import search
from asr.text import CharTokenizer

TOL = 1e-4


class TorchSteps:
    """The StepNetwork protocol over SpeechTransformer.step. Each row carries its own copy of its utterance's encoder
    output (as the ONNX runtime does), so the torch cache's cross-attention entries hold one row per hypothesis and
    `select` can index every entry alike."""

    def __init__(self, network, memory: torch.Tensor, memory_lengths: torch.Tensor):
        self.network, self.memory, self.memory_lengths = network, memory, memory_lengths

    def start(self, rows: np.ndarray):
        idx = torch.as_tensor(rows, dtype=torch.long)
        return self.network.new_cache(), self.memory[idx], self.memory_lengths[idx]

    @torch.no_grad()
    def step(self, tokens: np.ndarray, state):
        cache, memory, lengths = state
        logp = self.network.step(torch.as_tensor(tokens, dtype=torch.long), memory, lengths, cache)  # grows cache
        return logp.numpy(), state

    def select(self, state, rows: np.ndarray):
        cache, memory, lengths = state
        idx = torch.as_tensor(rows, dtype=torch.long)
        kv = {m: (k.index_select(0, idx), v.index_select(0, idx)) for m, (k, v) in cache.kv.items()}
        return DecoderCache(kv=kv, cross=cache.cross, offset=cache.offset), memory[idx], lengths[idx]


@pytest.fixture(scope="module", params=[0.0, 0.2], ids=["eos+0", "eos+0.2"])
def encoded(request):
    """(network, memory, memory_lengths, ctc_log_probs, tokenizer) of a random batch; the <eos> bias shift varies how
    soon hypotheses end (0: mostly late, 0.2: some at once)."""
    torch.manual_seed(0)
    rec = Recognizer(load_config(None, TINY_OVERRIDES), CharTokenizer(list("abcde "))).eval()
    net, tok = rec.network, rec.tokenizer
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        out = net.decoder.out  # peaky, varied next-token distributions instead of near-uniform ones
        out.weight.mul_(4.0)
        out.bias.copy_(torch.randn(out.bias.shape, generator=g))
        out.bias[tok.eos] += request.param
        net.ctc.weight.mul_(5.0)
        feats = torch.randn(4, 120, rec.cfg.features.dim, generator=g)
        memory, lengths = net.encode(feats, torch.tensor([120, 100, 80, 52]))
        ctc = net.ctc_log_probs(memory)
    return net, memory, lengths, ctc, tok


def _banned(tok) -> tuple[int, ...]:
    return (tok.blank, tok.pad, tok.sos)


def _same(numpy_hyps, torch_hyps) -> None:
    assert [h.tokens for h in numpy_hyps] == [h.tokens for h in torch_hyps]
    for a, b in zip(numpy_hyps, torch_hyps):
        assert a.score == pytest.approx(b.score, abs=TOL)


@pytest.mark.parametrize("ratio", [1.0, 0.45])
def test_greedy_matches_torch(encoded, ratio):
    net, memory, lengths, _, tok = encoded
    want = torch_greedy_search(net, memory, lengths, tok.sos, tok.eos, ratio, _banned(tok))
    got = search.greedy_search(TorchSteps(net, memory, lengths), lengths.numpy(), tok.sos, tok.eos, ratio, _banned(tok))
    _same(got, want)
    assert any(len(h.tokens) > 3 for h in got)
    assert all(isinstance(h, search.Hypothesis) and h.token_times is None and h.alternatives == [] for h in got)


def test_ctc_greedy_matches_torch(encoded):
    _, _, lengths, ctc, tok = encoded
    want = torch_ctc_greedy(ctc, lengths, tok.blank)
    got = search.ctc_greedy(ctc.numpy(), lengths.numpy(), tok.blank)
    assert [p.tokens for p in got] == [p.tokens for p in want]
    assert [p.spans for p in got] == [p.spans for p in want]
    assert [p.score for p in got] == pytest.approx([p.score for p in want], abs=TOL)
    assert any(len(p.tokens) > 3 for p in got)


@pytest.mark.parametrize("nbest", [1, 3])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("ctc_weight", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("beam_size", [1, 3, 5])
def test_beam_matches_torch(encoded, beam_size, ctc_weight, length_penalty, nbest):
    net, memory, lengths, ctc, tok = encoded
    kw = dict(
        beam_size=beam_size,
        length_penalty=length_penalty,
        max_len_ratio=1.0,
        nbest=nbest,
        ctc_weight=ctc_weight,
        blank=tok.blank,
        banned=_banned(tok),
    )
    want = torch_beam_search(net, memory, lengths, tok.sos, tok.eos, ctc_log_probs=ctc, **kw)
    steps = TorchSteps(net, memory, lengths)
    got = search.beam_search(steps, lengths.numpy(), tok.sos, tok.eos, ctc_log_probs=ctc.numpy(), **kw)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert len(g) == len(w)
        _same(g, w)
    if length_penalty == 1.0:  # (length_penalty 0 favours short hypotheses: some end at once)
        assert any(len(h.tokens) > 3 for hs in got for h in hs)


def test_beam_without_ctc_head_ignores_weight(encoded):
    """ctc_log_probs None: attention only, whatever ctc_weight says (a model without a trained CTC head)."""
    net, memory, lengths, _, tok = encoded
    want = torch_beam_search(net, memory, lengths, tok.sos, tok.eos, 3, ctc_weight=0.3, banned=_banned(tok))
    steps = TorchSteps(net, memory, lengths)
    got = search.beam_search(steps, lengths.numpy(), tok.sos, tok.eos, 3, ctc_weight=0.3, banned=_banned(tok))
    for g, w in zip(got, want):
        _same(g, w)


def test_max_output_lengths_match_torch():
    from asr.decoding.search import max_output_lengths

    lengths = torch.arange(0, 400)
    for ratio in (1.0, 0.3, 0.45, 0.7, 1.1, 2.3):
        want = max_output_lengths(lengths, ratio).numpy()
        assert (search.max_output_lengths(lengths.numpy(), ratio) == want).all()


# --- torch-free import ------------------------------------------------------------------------------------------------

BLOCKER = """
import sys
BLOCKED = {"torch", "torchaudio", "lightning", "pytorch_lightning", "librosa", "sentencepiece"}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked in this test: {name}")
        return None
sys.meta_path.insert(0, Blocker())
"""

NUMPY_RUN = """
import numpy as np
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("the blocker let torch through")

from asr.runtime.search import beam_search, ctc_greedy, greedy_search

V, SOS, EOS, BLANK = 7, 2, 3, 0
table = np.random.default_rng(0).normal(0, 2, (V, V)).astype(np.float32)  # next-token logits given the last token

class TableNet:
    def start(self, rows):
        return np.zeros(len(rows))
    def step(self, tokens, state):
        logits = table[tokens] + 0.1 * state[:, None]
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return logp.astype(np.float32), state + 1
    def select(self, state, rows):
        return state[rows]

lengths = np.array([9, 6])
ctc = np.log(np.random.default_rng(1).dirichlet(np.ones(V) * 0.3, (2, 9))).astype(np.float32)
g = greedy_search(TableNet(), lengths, SOS, EOS, 1.0, (BLANK, 1, SOS))
b = beam_search(TableNet(), lengths, SOS, EOS, 3, nbest=2, ctc_log_probs=ctc, ctc_weight=0.3, banned=(BLANK, 1, SOS))
c = ctc_greedy(ctc, lengths, BLANK)
assert len(g) == 2 and len(b) == 2 and len(c) == 2 and all(b)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not heavy, heavy
print("ok", g[0].tokens, b[0][0].tokens)
"""


def _run_blocked(code: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", BLOCKER + code], cwd=root, capture_output=True, text=True, timeout=60)


def test_blocker_blocks_torch():
    done = _run_blocked("import torch\n")
    assert done.returncode != 0 and "blocked in this test: torch" in done.stderr


def test_search_runs_without_torch():
    done = _run_blocked(NUMPY_RUN)
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.startswith("ok")
