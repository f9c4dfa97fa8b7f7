"""Issue 27: manifests validated up front (every problem at once, as file:line), outputs never clobbered and always
written atomically."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.cli import main
from asr.data.dataset import load_split
from asr.data.manifest import ManifestError, read_manifest
from asr.data.validate import validate_manifest
from asr.outputs import (
    LEDGER,
    OutputError,
    OutputExistsError,
    allow_overwrite,
    atomic_open,
    atomic_path,
    check_output,
    write_text,
)


def _wav(path: Path, seconds: float, sr: int = 16000) -> Path:
    sf.write(str(path), np.zeros(int(seconds * sr), dtype=np.float32), sr)
    return path


def _lines(path: Path, *items) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items), encoding="utf-8")
    return path


@pytest.fixture
def messy(tmp_path) -> Path:
    """One manifest with a problem of each kind, line by line (line numbers are asserted below)."""
    _wav(tmp_path / "a.wav", 1.0)
    _wav(tmp_path / "short.wav", 0.005)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    return _lines(
        tmp_path / "messy.jsonl",
        {"audio_filepath": "a.wav", "duration": 1.0, "text": "good line"},  # 1
        {"audio_filepath": "a.wav", "duration": 1.0, "text": "same file again"},  # 2 warning: listed again
        {"audio_filepath": "short.wav", "duration": 0.005, "text": "x"},  # 3 too short (audio)
        {"audio_filepath": "corrupt.wav", "duration": 1.0, "text": "x"},  # 4 unreadable (audio)
        {"audio_filepath": "missing.wav", "duration": 1.0, "text": "x"},  # 5 missing (audio)
        {"audio_filepath": "a.wav", "duration": 3.0, "text": "", "id": "u6"},  # 6 warnings: empty text, duration
        {"audio_filepath": "a.wav", "duration": -1, "text": "x", "id": "u7"},  # 7 negative duration
        "{not json",  # 8
        "[1, 2]",  # 9 not an object
        {"audio_filepath": "a.wav", "offset": 0.5, "duration": 1.0, "text": "seg", "id": "s1"},  # 10 past the end
        '{"duration": NaN, "text": 5}',  # 11 three problems
        {"audio_filepath": "a.wav", "duration": 1.0, "text": "dup id", "id": "u6"},  # 12 duplicate id
    )


def test_validate_reports_every_problem_with_file_and_line(messy, capsys):
    assert main(["validate", str(messy), "--audio"]) == 1
    out = capsys.readouterr().out.splitlines()
    at = {}
    for line in out[:-1]:
        where, _, problem = line.partition(": ")
        assert where.startswith(str(messy) + ":"), line
        at.setdefault(int(where.rsplit(":", 1)[1]), []).append(problem)
    assert sorted(at) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # line 1 is fine
    assert at[2] == ["warning: audio 'a.wav' listed again (first on line 1)"]
    assert "too short" in at[3][0] and "short.wav" in at[3][0]
    assert "corrupt.wav" in at[4][0] and "cannot read audio" in at[4][0]
    assert at[5] == [f"{messy.parent / 'missing.wav'}: audio file not found"]
    assert any(p.startswith("warning: empty text") for p in at[6])
    assert any(p.startswith("warning: duration 3 s") for p in at[6])
    assert at[7] == ["duration must be a positive number, got -1"]
    assert at[8][0].startswith("invalid JSON") and at[9] == ["expected a JSON object, got list"]
    assert "after the end of" in at[10][0]
    assert len(at[11]) == 3  # all of a line's problems, not only the first
    assert "duplicate id 'u6' (first on line 6)" in at[12]
    assert out[-1] == f"{messy}: 12 lines, 9 with errors, 3 warnings (lines and audio checked)"


def test_validate_without_audio_checks_lines_only_and_passes_clean_manifests(messy, tmp_path, capsys):
    assert main(["validate", str(messy)]) == 1
    out = capsys.readouterr().out
    assert "short.wav" not in out and "missing.wav" not in out  # the audio is not opened
    assert f"{messy}:8: invalid JSON" in out
    clean = _lines(tmp_path / "clean.jsonl", {"audio_filepath": "a.wav", "duration": 1.0, "text": "fine"})
    assert main(["validate", str(clean), "--audio"]) == 0
    assert capsys.readouterr().out.strip() == f"{clean}: 1 lines, 0 with errors, 0 warnings (lines and audio checked)"
    assert main(["validate", str(tmp_path / "nothere.jsonl")]) == 1
    assert "nothere.jsonl: manifest not found" in capsys.readouterr().out


def test_validate_for_transcription_needs_only_audio(tmp_path, capsys):
    _wav(tmp_path / "a.wav", 1.0)
    m = _lines(tmp_path / "t.jsonl", {"audio_filepath": "a.wav"}, {"audio_filepath": "a.wav"})
    assert main(["validate", str(m), "--for-transcription", "--audio"]) == 0
    assert main(["validate", str(m)]) == 1  # for training: no duration or text
    out = capsys.readouterr().out
    assert f"{m}:1: missing field(s) duration, text" in out


def test_read_manifest_lists_all_bad_lines_in_one_error(messy):
    with pytest.raises(ManifestError) as e:
        read_manifest(messy)
    lines = str(e.value).splitlines()
    assert [ln.split(": ")[0] for ln in lines] == [f"{messy}:{n}" for n in (7, 8, 9, 11, 11, 11, 12)]


def test_many_bad_lines_are_summarised(tmp_path):
    m = _lines(tmp_path / "m.jsonl", *["{"] * 25)
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    lines = str(e.value).splitlines()
    assert len(lines) == 11 and lines[-1] == f"{m}: ... and 15 more errors (asr validate {m} lists them all)"


def test_training_start_up_names_the_manifest_line_of_bad_audio(tmp_path, caplog):
    _wav(tmp_path / "a.wav", 1.0)
    _wav(tmp_path / "b.wav", 1.0)
    m = _lines(
        tmp_path / "train.jsonl",
        {"audio_filepath": "a.wav", "duration": 1.0, "text": "fine"},
        {"audio_filepath": "gone.wav", "duration": 1.0, "text": "lost"},
        {"audio_filepath": "b.wav", "duration": 2.5, "text": "length off"},
    )
    with caplog.at_level(logging.WARNING, logger="asr"):
        kept = load_split(str(m))
    assert [u.text for u in kept] == ["fine", "length off"]  # a wrong duration is a warning, not a lost utterance
    assert f"skipping {m}:2: {tmp_path / 'gone.wav'}: audio file not found" in caplog.messages
    assert any(msg.startswith(f"{m}:3: warning: duration 2.5 s") for msg in caplog.messages)


def test_load_split_reads_several_comma_separated_manifests_as_one(tmp_path, caplog):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _wav(tmp_path / "a" / "x.wav", 1.0)
    _wav(tmp_path / "b" / "x.wav", 1.0)  # same name, other folder: each manifest's relative paths are its own
    a = _lines(tmp_path / "a" / "train.jsonl", {"audio_filepath": "x.wav", "duration": 1.0, "text": "first"})
    b = _lines(
        tmp_path / "b" / "train.jsonl",
        {"audio_filepath": "x.wav", "duration": 1.0, "text": "second", "speaker": "s2"},
        {"audio_filepath": "gone.wav", "duration": 1.0, "text": "lost"},
    )
    with caplog.at_level(logging.WARNING, logger="asr"):
        kept = load_split(f"{a},{b}")
    assert [u.text for u in kept] == ["first", "second"]
    assert [Path(u.audio_filepath).parent.name for u in kept] == ["a", "b"]
    assert kept[1].extra["speaker"] == "s2"
    assert any(msg.startswith(f"skipping {b}:2: ") for msg in caplog.messages)  # names the manifest it came from


def test_evaluate_names_the_manifest_line_of_unreadable_audio(tone_model, tone_corpus, tmp_path, capsys, caplog):
    utts = [json.loads(x) for x in Path(tone_corpus["test"]).read_text().splitlines()[:3]]
    for u in utts:
        u["audio_filepath"] = str(Path(tone_corpus["test"]).parent / u["audio_filepath"])
    utts[1]["audio_filepath"] = str(tmp_path / "gone.wav")
    m = _lines(tmp_path / "test.jsonl", *utts)
    with caplog.at_level(logging.WARNING, logger="asr"):
        assert (
            main(["evaluate", "--model", str(tone_model), "--manifest", str(m), "--out", str(tmp_path / "h.jsonl")])
            == 0
        )
    assert any(msg.startswith(f"skipping {m}:2: ") and "gone.wav" in msg for msg in caplog.messages)


# --- outputs --------------------------------------------------------------------------------------------------------


def test_outputs_refuse_foreign_files_and_replace_their_own(tmp_path):
    own = write_text(tmp_path / "own.txt", "one")
    write_text(own, "two")  # written by the toolkit and unchanged: replaced freely
    assert own.read_text() == "two"
    user = tmp_path / "user.txt"
    user.write_text("precious")
    with pytest.raises(OutputExistsError, match=r"user\.txt: already exists and was not written by asr .*--overwrite"):
        write_text(user, "clobbered")
    assert user.read_text() == "precious"
    own.write_text("edited by hand")  # ours, but changed since: no longer ours to replace
    with pytest.raises(OutputExistsError):
        check_output(own)
    with allow_overwrite():
        write_text(user, "replaced on request")
    assert user.read_text() == "replaced on request"
    with pytest.raises(OutputExistsError, match="is a folder"):
        check_output(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER, "own.txt", "user.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "model.bin", "good old contents")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half of the new")
            raise RuntimeError("crash in the middle")
    assert target.read_text() == "good old contents"

    def disk_full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"model\.bin: cannot write it \(no space left on the device\); nothing"):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            disk_full()
    assert target.read_text() == "good old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER, "model.bin"]


def test_atomic_path_keeps_the_suffix_for_libraries_that_go_by_it(tmp_path):
    with atomic_path(tmp_path / "x.flac") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".flac" and tmp.name.startswith(".x.flac.")
        sf.write(str(tmp), np.zeros(1600, dtype=np.float32), 16000)
    assert sf.info(str(tmp_path / "x.flac")).format == "FLAC"


def test_commands_refuse_to_clobber_unrelated_files(tone_model, tone_corpus, tmp_path, capsys):
    test = str(tone_corpus["test"])
    hyps = tmp_path / "notes.jsonl"
    hyps.write_text("my notes\n")
    evaluate = ["evaluate", "--model", str(tone_model), "--manifest", test, "--beam-size", "1", "--out", str(hyps)]
    assert main(evaluate) == 2
    assert "notes.jsonl: already exists and was not written by asr" in capsys.readouterr().err
    assert hyps.read_text() == "my notes\n"
    assert main([*evaluate, "--overwrite"]) == 0
    assert main(evaluate) == 0  # now it is the toolkit's own file: a rerun replaces it
    assert len(hyps.read_text().splitlines()) == 24

    out_dir = tmp_path / "texts"
    out_dir.mkdir()
    (out_dir / "test_0000.txt").write_text("mine")
    wavs = [str(Path(test).parent / "wavs" / f"test_{i:04d}.wav") for i in range(2)]
    assert main(["transcribe", "--model", str(tone_model), "--out-dir", str(out_dir), *wavs]) == 2
    assert sorted(p.name for p in out_dir.iterdir()) == ["test_0000.txt"]  # refused before decoding anything
    assert main(["transcribe", "--model", str(tone_model), "--out-dir", str(out_dir), "--overwrite", *wavs]) == 0
    assert (out_dir / "test_0001.txt").is_file() and (out_dir / "test_0000.txt").read_text() != "mine"

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "results.md").write_text("my report")
    assert (
        main(["benchmark", "--models", str(tone_model), "--sets", test, "--out", str(bench), "--bootstrap", "10"]) == 2
    )
    assert "results.md" in capsys.readouterr().err and (bench / "results.md").read_text() == "my report"

    lm = tmp_path / "lm.pt"
    lm.write_bytes(b"not mine to lose")
    assert main(["train-lm", "--model", str(tone_model), "--manifest", test, "--out", str(lm), "--epochs", "1"]) == 2
    assert lm.read_bytes() == b"not mine to lose"

    prep = tmp_path / "prep"
    prep.mkdir()
    (prep / "train.jsonl").write_text("user data\n")
    audio = tmp_path / "corpus"
    audio.mkdir()
    _wav(audio / "one.wav", 0.5)
    (audio / "one.txt").write_text("one")
    assert main(["prepare", "folder", "--data-dir", str(audio), "--out", str(prep), "--split", "train"]) == 2
    assert (prep / "train.jsonl").read_text() == "user data\n"
    assert (
        main(["prepare", "folder", "--data-dir", str(audio), "--out", str(prep), "--split", "train", "--overwrite"])
        == 0
    )
    assert read_manifest(prep / "train.jsonl")[0].text == "one"
    assert not list(tmp_path.rglob("*.tmp*"))  # no temporary file left anywhere


def test_validate_result_is_also_a_library_call(messy):
    result = validate_manifest(messy)
    assert result.lines == 12 and result.bad_lines == 5  # lines 7, 8, 9, 11, 12: the audio is not opened
    assert all(str(p).startswith(f"{messy}:") for p in result.problems)
