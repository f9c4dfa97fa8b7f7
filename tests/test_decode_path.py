"""One decode path: options validated once with errors that name both flags, segmented manifests, no import cycles."""

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr import load_model
from asr.cli import main
from asr.data.manifest import read_manifest
from asr.decoding.options import DecodingOptions, OptionsError

ASR = Path(__file__).resolve().parents[1] / "asr"


def test_contradictory_options_are_errors_that_name_both(tone_model, tone_corpus, capsys):
    rec = load_model(tone_model)
    before = dataclasses.asdict(rec.cfg)
    with pytest.raises(OptionsError, match="beam_size= does not apply to decoder= ctc"):
        rec.options(decoder="ctc", beam_size=10)
    with pytest.raises(OptionsError, match="beam5 sets beam_size = 5, but beam_size= 10"):
        rec.options(decoder="beam5", beam_size=10)
    # The same beam search, however it is asked for: the setup name and the keyword give the same options.
    assert rec.options(decoder="beam5") == rec.options(decoder="beam", beam_size=5) == rec.options(beam_size=5)
    assert dataclasses.asdict(rec.cfg) == before  # decoding choices never rewrite the model's config
    with pytest.raises(OptionsError, match="beam_size"):
        DecodingOptions(beam_size=0)

    wav = read_manifest(tone_corpus["test"])[0].audio_filepath
    base = ["transcribe", "--model", str(tone_model)]
    assert main([*base, "--decoder", "ctc", "--beam-size", "10", wav]) == 2
    err = capsys.readouterr().err
    assert "--beam-size does not apply to --decoder ctc" in err
    assert main([*base, "--decoder", "beam5", "--beam-size", "10", wav]) == 2
    err = capsys.readouterr().err
    assert "--decoder beam5" in err and "--beam-size 10" in err
    assert main([*base, "--decoder", "beam5", wav]) == 0
    by_setup = capsys.readouterr().out
    assert main([*base, "--beam-size", "5", wav]) == 0
    assert capsys.readouterr().out == by_setup


def test_transcribe_decodes_each_segment_of_a_segmented_manifest(tone_model, tone_corpus, tmp_path, capsys):
    utts = read_manifest(tone_corpus["test"])[:3]
    parts, segments, t = [], [], 0.0
    for i, u in enumerate(utts):
        x, sr = sf.read(u.audio_filepath, dtype="float32")
        parts += [np.zeros(sr // 2, dtype=np.float32), x]
        t += 0.5
        segments.append({"audio_filepath": "long.wav", "offset": t, "duration": x.size / sr, "id": f"seg{i}"})
        t += x.size / sr
    sf.write(tmp_path / "long.wav", np.concatenate(parts), sr)
    manifest = tmp_path / "segments.jsonl"
    manifest.write_text("".join(json.dumps(s) + "\n" for s in segments))

    args = ["transcribe", "--model", str(tone_model), "--decoder", "greedy"]
    assert main([*args, *[u.audio_filepath for u in utts]]) == 0
    alone = [line.split("\t")[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert main([*args, str(manifest)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["seg0", "seg1", "seg2"]
    assert [line.split("\t")[1] for line in lines] == alone  # each segment's span, not the whole file
    assert main([*args, "--format", "json", str(manifest)]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [d["duration"] for d in docs] == pytest.approx([s["duration"] for s in segments], abs=1e-3)


def _imports(path: Path) -> set[str]:
    """The asr modules a file imports, at any level (a function-level import still makes a cycle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("asr")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("asr") and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from asr.model import nat`
    return found


def test_no_import_cycles_in_asr():
    modules = {}
    for f in ASR.rglob("*.py"):
        name = ".".join(f.relative_to(ASR.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = f
    graph = {m: {d for d in _imports(f) if d in modules and d != m} for m, f in modules.items()}
    # A package's __init__ that re-exports its modules is not a cycle with them: drop package -> own submodule.
    graph = {m: {d for d in ds if not d.startswith(m + ".")} for m, ds in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d) :] + [m, d]))
            if d not in state:
                visit(d, path + [m] if m not in path else path)
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])

    # Each module imports alone, first of asr, in a fresh interpreter (asr is unloaded between them).
    code = (
        "import importlib, sys\n"
        "for m in sys.argv[1:]:\n"
        "    importlib.import_module(m)\n"
        "    [sys.modules.pop(k) for k in list(sys.modules) if k == 'asr' or k.startswith('asr.')]\n"
    )
    run = subprocess.run([sys.executable, "-c", code, *sorted(modules)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def _through_every_entry_point(model: Path, manifest: Path, setups: list[str], tmp_path: Path, lm: Path | None):
    """Each setup's (hypotheses, scores) from the API (encode + decode), `asr evaluate` and `asr benchmark`."""
    from asr.benchmark.run import load_utterances
    from asr.lm import load_lm

    rec = load_model(model)
    if lm is not None:
        rec.attach_lm(load_lm(lm))
    norm = rec.tokenizer.normalizer
    wavs, _ = load_utterances(read_manifest(manifest), rec.cfg.features.sample_rate)
    extra = ["--lm", str(lm)] if lm is not None else []
    bench = tmp_path / "bench"
    args = ["benchmark", "--models", str(model), "--sets", str(manifest), "--decoders", *setups, "--out", str(bench)]
    assert main([*args, "--bootstrap", "20", *extra]) == 0
    cached = {}
    for p in (bench / "cache").glob("*.json"):
        blob = json.loads(p.read_text())
        cached[blob["key"]["decoder"]] = (blob["decoded"]["hyps"], blob["decoded"]["scores"])
    for setup in setups:
        options = rec.options(decoder=setup)
        hyps = rec.decode(rec.encode(wavs, warps=options.warps), options)
        api = ([norm(h.text) for h in hyps], [h.score for h in hyps])
        uses_lm = extra if "lm_weight" in setup else []  # --lm with a decoder that can't use it is an error
        out = tmp_path / f"{setup.replace(':', '_').replace('/', '_')}.jsonl"
        assert (
            main(
                [
                    "evaluate",
                    "--model",
                    str(model),
                    "--manifest",
                    str(manifest),
                    "--decoder",
                    setup,
                    "--out",
                    str(out),
                    *uses_lm,
                ]
            )
            == 0
        )
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        cli = ([r["hyp"] for r in rows], [r["score"] for r in rows])
        bench_hyps, bench_scores = cached[setup]
        assert cli[0] == api[0] == [norm(h) for h in bench_hyps], setup
        # Batches differ (the API decodes all at once): scores agree to float rounding.
        assert cli[1] == pytest.approx(api[1], abs=1e-3) and bench_scores == pytest.approx(api[1], abs=1e-3), setup
        assert all(np.isfinite(s) and s <= 0 for s in api[1]), setup


@pytest.mark.slow
def test_same_hypotheses_and_scores_through_api_cli_and_benchmark(tone_model, tone_nat_model, tone_corpus, tmp_path):
    from asr.lm import LMConfig, LMTrainConfig, save_lm, train_lm

    texts = [u.text for u in read_manifest(tone_corpus["train"])]
    tok = load_model(tone_model).tokenizer
    lm, _ = train_lm(texts, tok, LMConfig(d_model=32, d_ff=64, n_layers=1), LMTrainConfig(epochs=1))
    lm_path = save_lm(tmp_path / "lm.pt", lm)
    setups = ["greedy", "beam10", "ctc", "beam3:lm_weight=0.5", "beam3:vtln_warps=0.9/1.0/1.1"]
    _through_every_entry_point(tone_model, tone_corpus["test"], setups, tmp_path / "ar", lm_path)
    _through_every_entry_point(tone_nat_model, tone_corpus["test"], ["mask-ctc"], tmp_path / "nat", None)
