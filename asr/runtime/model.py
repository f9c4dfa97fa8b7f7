"""An exported folder (asr export) -> ONNX Runtime sessions: encoder and incremental decoder, in numpy.

    OnnxModel(folder, threads=0)
        .card                                  model.json (config, tokenizer, dims, ...), checked
        .encode(feats (B, T, dim), lengths)    -> Encoded: memory_lengths (B,), ctc_log_probs (B, T/4, V), the
                                                  decoder's cross-attention keys/values, per layer
        .steps(encoded)                        -> DecoderSteps, the StepNetwork the searches (asr.runtime.search) drive
        .nat(encoded)                          -> NATHead, the NATNetwork of the NAT searches (models exported with one)
        .lm_steps()                            -> LMSteps, the token LM's StepNetwork for shallow fusion (folders
                                                  exported with --lm), or None

Refused with ExportError naming the file: a missing graph or card, a card of another format version, a graph whose
size or sha256 differs from what the card recorded at export (damaged or tampered), a graph ONNX Runtime cannot load.
Imports only numpy and onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr.outputs import sha256_file

EXPORT_FORMAT = "asr-onnx/2"  # what asr.export writes (kept in step with it: tests/test_export.py)
CARD = "model.json"
GRAPHS = ("encoder.onnx", "decoder_step.onnx")
NAT_GRAPH = "nat.onnx"  # present when the model has a trained NAT head (card: has_nat)
LM_GRAPH = "lm_step.onnx"  # present when exported with an LM (card: lm)


class ExportError(ValueError):
    """An export folder is missing a file, damaged, tampered with or of another version; the message names the file."""


def read_card(folder: str | Path) -> dict:
    """model.json of an export folder, its format version and the recorded graph files checked."""
    folder = Path(folder)
    path = folder / CARD
    if not folder.is_dir():
        raise ExportError(f"{folder}: not an export folder (asr export --model M --out DIR writes one)")
    if not path.is_file():
        raise ExportError(f"{path}: missing (not an export folder written by asr export?)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: not a readable model card ({e})") from None
    if not isinstance(card, dict) or card.get("format") != EXPORT_FORMAT:
        found = card.get("format") if isinstance(card, dict) else None
        raise ExportError(f"{path}: export format {found!r}, but this runtime reads {EXPORT_FORMAT!r}{_which(found)}")
    for key in ("config", "tokenizer", "special_ids", "dims", "files"):
        if key not in card:
            raise ExportError(f"{path}: damaged model card (no {key!r})")
    lm = card.get("lm")
    if lm is not None and not (isinstance(lm, dict) and isinstance(lm.get("dims"), dict)):
        raise ExportError(f"{path}: damaged model card (its 'lm' entry has no dims)")
    for name in graphs_of(card):
        graph, want = folder / name, card["files"].get(name)
        if not graph.is_file():
            raise ExportError(f"{graph}: missing from the export folder")
        if not isinstance(want, dict):
            raise ExportError(f"{path}: damaged model card (no entry for {name})")
        size = graph.stat().st_size
        if size != want.get("bytes") or sha256_file(graph) != want.get("sha256"):
            raise ExportError(
                f"{graph}: differs from the file exported ({size} bytes, sha256 does not match {CARD}): damaged or "
                "changed since; export again"
            )
    return card


def _which(found: object) -> str:
    """Advice for a card of another format version: newer -> upgrade; older -> export the model file again."""
    prefix, _, version = str(found).rpartition("/")
    if not (isinstance(found, str) and prefix == "asr-onnx" and version.isdigit()):
        return ""
    if int(version) > int(EXPORT_FORMAT.rpartition("/")[2]):
        return " (a newer toolkit wrote it: upgrade the runtime)"
    return " (an older asr export wrote it: export the model file again with asr export)"


def graphs_of(card: dict) -> tuple[str, ...]:
    return GRAPHS + ((NAT_GRAPH,) if card.get("has_nat") else ()) + ((LM_GRAPH,) if card.get("lm") else ())


@dataclass
class Encoded:
    """The encoder output of a batch (numpy)."""

    memory: np.ndarray  # (B, T', d_model)
    lengths: np.ndarray  # (B,) int64 valid encoder frames
    ctc_log_probs: np.ndarray | None  # (B, T', V); None when the model's CTC head was never trained
    cross_k: list[np.ndarray]  # per decoder layer (B, heads, d_head, T'): keys transposed (asr.export._attend)
    cross_v: list[np.ndarray]  # per decoder layer (B, heads, T', d_head)
    frame_seconds: float
    nat_length_logits: np.ndarray | None = None  # (B, nat_max_length + 1) when the folder has the NAT head


def _cache_feeds(name: str, tensors: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{name}_{i}": a for i, a in enumerate(tensors)}


def _empty_cache(dims: dict, rows: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A per-layer cache of no tokens: keys layers x (rows, heads, d_head, 0) (stored transposed), values layers x
    (rows, heads, 0, d_head)."""
    layers, heads, dh = dims["layers"], dims["heads"], dims["d_head"]
    keys = [np.zeros((rows, heads, dh, 0), dtype=np.float32) for _ in range(layers)]
    return keys, [np.zeros((rows, heads, 0, dh), dtype=np.float32) for _ in range(layers)]


@dataclass
class StepState:
    """Decoder state of R hypothesis rows: per layer, the keys/values of the tokens fed so far, and their utterances'
    encoder keys/values (repeated per row: beam rows of one utterance share them, but ORT wants one row each)."""

    self_k: list[np.ndarray]  # per layer (R, heads, d_head, t): keys stored transposed (asr.export._attend)
    self_v: list[np.ndarray]  # per layer (R, heads, t, d_head)
    cross_k: list[np.ndarray]  # per layer (R, heads, d_head, T')
    cross_v: list[np.ndarray]  # per layer (R, heads, T', d_head)
    memory_lengths: np.ndarray  # (R,)
    utts: np.ndarray  # (R,) the utterance (in the encoded batch) of each row


class DecoderSteps:
    """The StepNetwork protocol of asr.runtime.search over the decoder_step graph, for one encoded batch."""

    def __init__(self, session, encoded: Encoded, dims: dict):
        self.session, self.encoded, self.dims = session, encoded, dims

    def start(self, rows: np.ndarray) -> StepState:
        e, (keys, values) = self.encoded, _empty_cache(self.dims, len(rows))
        cross_k, cross_v = [a[rows] for a in e.cross_k], [a[rows] for a in e.cross_v]
        return StepState(keys, values, cross_k, cross_v, e.lengths[rows], np.asarray(rows))

    def step(self, tokens: np.ndarray, state: StepState) -> tuple[np.ndarray, StepState]:
        s, layers = state, self.dims["layers"]
        feeds = {
            "tokens": np.asarray(tokens, dtype=np.int64),
            **_cache_feeds("self_k", s.self_k),
            **_cache_feeds("self_v", s.self_v),
            **_cache_feeds("cross_k", s.cross_k),
            **_cache_feeds("cross_v", s.cross_v),
            "memory_lengths": s.memory_lengths,
        }
        log_probs, *cache = self.session.run(None, feeds)
        return log_probs, StepState(cache[:layers], cache[layers:], s.cross_k, s.cross_v, s.memory_lengths, s.utts)

    def select(self, state: StepState, rows: np.ndarray) -> StepState:
        s = state
        self_k, self_v = [a[rows] for a in s.self_k], [a[rows] for a in s.self_v]
        utts = s.utts[rows]
        if np.array_equal(utts, s.utts):
            # Beam search reorders rows within each utterance at every step: the encoder keys/values of the rows
            # are then the same arrays, and copying them (the largest part of the state) would be wasted.
            return StepState(self_k, self_v, s.cross_k, s.cross_v, s.memory_lengths, s.utts)
        cross_k, cross_v = [a[rows] for a in s.cross_k], [a[rows] for a in s.cross_v]
        return StepState(self_k, self_v, cross_k, cross_v, s.memory_lengths[rows], utts)


@dataclass
class LMState:
    """Token LM state of R hypothesis rows: per LM layer, the keys/values of the tokens fed so far."""

    self_k: list[np.ndarray]  # per layer (R, heads, d_head, t), as the decoder's
    self_v: list[np.ndarray]  # per layer (R, heads, t, d_head)


class LMSteps:
    """The StepNetwork protocol of asr.runtime.search over the lm_step graph (shallow fusion)."""

    def __init__(self, session, dims: dict):
        self.session, self.dims = session, dims

    def start(self, rows: np.ndarray) -> LMState:
        return LMState(*_empty_cache(self.dims, len(rows)))

    def step(self, tokens: np.ndarray, state: LMState) -> tuple[np.ndarray, LMState]:
        feeds = {
            "tokens": np.asarray(tokens, dtype=np.int64),
            **_cache_feeds("self_k", state.self_k),
            **_cache_feeds("self_v", state.self_v),
        }
        log_probs, *cache = self.session.run(None, feeds)
        layers = self.dims["layers"]
        return log_probs, LMState(cache[:layers], cache[layers:])

    def select(self, state: LMState, rows: np.ndarray) -> LMState:
        return LMState([a[rows] for a in state.self_k], [a[rows] for a in state.self_v])


class NATHead:
    """The NATNetwork protocol of asr.runtime.search over the nat graph, for one encoded batch."""

    def __init__(self, session, encoded: Encoded, max_length: int):
        self.session, self.encoded, self.max_length = session, encoded, max_length

    def log_probs(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        e = self.encoded
        feeds = {
            "tokens": np.asarray(tokens, dtype=np.int64),
            "lengths": np.asarray(lengths, dtype=np.int64),
            "memory": e.memory,
            "memory_lengths": e.lengths,
        }
        return self.session.run(None, feeds)[0]  # (B, n, vocab)

    def length_logits(self) -> np.ndarray:
        return self.encoded.nat_length_logits


class OnnxModel:
    """The graphs of an export folder on ONNX Runtime's CPU provider. threads=0: ORT's default (all cores)."""

    def __init__(self, folder: str | Path, threads: int = 0):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.card = read_card(self.folder)
        self.dims = self.card["dims"]
        self.config = self.card["config"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: spinning doubled batch-1 beam search time at 2 threads on 2 cores
        # (scripts/bench_export.py), where the spinning threads take the cores the next small op needs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only: no warnings about unused initializers
        self.sessions = {}
        for name in graphs_of(self.card):
            try:
                self.sessions[name] = ort.InferenceSession(
                    str(self.folder / name), opts, providers=["CPUExecutionProvider"]
                )
            except Exception as e:  # ORT raises its own Fail/InvalidGraph/...: all mean unusable
                raise ExportError(f"{self.folder / name}: ONNX Runtime cannot load it ({e})") from None
        f = self.config["features"]
        hop = round(f["sample_rate"] * f["hop_ms"] / 1000)
        self.frame_seconds = self.dims["subsampling"] * hop / f["sample_rate"]

    def encode(self, feats: np.ndarray, lengths: np.ndarray) -> Encoded:
        """feats (B, T, dim) float32 (raw features: CMVN is in the graph), lengths (B,) -> Encoded."""
        memory, m_lengths, ctc, *rest = self.sessions["encoder.onnx"].run(
            None, {"feats": np.ascontiguousarray(feats, dtype=np.float32), "lengths": lengths.astype(np.int64)}
        )
        layers = self.dims["layers"]
        cross_k, cross_v, nat = rest[:layers], rest[layers : 2 * layers], rest[2 * layers :]
        ctc = ctc if self.card["has_ctc"] else None
        return Encoded(memory, m_lengths, ctc, cross_k, cross_v, self.frame_seconds, nat[0] if nat else None)

    def steps(self, encoded: Encoded) -> DecoderSteps:
        return DecoderSteps(self.sessions["decoder_step.onnx"], encoded, self.dims)

    def lm_steps(self) -> LMSteps | None:
        """The exported token LM as a StepNetwork, or None when the folder has none."""
        if LM_GRAPH not in self.sessions:
            return None
        return LMSteps(self.sessions[LM_GRAPH], self.card["lm"]["dims"])

    def nat(self, encoded: Encoded) -> NATHead:
        if NAT_GRAPH not in self.sessions:
            raise ValueError(f"{self.folder}: exported without a non-autoregressive head")
        return NATHead(self.sessions[NAT_GRAPH], encoded, int(self.card["nat_max_length"]))
