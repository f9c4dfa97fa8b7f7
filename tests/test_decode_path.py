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
