"""A token-level language model over an ASR model's vocabulary, for shallow fusion in beam search.

    lm = train_lm(sentences, tokenizer, LMConfig(), LMTrainConfig(epochs=10))  -> (TransformerLM, LMReport)
    save_lm(path, lm); load_lm(path) -> TransformerLM      (a plain dict: loads with torch.load(weights_only=True))
    state = lm.init_state(rows); log_probs (rows, vocab), state = lm.step(state, last_tokens (rows,))
    state = state.select(rows)                             (keep/reorder rows, as beam search does)

The model is a small causal Transformer (pre-LN), not an LSTM: it is built from the same blocks as the ASR decoder
(`MultiHeadAttention` with its kv_cache dict, `FeedForward`, `PositionalEncoding`), so incremental scoring keeps a
KV cache that beam search reorders exactly like the decoder's, and training is one parallel causal pass per batch,
which on a CPU is faster than stepping an LSTM through time. The tokenizer is taken from an ASR model file and
stored with the LM, so the ids line up and a mismatched pair is refused with a clear error.

Training is a plain loop, not Lightning: an LM over text needs no feature pipeline, devices or checkpoint
resumption, and a 40-line loop is easier to read and time-limit than a LightningModule + DataModule.
Sentences are <sos> ids <eos>; the loss and the dev perplexity are per predicted token (<eos> included).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr.config import from_dict
from asr.model.layers import Dropout, FeedForward, MultiHeadAttention, PositionalEncoding
from asr.model_file import ModelFileError, check_sizes, describe, read_file, write_file
from asr.text import tokenizer_from_dict

log = logging.getLogger("asr")

LM_FORMAT = "speech-transformer-asr-lm/1"


@dataclass
class LMConfig:
    """Dimensions of the Transformer LM (defaults: ~0.4 M parameters, trains in a minute or two on a CPU)."""

    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    n_layers: int = 2
    dropout: float = 0.1
    vocab_size: int = 0  # set from the tokenizer


@dataclass
class LMTrainConfig:
    epochs: int = 10
    max_minutes: float = 0.0  # wall-clock budget; 0 = none (training stops after the batch that exceeds it)
    batch_size: int = 64  # sentences
    lr: float = 3e-3  # Adam, constant: pre-LN blocks and clipping keep it stable without warmup
    grad_clip: float = 1.0
    dev_fraction: float = 0.05  # share of the sentences held out for perplexity when no dev set is given
    seed: int = 0


@dataclass
class LMState:
    """Incremental state of n rows: the self-attention keys/values of each row's prefix, and its length."""

    cache: dict  # MultiHeadAttention -> (k, v), each (rows, heads, prefix, d_head)
    offset: int  # tokens fed so far (all rows share it: beam hypotheses grow in lockstep)

    def select(self, rows: Tensor) -> "LMState":
        """Keep/reorder rows (the same index beam search applies to its decoder cache)."""
        cache = {m: (k.index_select(0, rows), v.index_select(0, rows)) for m, (k, v) in self.cache.items()}
        return LMState(cache, self.offset)


class LMLayer(nn.Module):
    """Pre-LN block: causal self-attention, then feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.attn_norm, self.attn = nn.LayerNorm(d_model), MultiHeadAttention(d_model, n_heads, 0.0)
        self.ff_norm, self.ff = nn.LayerNorm(d_model), FeedForward(d_model, d_ff, dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None, kv_cache: dict | None = None) -> Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), mask=mask, kv_cache=kv_cache)[0])
        return x + self.dropout(self.ff(self.ff_norm(x)))


class TransformerLM(nn.Module):
    def __init__(self, cfg: LMConfig, tokenizer):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"LM d_model ({cfg.d_model}) must be divisible by n_heads ({cfg.n_heads})")
        cfg.vocab_size = len(tokenizer)
        self.cfg, self.tokenizer = cfg, tokenizer
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.d_model**-0.5)  # as in the ASR decoder: positions stay visible
        self.pos = PositionalEncoding(cfg.d_model, cfg.dropout)
        layer = (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout)
        self.layers = nn.ModuleList(LMLayer(*layer) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size)
        # Tokens that never follow a prefix (<blank>, <pad>, <sos>) get no probability mass.
        never = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        never[[tokenizer.blank, tokenizer.pad, tokenizer.sos]] = True
        self.register_buffer("never", never, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.out.weight.device

    def forward(self, tokens: Tensor, kv_cache: dict | None = None, offset: int = 0) -> Tensor:
        """tokens (batch, n) -> next-token log-probabilities (batch, n, vocab).

        A full pass uses a causal mask (right padding needs no other mask: no valid position sees it); an
        incremental pass feeds new tokens with `kv_cache` holding the prefix and `offset` its length."""
        n = tokens.size(1)
        x = self.pos(self.embed(tokens), offset)  # (batch, n, d_model)
        mask = None  # a single new position sees everything; otherwise position i sees the prefix and 0..i
        if n > 1:
            mask = torch.ones(n, offset + n, dtype=torch.bool, device=tokens.device).tril(offset)[None, None]
        for layer in self.layers:
            x = layer(x, mask, kv_cache)
        logits = self.out(self.norm(x)).float().masked_fill(self.never, float("-inf"))
        return logits.log_softmax(dim=-1)

    def init_state(self, rows: int) -> LMState:
        """`rows` empty prefixes: the cache fills at the first step (<sos>), so it needs no rows yet."""
        return LMState({}, 0)

    @torch.no_grad()
    def step(self, state: LMState, last: Tensor) -> tuple[Tensor, LMState]:
        """Feed each row's newest token (rows,) -> log P(next | prefix) (rows, vocab), and the extended state.

        The first step feeds <sos>. The input state is left as it was (the cache dict is copied, not appended to)."""
        cache = dict(state.cache)
        logp = self(last[:, None], kv_cache=cache, offset=state.offset)[:, -1]
        return logp, LMState(cache, state.offset + 1)

    @torch.no_grad()
    def sentence_log_prob(self, text: str) -> float:
        """log P(<sos> text <eos>) summed over the predicted tokens."""
        ids = sentence_ids(self.tokenizer, text)
        x = torch.tensor([ids], device=self.device)
        return float(self(x[:, :-1]).gather(2, x[:, 1:, None]).sum())

    def check_vocabulary(self, tokenizer, what: str = "the ASR model") -> None:
        """Raise ValueError unless `tokenizer` has exactly this LM's vocabulary (same ids for the same tokens)."""
        if tokenizer.to_dict() != self.tokenizer.to_dict():
            mine, theirs = _describe(self.tokenizer), _describe(tokenizer)
            raise ValueError(
                f"the LM's vocabulary ({mine}) does not match {what}'s ({theirs}): token ids would not line up; "
                "train the LM with `asr train-lm --model` on that ASR model"
            )


def _describe(tokenizer) -> str:
    return f"{getattr(tokenizer, 'kind', type(tokenizer).__name__)}, {len(tokenizer)} tokens"


# ---------------------------------------------------------------- text


def sentence_ids(tokenizer, text: str) -> list[int]:
    return [tokenizer.sos, *tokenizer.encode(text), tokenizer.eos]


def read_sentences(texts: Iterable[str | Path] = (), manifests: Iterable[str | Path] = ()) -> list[str]:
    """Training text: one sentence a line of text files, and the "text" fields of JSONL manifests; empty ones skip."""
    from asr.data.manifest import read_manifest

    out: list[str] = []
    for p in map(Path, texts):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: text file not found")
        out += p.read_text(encoding="utf-8").splitlines()
    for p in manifests:
        out += [u.text for u in read_manifest(p)]
    return [s for s in out if s.strip()]


def _batch(seqs: Sequence[list[int]], pad: int) -> Tensor:
    """Token-id lists -> (batch, longest) right-padded with `pad`."""
    out = torch.full((len(seqs), max(map(len, seqs))), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out


def _loss(lm: TransformerLM, batch: Tensor) -> tuple[Tensor, int]:
    """Summed NLL of every predicted token (padding ignored) and how many there were."""
    logp = lm(batch[:, :-1])  # (batch, n - 1, vocab)
    target = batch[:, 1:]
    nll = F.nll_loss(logp.transpose(1, 2), target, ignore_index=lm.tokenizer.pad, reduction="sum")
    return nll, int((target != lm.tokenizer.pad).sum())


@torch.no_grad()
def perplexity(lm: TransformerLM, seqs: Sequence[list[int]], batch_size: int = 128) -> float:
    """exp(mean NLL per predicted token) over id sequences (<sos> ... <eos>)."""
    was_training = lm.training
    lm.eval()
    total, count = 0.0, 0
    for i in range(0, len(seqs), batch_size):
        nll, n = _loss(lm, _batch(seqs[i : i + batch_size], lm.tokenizer.pad).to(lm.device))
        total, count = total + float(nll), count + n
    lm.train(was_training)
    return math.exp(total / max(count, 1))


# ---------------------------------------------------------------- training


@dataclass
class LMReport:
    train_sentences: int
    dev_sentences: int
    epochs: int  # completed
    dev_perplexity: float  # of the kept (best) weights; with no dev sentences at all, of the last training batch
    minutes: float
    history: list[float] = field(default_factory=list)  # dev perplexity after each epoch


def train_lm(
    sentences: Sequence[str],
    tokenizer,
    cfg: LMConfig | None = None,
    train: LMTrainConfig | None = None,
    dev_sentences: Sequence[str] | None = None,
) -> tuple[TransformerLM, LMReport]:
    """Train on `sentences` (dev: `dev_sentences`, or a held-out share of them); keep the best dev-perplexity
    weights. Seeded: the same inputs give the same model."""
    cfg, train = cfg or LMConfig(), train or LMTrainConfig()
    if train.epochs < 1:
        raise ValueError(f"LM training needs at least one epoch, got {train.epochs}")
    rng = random.Random(train.seed)
    torch.manual_seed(train.seed)
    seqs = [sentence_ids(tokenizer, s) for s in sentences]
    if dev_sentences:
        dev = [sentence_ids(tokenizer, s) for s in dev_sentences]
    else:
        rng.shuffle(seqs)
        n_dev = max(1, round(train.dev_fraction * len(seqs))) if len(seqs) > 1 else 0
        dev, seqs = seqs[:n_dev], seqs[n_dev:]
    if not seqs:
        raise ValueError("no training sentences for the LM")
    lm = TransformerLM(cfg, tokenizer)
    opt = torch.optim.Adam(lm.parameters(), lr=train.lr)
    start = time.perf_counter()
    best, best_state, history = math.inf, None, []
    out_of_time = False
    for epoch in range(train.epochs):
        lm.train()
        rng.shuffle(seqs)
        # Batches of similar length waste little on padding; their order is shuffled.
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        batches = [order[i : i + train.batch_size] for i in range(0, len(order), train.batch_size)]
        rng.shuffle(batches)
        for idx in batches:
            nll, n = _loss(lm, _batch([seqs[i] for i in idx], tokenizer.pad))
            opt.zero_grad()
            (nll / n).backward()
            nn.utils.clip_grad_norm_(lm.parameters(), train.grad_clip)
            opt.step()
            if train.max_minutes > 0 and time.perf_counter() - start > 60 * train.max_minutes:
                out_of_time = True
                break
        ppl = perplexity(lm, dev) if dev else math.exp(float(nll) / n)
        history.append(ppl)
        log.info("LM epoch %d: dev perplexity %.3f (%.1f min)", epoch + 1, ppl, (time.perf_counter() - start) / 60)
        if ppl < best:
            best, best_state = ppl, {k: v.detach().clone() for k, v in lm.state_dict().items()}
        if out_of_time:
            break
    lm.load_state_dict(best_state)
    report = LMReport(len(seqs), len(dev), len(history), best, (time.perf_counter() - start) / 60, history)
    return lm.eval(), report


# ---------------------------------------------------------------- file


def save_lm(path: str | Path, lm: TransformerLM, extra: dict | None = None) -> Path:
    """Write the LM file: a plain dict (format tag, config, tokenizer vocabulary, weights)."""
    blob = {
        "format": LM_FORMAT,
        "config": asdict(lm.cfg),
        "tokenizer": lm.tokenizer.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in lm.state_dict().items()},
        "extra": extra or {},
    }
    return write_file(path, blob)


def load_lm(path: str | Path, device: str | torch.device = "cpu") -> TransformerLM:
    """The LM of an LM file. Errors name the file: FileNotFoundError (no file) or ModelFileError (a ValueError) for
    anything else, as asr.recognizer.load_model."""
    blob = read_file(path, LM_FORMAT, "LM", " (an ASR model file goes to --model, an LM to --lm)")
    try:
        cfg = from_dict(LMConfig, blob["config"], "lm", strict=False)  # another version's fields dropped
        state = blob["state_dict"]
        check_sizes(path, state, "LM", {"lm.d_model": cfg.d_model, "lm.d_ff": cfg.d_ff}, cfg.n_layers)
        lm = TransformerLM(cfg, tokenizer_from_dict(blob["tokenizer"]))
        lm.load_state_dict(state)
    except ModelFileError:
        raise
    except Exception as e:  # the blob is data from a file: a KeyError, TypeError, ... building from it is damage
        raise ModelFileError(f"{path}: damaged LM file ({describe(e)})") from None
    return lm.to(device).eval()
