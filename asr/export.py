"""A model file -> a self-contained ONNX folder that asr.runtime transcribes with, without torch.

    export(model_path, out_dir, int8=False) -> out_dir holding
        encoder.onnx       feats (batch, frames, dim) raw fbank/MFCC, lengths (batch,)
                           -> memory (batch, frames/4, d_model), memory_lengths (batch,),
                              ctc_log_probs (batch, frames/4, vocab), cross_k / cross_v (layers, batch, heads, frames/4,
                              d_head): every decoder layer's cross-attention keys/values, computed once per utterance
        decoder_step.onnx  tokens (rows,), self_k / self_v (layers, rows, heads, t, d_head) of the t tokens fed so far,
                           cross_k / cross_v (rows' utterances' entries), memory_lengths (rows,)
                           -> log_probs (rows, vocab), new self_k / self_v (..., t + 1, d_head)
        nat.onnx           (models with a trained NAT head) tokens (batch, n), lengths, memory, memory_lengths
                           -> log_probs (batch, n, vocab) of every position in one pass; the encoder graph then
                              also gives nat_length_logits (batch, nat_max_length + 1)
        lm_step.onnx       (export(..., lm=LM file), asr export --lm) one step of the token LM for shallow fusion:
                           tokens (rows,), self_k / self_v (lm layers, rows, heads, t, d_head) -> log_probs (rows,
                           vocab), new self_k / self_v
        model.json         the model card: format version, precision, the model's config (features, decoding
                           defaults), tokenizer, special ids, parameter count, training data and the WER figures the
                           model file holds, and each graph's size and sha256 (the runtime refuses a changed file)

CMVN is inside the encoder graph (its statistics are weights); the features themselves are computed by the runtime
(asr/runtime/features.py, numpy, matching asr/features.py). The graphs are traced with torch.onnx.export(dynamo=True)
with dynamic batch, frame and token axes. The graph modules below re-state the network's forward passes with plain
tensors in place of the Python-dict KV cache (an exported graph cannot hold a dict), using the network's own layers,
so the arithmetic is the same as Recognizer.decode's.

--int8: onnxruntime's dynamic quantisation of the MatMul/Gemm weights (int8 weights, activations quantised on the fly).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr.model.conformer import ConformerEncoder
from asr.model.layers import Conv2dSubsampling, MultiHeadAttention, padding_mask
from asr.outputs import atomic_path, check_outputs, sha256_file, write_text
from asr.recognizer import SUBSAMPLING, Recognizer, load_model

log = logging.getLogger("asr")

EXPORT_FORMAT = "asr-onnx/1"  # model.json's "format"; the runtime refuses other versions
OPSET = 18
GRAPHS = ("encoder.onnx", "decoder_step.onnx")
CARD = "model.json"


def positions(start: int, n: int, dim: int) -> Tensor:
    """Sinusoidal encodings of positions start .. start + n - 1: (n, dim), as asr.model.layers.sinusoidal_encoding
    computes its table (the same float32 arithmetic), but for positions known only when the graph runs."""
    pos = torch.arange(start, start + n, dtype=torch.float32)[:, None]  # start, n: sizes of the traced inputs
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = pos * inv_freq  # (n, dim / 2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(-1, dim)  # sin at even, cos at odd columns


def _heads(attn: MultiHeadAttention, x: Tensor) -> Tensor:
    b, t, _ = x.shape
    return x.reshape(b, t, attn.n_heads, attn.d_head).transpose(1, 2)  # (batch, heads, time, d_head)


def _merge(attn: MultiHeadAttention, y: Tensor) -> Tensor:
    b, h, t, dh = y.shape
    return attn.out(y.transpose(1, 2).reshape(b, t, h * dh))


def _cached_self_attention(
    sa: MultiHeadAttention, h: Tensor, past_k: Tensor, past_v: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One new position's self-attention over the t cached ones and itself: h (rows, 1, d_model), past (rows, heads,
    t, d_head) -> (output (rows, 1, d_model), keys, values (rows, heads, t + 1, d_head))."""
    k, v = sa.kv(h).chunk(2, dim=-1)
    k = torch.cat([past_k, _heads(sa, k)], dim=2)
    v = torch.cat([past_v, _heads(sa, v)], dim=2)
    return _merge(sa, F.scaled_dot_product_attention(_heads(sa, sa.q(h)), k, v)), k, v


class EncoderGraph(nn.Module):
    """feats, lengths -> memory, memory_lengths, ctc_log_probs, cross_k, cross_v (see the module docstring)."""

    def __init__(self, rec: Recognizer):
        super().__init__()
        self.cmvn, self.net = rec.cmvn, rec.network
        self.with_nat = rec.has_nat

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        enc = self.net.encoder
        if isinstance(enc, ConformerEncoder):  # its relative positions are computed from the length: traceable as is
            memory, m_lengths, _ = enc(self.cmvn(feats, lengths), lengths)
        else:
            x, m_lengths = enc.subsample(self.cmvn(feats, lengths), lengths)  # (batch, frames/4, d_model)
            x = x * enc.pos.scale + positions(0, x.size(1), x.size(-1))
            mask = padding_mask(m_lengths, x.size(1))[:, None, None, :]  # (batch, 1, 1, frames/4)
            for layer in enc.layers:
                x = layer(x, mask)
            memory = enc.norm(x)
        ctc = self.net.ctc_log_probs(memory)  # (batch, frames/4, vocab)
        ks, vs = [], []
        for layer in self.net.decoder.layers:
            k, v = layer.cross_attn.kv(memory).chunk(2, dim=-1)
            ks.append(_heads(layer.cross_attn, k))
            vs.append(_heads(layer.cross_attn, v))
        out = (memory, m_lengths, ctc, torch.stack(ks), torch.stack(vs))  # cross: (layers, batch, heads, frames/4, dh)
        if self.with_nat:  # the NAT head's length classifier reads only the memory: (batch, nat_max_length + 1)
            out += (self.net.nat_length_logits(memory, m_lengths),)
        return out


class DecoderStepGraph(nn.Module):
    """One incremental decoder step with the cache as tensors: what SpeechTransformer.step does with its dict."""

    def __init__(self, rec: Recognizer):
        super().__init__()
        self.dec = rec.network.decoder

    def forward(
        self, tokens: Tensor, self_k: Tensor, self_v: Tensor, cross_k: Tensor, cross_v: Tensor, memory_lengths: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        dec = self.dec
        x = dec.embed(tokens)[:, None]  # (rows, 1, d_model)
        x = x * dec.pos.scale + positions(self_k.size(3), 1, x.size(-1))  # after the t fed
        memory_mask = padding_mask(memory_lengths, cross_k.size(3))[:, None, None, :]  # (rows, 1, 1, frames/4)
        new_k, new_v = [], []
        for i, layer in enumerate(dec.layers):
            y, k, v = _cached_self_attention(layer.self_attn, layer.self_norm(x), self_k[i], self_v[i])
            x = x + y  # sees every fed token
            new_k.append(k)
            new_v.append(v)
            ca = layer.cross_attn
            q = _heads(ca, ca.q(layer.cross_norm(x)))
            x = x + _merge(ca, F.scaled_dot_product_attention(q, cross_k[i], cross_v[i], attn_mask=memory_mask))
            x = x + layer.ff(layer.ff_norm(x))
        logits = dec.out(dec.norm(x))[:, -1]  # (rows, vocab)
        return logits.float().log_softmax(dim=-1), torch.stack(new_k), torch.stack(new_v)


class NATGraph(nn.Module):
    """tokens (batch, n), lengths, memory, memory_lengths -> log_probs (batch, n, vocab): one parallel pass of the
    non-autoregressive head (asr/model/nat.py), as asr.decoding.nat scores it."""

    def __init__(self, rec: Recognizer):
        super().__init__()
        self.net = rec.network

    def forward(self, tokens: Tensor, lengths: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        return self.net.nat_logits(tokens, lengths, memory, memory_lengths).float().log_softmax(dim=-1)


class LMStepGraph(nn.Module):
    """One incremental step of a token LM (asr.lm.TransformerLM.step) with its cache as tensors."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, tokens: Tensor, self_k: Tensor, self_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lm = self.lm
        x = lm.embed(tokens)[:, None] * lm.pos.scale + positions(self_k.size(3), 1, lm.cfg.d_model)  # (rows, 1, d)
        new_k, new_v = [], []
        for i, layer in enumerate(lm.layers):
            y, k, v = _cached_self_attention(layer.attn, layer.attn_norm(x), self_k[i], self_v[i])
            x = x + y
            new_k.append(k)
            new_v.append(v)
            x = x + layer.ff(layer.ff_norm(x))
        logits = lm.out(lm.norm(x))[:, -1].float().masked_fill(lm.never, float("-inf"))  # (rows, vocab)
        return logits.log_softmax(dim=-1), torch.stack(new_k), torch.stack(new_v)


def _example_lm_inputs(lm: nn.Module, sos: int) -> tuple:
    c = lm.cfg
    cache = (c.n_layers, 3, c.n_heads, 2, c.d_model // c.n_heads)
    return torch.tensor([sos, sos, 7 % c.vocab_size]), torch.randn(cache), torch.randn(cache)


def _example_inputs(rec: Recognizer) -> tuple[tuple, tuple]:
    """Inputs to trace with: sizes > 1 on every dynamic axis (a size of 1 would be specialised into the graph)."""
    m = rec.cfg.model
    feats = torch.randn(2, 61, rec.cfg.features.dim)
    lengths = torch.tensor([61, 45])
    heads, dh, layers = m.n_heads, m.d_model // m.n_heads, m.n_decoder_layers
    frames = int(Conv2dSubsampling.output_lengths(torch.tensor(61)))
    step = (
        torch.tensor([rec.tokenizer.sos, rec.tokenizer.sos, 7]),
        torch.randn(layers, 3, heads, 2, dh),
        torch.randn(layers, 3, heads, 2, dh),
        torch.randn(layers, 3, heads, frames, dh),
        torch.randn(layers, 3, heads, frames, dh),
        torch.tensor([frames, frames - 3, frames - 1]),
    )
    return (feats, lengths), step


def _example_nat_inputs(rec: Recognizer) -> tuple:
    m = rec.cfg.model
    tokens = torch.tensor([[rec.tokenizer.sos] * 5, [rec.tokenizer.sos, 7, rec.tokenizer.sos, rec.tokenizer.pad, 0]])
    return tokens, torch.tensor([5, 3]), torch.randn(2, 9, m.d_model), torch.tensor([9, 6])


def _export(module: nn.Module, args: tuple, path: Path, names: tuple, dynamic: dict) -> None:
    from torch.export import Dim

    dims = {name: Dim(name, min=1) for name in ("batch", "frames", "rows", "cached", "memory", "positions")}
    dims["cached"] = Dim("cached", min=0)
    shapes = {arg: {axis: dims[d] for axis, d in axes.items()} for arg, axes in dynamic.items()}
    with warnings.catch_warnings(), atomic_path(path, overwrite=True) as tmp:
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=list(names[0]),
            output_names=list(names[1]),
            dynamic_shapes=shapes,
            opset_version=OPSET,
            verbose=False,
        )
        program.save(str(tmp), external_data=False)
        strip_debug_info(tmp)


def strip_debug_info(path: Path) -> None:
    """Drop the exporter's per-node debug metadata (stack traces, FX nodes, module paths): a third of a small
    model's file, and it names the exporting machine's source paths. The arithmetic is untouched."""
    import onnx

    model = onnx.load(str(path))
    for graph in [model.graph, *(f for f in model.functions)]:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    onnx.save(model, str(path))


ENCODER_IO = (("feats", "lengths"), ("memory", "memory_lengths", "ctc_log_probs", "cross_k", "cross_v"))
NAT_IO = (("tokens", "lengths", "memory", "memory_lengths"), ("log_probs",))
NAT_GRAPH = "nat.onnx"  # written when the model has a trained NAT head
LM_GRAPH = "lm_step.onnx"  # written with export(..., lm=...)
LM_IO = (("tokens", "self_k", "self_v"), ("log_probs", "new_self_k", "new_self_v"))
STEP_IO = (
    ("tokens", "self_k", "self_v", "cross_k", "cross_v", "memory_lengths"),
    ("log_probs", "new_self_k", "new_self_v"),
)


def export(model_path: str | Path, out_dir: str | Path, int8: bool = False, lm: str | Path | None = None) -> Path:
    """Write the ONNX folder of the model file at `model_path` (see the module docstring), with the token LM of the
    LM file `lm` (asr train-lm, over the model's vocabulary) for shallow fusion when given; returns out_dir."""
    rec = load_model(model_path)
    graphs = (*GRAPHS, NAT_GRAPH) if rec.has_nat else GRAPHS
    language_model = None
    if lm is not None:
        from asr.lm import load_lm

        language_model = load_lm(lm)
        try:
            language_model.check_vocabulary(rec.tokenizer)
        except ValueError as e:
            raise ValueError(f"--lm {lm} with --model {model_path}: {e}") from None
        graphs = (*graphs, LM_GRAPH)
    out = Path(out_dir)
    check_outputs([out / name for name in (*graphs, CARD)])  # before the export, not after
    out.mkdir(parents=True, exist_ok=True)
    enc_args, step_args = _example_inputs(rec)
    with torch.no_grad():
        _export(
            EncoderGraph(rec).eval(),
            enc_args,
            out / "encoder.onnx",
            (ENCODER_IO[0], ENCODER_IO[1] + (("nat_length_logits",) if rec.has_nat else ())),
            {"feats": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}},
        )
        rows = {0: "rows"}
        cache = {1: "rows", 3: "cached"}
        memory = {1: "rows", 3: "memory"}
        _export(
            DecoderStepGraph(rec).eval(),
            step_args,
            out / "decoder_step.onnx",
            STEP_IO,
            {
                "tokens": rows,
                "self_k": cache,
                "self_v": cache,
                "cross_k": memory,
                "cross_v": memory,
                "memory_lengths": rows,
            },
        )
        if rec.has_nat:
            batch = {0: "batch"}
            _export(
                NATGraph(rec).eval(),
                _example_nat_inputs(rec),
                out / NAT_GRAPH,
                NAT_IO,
                {
                    "tokens": {0: "batch", 1: "positions"},
                    "lengths": batch,
                    "memory": {0: "batch", 1: "memory"},
                    "memory_lengths": batch,
                },
            )
        if language_model is not None:
            cache = {1: "rows", 3: "cached"}
            _export(
                LMStepGraph(language_model).eval(),
                _example_lm_inputs(language_model, rec.tokenizer.sos),
                out / LM_GRAPH,
                LM_IO,
                {"tokens": {0: "rows"}, "self_k": cache, "self_v": cache},
            )
    if int8:
        for name in graphs:
            quantize_int8(out / name)
    card = model_card(rec, model_path, out, int8, graphs)
    if language_model is not None:
        c = language_model.cfg
        card["lm"] = {
            "source": str(lm),
            "parameters": sum(p.numel() for p in language_model.parameters()),
            "dims": {"layers": c.n_layers, "heads": c.n_heads, "d_head": c.d_model // c.n_heads},
        }
    write_text(out / CARD, json.dumps(card, indent=1) + "\n", overwrite=True)
    return out


QUANTIZED_OPS = ["MatMul", "Gemm"]
QUANTIZATION = {"method": "onnxruntime quantize_dynamic", "ops": QUANTIZED_OPS, "weights": "int8, per tensor"}


def quantize_int8(path: Path) -> None:
    """Replace the graph at `path` by its dynamic int8 quantisation (MatMul/Gemm weights int8, per tensor)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(path, overwrite=True) as tmp:
        quantize_dynamic(str(path), str(tmp), op_types_to_quantize=QUANTIZED_OPS, weight_type=QuantType.QInt8)


def model_card(rec: Recognizer, model_path: str | Path, out: Path, int8: bool, graphs: tuple[str, ...]) -> dict:
    """model.json: what the runtime needs to transcribe, and what a user wants to know about the model."""
    import asr
    from asr.model_file import read_file
    from asr.recognizer import MODEL_FORMAT

    extra = read_file(model_path, MODEL_FORMAT, "model").get("extra", {})
    tok = rec.tokenizer
    m = rec.cfg.model
    return {
        "format": EXPORT_FORMAT,
        "precision": "int8" if int8 else "fp32",
        "quantization": QUANTIZATION if int8 else None,
        "exported_by": f"asr {asr.__version__}, torch {torch.__version__}",
        "source": str(model_path),
        "parameters": sum(p.numel() for p in rec.network.parameters()),
        "config": rec.cfg.to_dict(),
        "tokenizer": {"kind": tok.kind, "tokens": list(tok.tokens), "normalizer": tok.normalizer.name},
        "special_ids": {"blank": tok.blank, "pad": tok.pad, "sos": tok.sos, "eos": tok.eos, "unk": tok.unk},
        "dims": {
            "layers": m.n_decoder_layers,
            "heads": m.n_heads,
            "d_head": m.d_model // m.n_heads,
            "vocab": len(tok),
            "subsampling": SUBSAMPLING,
        },
        "has_ctc": rec.has_ctc,
        "has_nat": rec.has_nat,
        "nat_max_length": m.nat_max_length if rec.has_nat else None,
        "training": {"train_manifest": rec.cfg.data.train_manifest, "dev_manifest": rec.cfg.data.dev_manifest, **extra},
        "files": {name: {"bytes": (out / name).stat().st_size, "sha256": sha256_file(out / name)} for name in graphs},
    }
