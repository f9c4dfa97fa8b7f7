"""An exported folder (asr export) -> ONNX Runtime sessions: encoder and incremental decoder, in numpy.

    OnnxModel(folder, threads=0)
        .card                                  model.json (config, tokenizer, dims, ...), checked
        .encode(feats (B, T, dim), lengths)    -> Encoded: memory_lengths (B,), ctc_log_probs (B, T/4, V), the
                                                  decoder's cross-attention keys/values (layers, B, heads, T/4, dh)
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

EXPORT_FORMAT = "asr-onnx/1"  # what asr.export writes (kept in step with it: tests/test_export.py)
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
        raise ExportError(
            f"{path}: export format {found!r}, but this runtime reads {EXPORT_FORMAT!r}"
            + (" (a newer toolkit wrote it: upgrade the runtime)" if isinstance(found, str) else "")
        )
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


def graphs_of(card: dict) -> tuple[str, ...]:
    return GRAPHS + ((NAT_GRAPH,) if card.get("has_nat") else ()) + ((LM_GRAPH,) if card.get("lm") else ())


@dataclass
class Encoded:
    """The encoder output of a batch (numpy)."""

    memory: np.ndarray  # (B, T', d_model)
    lengths: np.ndarray  # (B,) int64 valid encoder frames
    ctc_log_probs: np.ndarray | None  # (B, T', V); None when the model's CTC head was never trained
    cross_k: np.ndarray  # (layers, B, heads, T', d_head)
    cross_v: np.ndarray
    frame_seconds: float
    nat_length_logits: np.ndarray | None = None  # (B, nat_max_length + 1) when the folder has the NAT head


@dataclass
class StepState:
    """Decoder state of R hypothesis rows: the keys/values of the tokens fed so far, and their utterances' encoder
    keys/values (repeated per row: beam rows of one utterance share them, but ORT wants one row each)."""

    self_k: np.ndarray  # (layers, R, heads, t, d_head)
    self_v: np.ndarray
    cross_k: np.ndarray  # (layers, R, heads, T', d_head)
    cross_v: np.ndarray
    memory_lengths: np.ndarray  # (R,)


class DecoderSteps:
    """The StepNetwork protocol of asr.runtime.search over the decoder_step graph, for one encoded batch."""

    def __init__(self, session, encoded: Encoded, dims: dict):
        self.session, self.encoded, self.dims = session, encoded, dims

    def start(self, rows: np.ndarray) -> StepState:
        e, d = self.encoded, self.dims
        empty = np.zeros((d["layers"], len(rows), d["heads"], 0, d["d_head"]), dtype=np.float32)
        return StepState(empty, empty, e.cross_k[:, rows], e.cross_v[:, rows], e.lengths[rows])

    def step(self, tokens: np.ndarray, state: StepState) -> tuple[np.ndarray, StepState]:
        feeds = {
            "tokens": np.asarray(tokens, dtype=np.int64),
            "self_k": state.self_k,
            "self_v": state.self_v,
            "cross_k": state.cross_k,
            "cross_v": state.cross_v,
            "memory_lengths": state.memory_lengths,
        }
        log_probs, k, v = self.session.run(None, feeds)
        return log_probs, StepState(k, v, state.cross_k, state.cross_v, state.memory_lengths)

    def select(self, state: StepState, rows: np.ndarray) -> StepState:
        s = state
        return StepState(
            s.self_k[:, rows], s.self_v[:, rows], s.cross_k[:, rows], s.cross_v[:, rows], s.memory_lengths[rows]
        )


@dataclass
class LMState:
    """Token LM state of R hypothesis rows: the keys/values of the tokens fed so far."""

    self_k: np.ndarray  # (lm layers, R, heads, t, d_head)
    self_v: np.ndarray


class LMSteps:
    """The StepNetwork protocol of asr.runtime.search over the lm_step graph (shallow fusion)."""

    def __init__(self, session, dims: dict):
        self.session, self.dims = session, dims

    def start(self, rows: np.ndarray) -> LMState:
        d = self.dims
        empty = np.zeros((d["layers"], len(rows), d["heads"], 0, d["d_head"]), dtype=np.float32)
        return LMState(empty, empty)

    def step(self, tokens: np.ndarray, state: LMState) -> tuple[np.ndarray, LMState]:
        feeds = {"tokens": np.asarray(tokens, dtype=np.int64), "self_k": state.self_k, "self_v": state.self_v}
        log_probs, k, v = self.session.run(None, feeds)
        return log_probs, LMState(k, v)

    def select(self, state: LMState, rows: np.ndarray) -> LMState:
        return LMState(state.self_k[:, rows], state.self_v[:, rows])


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
        memory, m_lengths, ctc, ck, cv, *nat = self.sessions["encoder.onnx"].run(
            None, {"feats": np.ascontiguousarray(feats, dtype=np.float32), "lengths": lengths.astype(np.int64)}
        )
        ctc = ctc if self.card["has_ctc"] else None
        return Encoded(memory, m_lengths, ctc, ck, cv, self.frame_seconds, nat[0] if nat else None)

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
