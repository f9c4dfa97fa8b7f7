"""asr export and asr.runtime (issue 25): the ONNX folder gives the torch path's outputs, runs without torch, int8
is smaller and still transcribes, and a damaged or foreign folder is refused naming the file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.cli import main
from asr.data.manifest import read_manifest
from asr.export import export, quantize_int8
from asr.outputs import OutputExistsError
from asr.recognizer import load_model, pad_waveforms

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ROOT = Path(__file__).resolve().parent.parent

# A sys.meta_path finder that makes the heavy stack unimportable, as in an install without it.
BLOCKER = textwrap.dedent(
    """
    import sys
    BLOCKED = ("torch", "torchaudio", "lightning", "librosa", "sentencepiece", "yaml")
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: this process stands for an install without it")
    sys.meta_path.insert(0, Blocker())
    """
)


@pytest.fixture(scope="module")
def exported(tone_model, tmp_path_factory) -> Path:
    return export(tone_model, tmp_path_factory.mktemp("onnx") / "fp32")


@pytest.fixture(scope="module")
def test_files(tone_corpus) -> list[str]:
    return [u.audio_filepath for u in read_manifest(tone_corpus["test"])][:12]


def test_encoder_graph_matches_torch(tone_model, exported):
    from asr.runtime.model import OnnxModel

    rec = load_model(tone_model)
    torch.manual_seed(0)
    wavs = [0.1 * torch.randn(n) for n in (16000, 9000, 4000)]  # a padded batch of three lengths
    padded, lengths = pad_waveforms(wavs)
    feats, frames = rec.frontend(padded, lengths)
    want = rec.encode(wavs)
    got = OnnxModel(exported).encode(feats.numpy(), frames.numpy())
    assert np.array_equal(got.lengths, want.lengths.numpy())
    for g, w, n in zip(got.memory, want.memory.numpy(), got.lengths):  # valid frames (padding differs freely)
        assert np.abs(g[:n] - w[:n]).max() < 1e-4
    for g, w, n in zip(got.ctc_log_probs, want.ctc_log_probs.numpy(), got.lengths):
        assert np.abs(g[:n] - w[:n]).max() < 1e-4


DECODERS = ["greedy", "beam", "beam:ctc_weight=0", "ctc", "beam:vtln_warps=0.9/1/1.1", "greedy:vtln_warps=0.92/1.08"]


@pytest.mark.parametrize("decoder", DECODERS)
def test_runtime_gives_the_torch_hypotheses(tone_model, exported, test_files, decoder):
    from asr.runtime import Runtime

    rec, rt = load_model(tone_model), Runtime(exported, threads=1)
    want = rec.transcribe(test_files, decoder=decoder, beam_size=4 if decoder.startswith("beam") else None)
    got = rt.transcribe(test_files, decoder=decoder, beam_size=4 if decoder.startswith("beam") else None)
    assert [t.text for t in got] == [t.text for t in want]
    assert any(t.text for t in want)  # a trained model: real hypotheses, not all empty
    for g, w in zip(got, want):
        assert len(g.segments) == len(w.segments)
        for gs, ws in zip(g.segments, w.segments):
            assert gs.tokens == ws.tokens
            assert gs.score == pytest.approx(ws.score, abs=1e-3)
            assert (gs.start, gs.end) == pytest.approx((ws.start, ws.end), abs=1e-6)
            # Word times: the CTC best path's, or forced alignment's for the attention decoders.
            assert (gs.words is None) == (ws.words is None)
            if ws.words is not None:
                assert [x.text for x in gs.words] == [x.text for x in ws.words]
                times = [t for x in gs.words for t in (x.start, x.end)]
                assert times == pytest.approx([t for x in ws.words for t in (x.start, x.end)], abs=1e-6)


def test_asr_transcribe_takes_an_export_folder(tone_model, exported, test_files, capsys):
    assert main(["transcribe", "--model", str(tone_model), *test_files[:4]]) == 0
    want = capsys.readouterr().out
    assert main(["transcribe", "--model", str(exported), *test_files[:4]]) == 0
    assert capsys.readouterr().out == want
    assert main(["transcribe", "--model", str(exported), "--decoder", "nat-length", test_files[0]]) == 2
    assert "no trained non-autoregressive head" in capsys.readouterr().err
    assert main(["transcribe", "--model", str(exported), "--lm-weight", "0.3", test_files[0]]) == 2
    assert "needs a language model: this export folder has none (asr export --lm)" in capsys.readouterr().err
    assert main(["transcribe", "--model", str(exported), "--lm", str(tone_model), test_files[0]]) == 2
    assert "an export folder carries its own LM" in capsys.readouterr().err


@pytest.mark.slow
def test_nat_head_is_exported_and_decodes_as_torch(tone_nat_model, test_files, tmp_path):
    from asr.runtime import Runtime

    out = export(tone_nat_model, tmp_path / "nat")
    card = json.loads((out / "model.json").read_text())
    assert card["has_nat"] and "nat.onnx" in card["files"]
    rec, rt = load_model(tone_nat_model), Runtime(out, threads=1)
    for decoder in ("nat-length", "nat-length:length_from=ctc", "nat-max", "mask-ctc"):
        want, got = rec.transcribe(test_files, decoder=decoder), rt.transcribe(test_files, decoder=decoder)
        assert [t.text for t in got] == [t.text for t in want], decoder
        assert any(t.text for t in want)
        for g, w in zip(got, want):
            for gs, ws in zip(g.segments, w.segments, strict=True):
                assert gs.score == pytest.approx(ws.score, abs=1e-3)
                assert [x.start for x in gs.words or []] == pytest.approx([x.start for x in ws.words or []], abs=1e-6)


def test_benchmark_and_evaluate_take_export_folders(tone_model, exported, tone_corpus, tmp_path, capsys):
    """One table: torch fp32 and ONNX fp32 give the same hypotheses; evaluate prints the same WER."""
    test = tone_corpus["test"]
    out = tmp_path / "bench"
    args = ["benchmark", "--models", str(tone_model), str(exported), "--sets", str(test), "--decoders", "beam,ctc"]
    assert main([*args, "--out", str(out), "--bootstrap", "50"]) == 0
    capsys.readouterr()
    systems = json.loads((out / "results.json").read_text())["systems"]
    assert len(systems) == 4
    by = {(Path(s["model_path"]).name, s["decoder"]): s for s in systems}
    for decoder in ("beam", "ctc"):
        torch_run, onnx_run = by[("model.pt", decoder)], by[(exported.name, decoder)]
        assert onnx_run["rates"] == torch_run["rates"]
        assert onnx_run["device"] == "cpu (onnxruntime)" and onnx_run["num_params"] == torch_run["num_params"]
    evaluate = ["evaluate", "--manifest", str(test)]
    assert main([*evaluate, "--model", str(exported), "--out", str(tmp_path / "h.jsonl")]) == 0
    onnx_out = capsys.readouterr().out
    assert main([*evaluate, "--model", str(tone_model), "--out", str(tmp_path / "t.jsonl")]) == 0
    wer = re.compile(r"WER [\d.]+% \(95% CI [\d.]+-[\d.]+\)")
    assert wer.search(onnx_out).group() == wer.search(capsys.readouterr().out).group()


def test_serve_takes_an_export_folder(tone_model, exported, test_files):
    """The OpenAI-compatible server over the ONNX runtime answers as asr transcribe does."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("starlette")
    from asr.runtime import Runtime
    from asr.serve import ServeConfig, create_app, running

    rt = Runtime(exported)
    config = ServeConfig(model_id="tone", max_batch=8, max_wait_ms=50.0, max_upload_mb=2.0, max_audio_seconds=30.0)
    want = [t.text for t in load_model(tone_model).transcribe(test_files[:4])]
    with running(create_app(rt, rt.options(), config)) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
        got = []
        for path in test_files[:4]:
            with open(path, "rb") as f:
                got.append(c.audio.transcriptions.create(model="tone", file=f).text)
        with open(test_files[0], "rb") as f:
            verbose = c.audio.transcriptions.create(
                model="tone", file=f, response_format="verbose_json", timestamp_granularities=["word"]
            )
    assert got == want and any(got)
    assert verbose.text == want[0]


@pytest.fixture(scope="module")
def tone_lm(tone_model, tmp_path_factory) -> Path:
    """A token LM over the tone model's vocabulary. Untrained (seeded random weights) is enough here: what is tested
    is that the exported LM scores as the torch one does, and that fusion moves the scores."""
    from asr.lm import LMConfig, TransformerLM, save_lm

    torch.manual_seed(0)
    cfg = LMConfig(d_model=32, n_heads=2, d_ff=64, n_layers=2, dropout=0.0)
    lm = TransformerLM(cfg, load_model(tone_model).tokenizer)
    return save_lm(tmp_path_factory.mktemp("lm") / "lm.pt", lm.eval())


def test_lm_is_exported_and_fused_as_torch_fuses_it(tone_model, tone_lm, tone_corpus, test_files, tmp_path, capsys):
    from asr.lm import load_lm
    from asr.runtime import Runtime
    from asr.runtime.model import LMSteps

    assert main(["export", "--model", str(tone_model), "--lm", str(tone_lm), "--out", str(tmp_path / "lm")]) == 0
    assert "with the LM" in capsys.readouterr().out
    out = tmp_path / "lm"
    card = json.loads((out / "model.json").read_text())
    assert "lm_step.onnx" in card["files"] and card["lm"]["dims"] == {"layers": 2, "heads": 2, "d_head": 16}

    # The step graph against TransformerLM.step, over a few fed tokens of three rows (reordered midway).
    lm, rt = load_lm(tone_lm), Runtime(out, threads=1)
    assert isinstance(rt.lm, LMSteps)
    sos = lm.tokenizer.sos
    feeds = [[sos, sos, sos], [5, 7, 9], [6, 6, 8], [10, 5, 7]]
    state, ort_state = lm.init_state(3), rt.lm.start(np.arange(3))
    for i, tokens in enumerate(feeds):
        want, state = lm.step(state, torch.tensor(tokens))
        got, ort_state = rt.lm.step(np.array(tokens), ort_state)
        finite = np.isfinite(want.numpy())
        assert np.array_equal(finite, np.isfinite(got)) and np.abs(got[finite] - want.numpy()[finite]).max() < 1e-4
        if i == 1:
            rows = np.array([2, 0, 0])
            state, ort_state = state.select(torch.from_numpy(rows)), rt.lm.select(ort_state, rows)

    # Beam + CTC + LM: the torch path's hypotheses and scores; and the LM takes part.
    rec = load_model(tone_model).attach_lm(lm)
    for decoder in ("beam:ctc_weight=0", "beam"):
        want = rec.transcribe(test_files, decoder=decoder, beam_size=4, lm_weight=0.5)
        got = rt.transcribe(test_files, decoder=decoder, beam_size=4, lm_weight=0.5)
        plain = rt.transcribe(test_files, decoder=decoder, beam_size=4, lm_weight=0.0)
        assert [t.text for t in got] == [t.text for t in want] and any(t.text for t in want)
        for g, w in zip(got, want):
            for gs, ws in zip(g.segments, w.segments, strict=True):
                assert gs.tokens == ws.tokens
                assert gs.score == pytest.approx(ws.score, abs=1e-3)
        fused = [s.score for t in got for s in t.segments]
        assert fused != pytest.approx([s.score for t in plain for s in t.segments], abs=1e-3)

    # asr benchmark: --lm goes to the model file, the folder fuses its own; the same error rates.
    bench = tmp_path / "bench"
    setup = ["--decoders", "beam4:lm_weight=0.5", "--bootstrap", "20", "--out", str(bench)]
    assert (
        main(
            [
                "benchmark",
                "--models",
                str(tone_model),
                str(out),
                "--sets",
                str(tone_corpus["test"]),
                *setup,
                "--lm",
                str(tone_lm),
            ]
        )
        == 0
    )
    capsys.readouterr()
    torch_run, onnx_run = json.loads((bench / "results.json").read_text())["systems"]
    assert onnx_run["rates"] == torch_run["rates"] and onnx_run["decoder"] == "beam4:lm_weight=0.5"

    # An LM over another vocabulary is refused before anything is written.
    from asr.lm import LMConfig, TransformerLM, save_lm
    from asr.text import CharTokenizer

    other = save_lm(tmp_path / "other.pt", TransformerLM(LMConfig(d_model=32, n_heads=2), CharTokenizer(list("xyz "))))
    with pytest.raises(ValueError, match=r"other\.pt.*does not match"):
        export(tone_model, tmp_path / "bad", lm=other)
    assert not (tmp_path / "bad").exists()


def _blocked_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_blocker_blocks_torch():
    proc = _blocked_python("import torch")
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr


def test_runtime_transcribes_without_torch(tone_model, exported, test_files):
    want = load_model(tone_model).transcribe(test_files[:3], decoder="beam", beam_size=4)
    proc = _blocked_python(
        f"""
        import runpy, sys
        sys.argv = ["asr.runtime", "--model", {str(exported)!r}, "--beam-size", "4", "--format", "json",
                    *{test_files[:3]!r}]
        try:
            runpy.run_module("asr.runtime", run_name="__main__")
        finally:
            heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio", "lightning", "librosa"))
            print("HEAVY", heavy, file=sys.stderr)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d["text"] for d in lines] == [t.text for t in want]


def test_runtime_cli_does_test_time_vtln_as_torch(tone_model, exported, test_files, capsys):
    from asr.runtime.__main__ import main as runtime_main

    warps = (0.9, 1.0, 1.1)
    want = load_model(tone_model).transcribe(test_files[:4], decoder="beam", beam_size=3, vtln_warps=warps)
    args = ["--model", str(exported), "--beam-size", "3", "--format", "json", "--threads", "1", *test_files[:4]]
    assert runtime_main([*args, "--vtln-warps", "0.9,1,1.1"]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["text"] for d in got] == [t.text for t in want]
    assert [s["score"] for d in got for s in d["segments"]] == pytest.approx(
        [s.score for t in want for s in t.segments], abs=1e-3
    )
    assert runtime_main([*args, "--vtln-warps", "0.9,x"]) == 2
    assert "--vtln-warps must be comma-separated numbers" in capsys.readouterr().err
    assert runtime_main([*args, "--vtln-warps", "3"]) == 2
    assert "vtln_warps must be warp factors" in capsys.readouterr().err


def test_int8_folder_is_smaller_and_transcribes(tone_model, exported, test_files, tmp_path):
    from asr.runtime import Runtime

    out = export(tone_model, tmp_path / "int8", int8=True)
    card = json.loads((out / "model.json").read_text())
    assert card["precision"] == "int8" and card["quantization"]["ops"] == ["MatMul", "Gemm"]
    assert json.loads((exported / "model.json").read_text())["precision"] == "fp32"

    def size(folder: Path) -> int:
        return sum((folder / name).stat().st_size for name in ("encoder.onnx", "decoder_step.onnx"))

    # MatMul/Gemm weights go int8 (4x); the conv front end, embeddings, norms and the graph itself stay: on this
    # tiny model (0.1 M parameters) ~2.7x, on the recipes' 2.6 M one > 3x (next test)
    assert size(exported) >= 2.3 * size(out), (size(exported), size(out))
    texts = [t.text for t in Runtime(out, threads=1).transcribe(test_files, decoder="beam", beam_size=4)]
    want = [t.text for t in load_model(tone_model).transcribe(test_files, decoder="beam", beam_size=4)]
    import jiwer

    assert jiwer.wer(want, texts) <= 0.2  # quantisation noise on a tiny model: nearly the same words


@pytest.mark.slow
def test_int8_is_over_3x_smaller_at_the_recipe_size(tmp_path):
    """The FSDD/AN4 recipes' 2.6 M-parameter shape (untrained: the size does not depend on the weights' values)."""
    from asr.config import load_config
    from asr.recognizer import Recognizer, save_model
    from asr.text import CharTokenizer

    cfg = load_config(ROOT / "recipes" / "fsdd" / "conf.yaml", [])
    model = save_model(tmp_path / "model.pt", Recognizer(cfg, CharTokenizer(list("abcdefghijklmnopqrstuvwxyz' "))))
    fp32 = export(model, tmp_path / "fp32")
    int8 = _copy(fp32, tmp_path / "int8")
    for name in ("encoder.onnx", "decoder_step.onnx"):
        quantize_int8(int8 / name)
    sizes = [sum((d / n).stat().st_size for n in ("encoder.onnx", "decoder_step.onnx")) for d in (fp32, int8)]
    assert sizes[0] >= 3 * sizes[1], sizes


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_damaged_or_foreign_folders_are_refused_naming_the_file(exported, tmp_path, capsys):
    from asr.runtime.model import ExportError, OnnxModel

    missing = _copy(exported, tmp_path / "missing")
    (missing / "decoder_step.onnx").unlink()
    with pytest.raises(ExportError, match=r"missing/decoder_step\.onnx: missing"):
        OnnxModel(missing)

    tampered = _copy(exported, tmp_path / "tampered")
    data = bytearray((tampered / "encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / "encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"tampered/encoder\.onnx: differs from the file exported"):
        OnnxModel(tampered)

    for name, version, advice in [("newer", 3, "newer toolkit"), ("older", 1, "export the model file again")]:
        other = _copy(exported, tmp_path / name)
        card = json.loads((other / "model.json").read_text())
        card["format"] = f"asr-onnx/{version}"
        (other / "model.json").write_text(json.dumps(card))
        with pytest.raises(ExportError, match=rf"{name}/model\.json: export format 'asr-onnx/{version}'.*{advice}"):
            OnnxModel(other)

    with pytest.raises(ExportError, match=r"not an export folder"):
        OnnxModel(tmp_path / "nowhere")
    assert main(["transcribe", "--model", str(tampered), "x.wav"]) == 2
    assert "tampered/encoder.onnx: differs" in capsys.readouterr().err


def test_export_does_not_clobber_a_foreign_file(tone_model, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "model.json").write_text("mine")
    with pytest.raises(OutputExistsError, match="model.json"):
        export(tone_model, out)
    assert (out / "model.json").read_text() == "mine"
