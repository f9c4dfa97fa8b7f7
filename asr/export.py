"""A model file -> a self-contained ONNX folder that asr.runtime transcribes with, without torch.

    export(model_path, out_dir, int8=False) -> out_dir holding
        encoder.onnx       feats (batch, frames, dim) raw fbank/MFCC, lengths (batch,)
                           -> memory (batch, frames/4, d_model), memory_lengths (batch,),
                              ctc_log_probs (batch, frames/4, vocab), cross_k_i (batch, heads, d_head, frames/4) and
                              cross_v_i (batch, heads, frames/4, d_head) for each decoder layer i: its cross-attention
                              keys (transposed, see _attend) and values, computed once per utterance
        decoder_step.onnx  tokens (rows,), self_k_i (rows, heads, d_head, t) / self_v_i (rows, heads, t, d_head) of the
                           t tokens fed so far, cross_k_i / cross_v_i (rows' utterances' entries), memory_lengths
                           -> log_probs (rows, vocab), new_self_k_i / new_self_v_i (t + 1 tokens)
        nat.onnx           (models with a trained NAT head) tokens (batch, n), lengths, memory, memory_lengths
                           -> log_probs (batch, n, vocab) of every position in one pass; the encoder graph then
                              also gives nat_length_logits (batch, nat_max_length + 1)
        lm_step.onnx       (export(..., lm=LM file), asr export --lm) one step of the token LM for shallow fusion:
                           tokens (rows,), self_k_i / self_v_i per LM layer (as the decoder's) -> log_probs (rows,
                           vocab), new_self_k_i / new_self_v_i
        model.json         the model card: format version, precision, the model's config (features, decoding
                           defaults), tokenizer, special ids, parameter count, training data and the WER figures the
                           model file holds, and each graph's size and sha256 (the runtime refuses a changed file)

CMVN is inside the encoder graph (its statistics are weights); the features themselves are computed by the runtime
(asr/runtime/features.py, numpy, matching asr/features.py). The graphs are traced with torch.onnx.export(dynamo=True)
with dynamic batch, frame and token axes. The graph modules below re-state the network's forward passes with plain
tensors in place of the Python-dict KV cache (an exported graph cannot hold a dict), using the network's own layers,
so the arithmetic is the same as Recognizer.decode's. Caches are one tensor per layer, not one stacked tensor: ONNX
Runtime copies every slice of a stacked input, which cost about a third of a decoder step at beam sizes; and keys
are stored transposed (_attend).

--int8: onnxruntime's dynamic quantisation of the MatMul/Gemm weights (int8 weights, activations quantised on the fly).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from asr.model.conformer import ConformerEncoder
from asr.model.layers import Conv2dSubsampling, MultiHeadAttention, padding_mask
from asr.outputs import atomic_path, check_outputs, sha256_file, write_text
from asr.recognizer import SUBSAMPLING, Recognizer, load_model

log = logging.getLogger("asr")

EXPORT_FORMAT = "asr-onnx/2"  # model.json's "format"; the runtime refuses others. /2: per-layer caches (/1 stacked)
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


def _attend(q: Tensor, k_t: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Attention of one query position: q (rows, heads, 1, d_head), keys stored transposed k_t (rows, heads, d_head,
    t), v (rows, heads, t, d_head), mask (rows, 1, 1, t) True = attend -> (rows, heads, 1, d_head). What
    scaled_dot_product_attention computes, but its ONNX form transposes the keys in every call: a copy of the whole
    cache (and of the encoder keys) at each step. Keys kept as (d_head, t) need none."""
    scores = (q * q.size(-1) ** -0.5) @ k_t  # (rows, heads, 1, t)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def _cached_self_attention(
    sa: MultiHeadAttention, h: Tensor, past_k_t: Tensor, past_v: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One new position's self-attention over the t cached ones and itself: h (rows, 1, d_model), past keys (rows,
    heads, d_head, t) and values (rows, heads, t, d_head) -> (output (rows, 1, d_model), keys (..., t + 1), values
    (..., t + 1, d_head))."""
    k, v = sa.kv(h).chunk(2, dim=-1)
    k_t = torch.cat([past_k_t, _heads(sa, k).transpose(2, 3)], dim=3)
    v = torch.cat([past_v, _heads(sa, v)], dim=2)
    return _merge(sa, _attend(_heads(sa, sa.q(h)), k_t, v)), k_t, v


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
            ks.append(_heads(layer.cross_attn, k).transpose(2, 3))  # (batch, heads, d_head, frames/4): see _attend
            vs.append(_heads(layer.cross_attn, v))  # (batch, heads, frames/4, d_head)
        out = (memory, m_lengths, ctc, *ks, *vs)
        if self.with_nat:  # the NAT head's length classifier reads only the memory: (batch, nat_max_length + 1)
            out += (self.net.nat_length_logits(memory, m_lengths),)
        return out


class DecoderStepGraph(nn.Module):
    """One incremental decoder step with the cache as tensors: what SpeechTransformer.step does with its dict."""

    def __init__(self, rec: Recognizer):
        super().__init__()
        self.dec = rec.network.decoder

    def forward(
        self,
        tokens: Tensor,
        self_k: list[Tensor],
        self_v: list[Tensor],
        cross_k: list[Tensor],
        cross_v: list[Tensor],
        memory_lengths: Tensor,
    ) -> tuple[Tensor, ...]:
        """-> log_probs (rows, vocab), then each layer's new self-attention keys, then its values."""
        dec = self.dec
        x = dec.embed(tokens)[:, None]  # (rows, 1, d_model)
        x = x * dec.pos.scale + positions(self_v[0].size(2), 1, x.size(-1))  # after the t fed
        memory_mask = padding_mask(memory_lengths, cross_v[0].size(2))[:, None, None, :]  # (rows, 1, 1, frames/4)
        new_k, new_v = [], []
        for i, layer in enumerate(dec.layers):
            y, k, v = _cached_self_attention(layer.self_attn, layer.self_norm(x), self_k[i], self_v[i])
            x = x + y  # sees every fed token
            new_k.append(k)
            new_v.append(v)
            ca = layer.cross_attn
            q = _heads(ca, ca.q(layer.cross_norm(x)))
            x = x + _merge(ca, _attend(q, cross_k[i], cross_v[i], memory_mask))
            x = x + layer.ff(layer.ff_norm(x))
        logits = dec.out(dec.norm(x))[:, -1]  # (rows, vocab)
        return (logits.float().log_softmax(dim=-1), *new_k, *new_v)


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

    def forward(self, tokens: Tensor, self_k: list[Tensor], self_v: list[Tensor]) -> tuple[Tensor, ...]:
        """-> log_probs (rows, vocab), then each layer's new keys, then its values."""
        lm = self.lm
        x = lm.embed(tokens)[:, None] * lm.pos.scale + positions(self_v[0].size(2), 1, lm.cfg.d_model)  # (rows, 1, d)
        new_k, new_v = [], []
        for i, layer in enumerate(lm.layers):
            y, k, v = _cached_self_attention(layer.attn, layer.attn_norm(x), self_k[i], self_v[i])
            x = x + y
            new_k.append(k)
            new_v.append(v)
            x = x + layer.ff(layer.ff_norm(x))
        logits = lm.out(lm.norm(x))[:, -1].float().masked_fill(lm.never, float("-inf"))  # (rows, vocab)
        return (logits.log_softmax(dim=-1), *new_k, *new_v)


def _example_lm_inputs(lm: nn.Module, sos: int) -> tuple:
    c = lm.cfg
    dh, layers = c.d_model // c.n_heads, range(c.n_layers)
    return (
        torch.tensor([sos, sos, 7 % c.vocab_size]),
        [torch.randn(3, c.n_heads, dh, 2) for _ in layers],  # keys transposed: (rows, heads, d_head, t)
        [torch.randn(3, c.n_heads, 2, dh) for _ in layers],
    )


def _example_inputs(rec: Recognizer) -> tuple[tuple, tuple]:
    """Inputs to trace with: sizes > 1 on every dynamic axis (a size of 1 would be specialised into the graph)."""
    m = rec.cfg.model
    feats = torch.randn(2, 61, rec.cfg.features.dim)
    lengths = torch.tensor([61, 45])
    heads, dh, layers = m.n_heads, m.d_model // m.n_heads, m.n_decoder_layers
    frames = int(Conv2dSubsampling.output_lengths(torch.tensor(61)))
    step = (
        torch.tensor([rec.tokenizer.sos, rec.tokenizer.sos, 7]),
        [torch.randn(3, heads, dh, 2) for _ in range(layers)],  # keys transposed: (rows, heads, d_head, t)
        [torch.randn(3, heads, 2, dh) for _ in range(layers)],
        [torch.randn(3, heads, dh, frames) for _ in range(layers)],
        [torch.randn(3, heads, frames, dh) for _ in range(layers)],
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

    def spec(axes: dict) -> dict:
        return {axis: dims[d] for axis, d in axes.items()}

    # a list argument (a per-layer cache) takes one spec per tensor
    shapes = {arg: [spec(a) for a in axes] if isinstance(axes, list) else spec(axes) for arg, axes in dynamic.items()}
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


NAT_IO = (("tokens", "lengths", "memory", "memory_lengths"), ("log_probs",))
NAT_GRAPH = "nat.onnx"  # written when the model has a trained NAT head
LM_GRAPH = "lm_step.onnx"  # written with export(..., lm=...)


def per_layer(name: str, layers: int) -> tuple[str, ...]:
    """name_0 .. name_{layers-1}: the graph inputs/outputs of a per-layer cache."""
    return tuple(f"{name}_{i}" for i in range(layers))


def encoder_io(layers: int, nat: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    out = ("memory", "memory_lengths", "ctc_log_probs", *per_layer("cross_k", layers), *per_layer("cross_v", layers))
    return ("feats", "lengths"), out + (("nat_length_logits",) if nat else ())


def step_io(layers: int, cross: bool = True) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The decoder step's (cross=True) or the LM step's input and output names, in forward's argument order."""
    inputs = ("tokens", *per_layer("self_k", layers), *per_layer("self_v", layers))
    if cross:
        inputs += (*per_layer("cross_k", layers), *per_layer("cross_v", layers), "memory_lengths")
    return inputs, ("log_probs", *per_layer("new_self_k", layers), *per_layer("new_self_v", layers))


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
    layers = rec.cfg.model.n_decoder_layers
    with torch.no_grad():
        _export(
            EncoderGraph(rec).eval(),
            enc_args,
            out / "encoder.onnx",
            encoder_io(layers, rec.has_nat),
            {"feats": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}},
        )
        rows = {0: "rows"}
        keys, values = [{0: "rows", 3: "cached"}] * layers, [{0: "rows", 2: "cached"}] * layers  # per layer
        _export(
            DecoderStepGraph(rec).eval(),
            step_args,
            out / "decoder_step.onnx",
            step_io(layers),
            {
                "tokens": rows,
                "self_k": keys,
                "self_v": values,
                "cross_k": [{0: "rows", 3: "memory"}] * layers,
                "cross_v": [{0: "rows", 2: "memory"}] * layers,
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
            lm_layers = language_model.cfg.n_layers
            keys, values = [{0: "rows", 3: "cached"}] * lm_layers, [{0: "rows", 2: "cached"}] * lm_layers
            _export(
                LMStepGraph(language_model).eval(),
                _example_lm_inputs(language_model, rec.tokenizer.sos),
                out / LM_GRAPH,
                step_io(lm_layers, cross=False),
                {"tokens": {0: "rows"}, "self_k": keys, "self_v": values},
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
