"""The Conformer encoder (model.encoder=conformer): relative-position attention against a direct computation,
padding never changes a valid frame, it learns the tone task, it exports to ONNX, and old configs stay Transformer."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_OVERRIDES, tone_config

from asr.benchmark.run import evaluate
from asr.config import config_from_dict, load_config
from asr.model.conformer import ConformerEncoder, RelPositionAttention, relative_positions
from asr.model.layers import sinusoidal_encoding
from asr.recognizer import load_model


def test_relative_positions_are_the_sinusoids_of_the_distances():
    pos = relative_positions(5, 8)  # distances -4 .. 4
    table = sinusoidal_encoding(5, 8)  # positions 0 .. 4
    assert torch.allclose(pos[4:], table, atol=1e-6)  # distance r >= 0 is position r
    # sin is odd and cos even: distance -r has the same cos columns and negated sin columns
    assert torch.allclose(pos[:4].flip(0)[:, 1::2], table[1:, 1::2], atol=1e-6)
    assert torch.allclose(pos[:4].flip(0)[:, 0::2], -table[1:, 0::2], atol=1e-6)


def test_rel_position_attention_matches_the_formula():
    torch.manual_seed(0)
    attn = RelPositionAttention(16, 2, 0.0).eval()
    b, t, h, dh = 2, 6, 2, 8
    x, lengths = torch.randn(b, t, 16), torch.tensor([6, 4])
    mask = (torch.arange(t)[None, :] < lengths[:, None])[:, None, None, :]
    pos = relative_positions(t, 16)
    got = attn(x, pos, mask)
    q, k, v = attn.qkv(x).view(b, t, 3, h, dh).unbind(2)  # each (batch, T, heads, d_head)
    p = attn.pos(pos).view(2 * t - 1, h, dh)
    want = torch.zeros(b, t, h, dh)
    for n in range(b):
        for head in range(h):
            for i in range(t):
                scores = []
                for j in range(t):
                    content = (q[n, i, head] + attn.pos_bias_u[head]) @ k[n, j, head]
                    position = (q[n, i, head] + attn.pos_bias_v[head]) @ p[i - j + t - 1, head]  # distance i - j
                    scores.append((content + position) / math.sqrt(dh) if j < lengths[n] else float("-inf"))
                w = torch.stack([torch.as_tensor(s) for s in scores]).softmax(0)
                want[n, i, head] = w @ v[n, :, head]
    want = attn.out(want.reshape(b, t, 16))
    assert torch.allclose(got, want, atol=1e-5)


def _tiny_conformer() -> ConformerEncoder:
    cfg = load_config(None, TINY_OVERRIDES + ["model.encoder=conformer", "model.conv_kernel=7"]).model
    cfg.n_features = 40
    return ConformerEncoder(cfg).eval()


def test_padding_never_changes_a_valid_frame():
    torch.manual_seed(0)
    enc = _tiny_conformer()
    short, long = torch.randn(1, 60, 40), torch.randn(1, 150, 40)
    alone, n, _ = enc(short, torch.tensor([60]))
    batch = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 90)), long])
    batched, lengths, _ = enc(batch, torch.tensor([60, 150]))
    assert lengths[0] == n[0]
    assert torch.allclose(batched[0, : n[0]], alone[0], atol=1e-5)  # conv module and attention see no padding


def test_old_configs_without_the_key_build_a_transformer():
    cfg = config_from_dict({"model": {"d_model": 64, "n_heads": 4}}, strict=False)
    assert cfg.model.encoder == "transformer"
    with pytest.raises(ValueError, match="model.encoder must be one of transformer, conformer"):
        from asr.model.transformer import SpeechTransformer

        cfg.model.encoder, cfg.model.vocab_size = "lstm", 10
        SpeechTransformer(cfg.model)
    with pytest.raises(ValueError, match="conv_kernel must be odd"):
        cfg = load_config(None, TINY_OVERRIDES + ["model.encoder=conformer", "model.conv_kernel=8"]).model
        ConformerEncoder(cfg)


@pytest.fixture(scope="module")
def conformer_model(tone_corpus, tmp_path_factory):
    from asr.training import train

    out = tmp_path_factory.mktemp("tone_conformer")
    cfg = tone_config(
        tone_corpus,
        out,
        "train.max_epochs=15",
        "model.encoder=conformer",
        "model.conv_kernel=7",
        "train.attention_plots=0",
    )
    return train(cfg)


@pytest.mark.slow
def test_conformer_learns_the_tone_task_and_reloads(conformer_model, tone_corpus):
    rec = load_model(conformer_model)
    assert rec.cfg.model.encoder == "conformer"
    result = evaluate(rec, tone_corpus["test"], decoder="beam", beam_size=3)
    assert result.rates.wer < 10.0, result.rates.summary()


@pytest.mark.slow
def test_conformer_exports_and_the_runtime_gives_torch_hypotheses(conformer_model, tone_corpus, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from asr.data.manifest import read_manifest
    from asr.export import export
    from asr.runtime import Runtime

    files = [u.audio_filepath for u in read_manifest(tone_corpus["test"])][:10]
    out = export(conformer_model, tmp_path / "onnx")
    want = load_model(conformer_model).transcribe(files, decoder="beam", beam_size=3)
    got = Runtime(out, threads=1).transcribe(files, decoder="beam", beam_size=3)
    assert [t.text for t in got] == [t.text for t in want]
    for g, w in zip(got, want):
        for gs, ws in zip(g.segments, w.segments, strict=True):
            assert gs.score == pytest.approx(ws.score, abs=1e-3)


def test_conv_module_is_the_depthwise_conv1d_it_stores():
    """ConvModule runs its depthwise nn.Conv1d's weights as a (k, 1) conv2d (faster on the CPU): same output."""
    from asr.model.conformer import ConvModule

    torch.manual_seed(0)
    conv = ConvModule(16, 5, 0.0).eval()
    x, valid = torch.randn(3, 9, 16), torch.ones(3, 9, 1)
    got = conv(x, valid)
    h = torch.nn.functional.glu(conv.pointwise_in(x), dim=-1)
    h = conv.depthwise(h.transpose(1, 2)).transpose(1, 2)  # the module's own Conv1d
    want = conv.pointwise_out(torch.nn.functional.silu(conv.norm(h)))
    assert torch.allclose(got, want, atol=1e-5)
