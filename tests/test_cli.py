"""The command line a user runs: train (through the `tone_model` fixture), transcribe, evaluate, and bad input."""

import json

import numpy as np
import soundfile as sf

from asr.cli import main
from asr.data.manifest import read_manifest


def test_transcribe_prints_one_line_per_file(tone_model, tone_corpus, capsys, tmp_path):
    utts = read_manifest(tone_corpus["test"])[:3]
    stereo = tmp_path / "stereo_44k.flac"  # another rate, format and channel count
    x, sr = sf.read(utts[0].audio_filepath)
    import torch

    from asr.audio import resample

    up = resample(torch.from_numpy(x).float(), sr, 44100).numpy()
    sf.write(stereo, np.stack([up, up], 1), 44100)
    paths = [u.audio_filepath for u in utts] + [str(stereo)]
    assert main(["transcribe", "--model", str(tone_model), "--beam-size", "3", *paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == paths
    texts = [line.split("\t")[1] for line in lines]
    assert texts[-1] == texts[0]  # same speech, different container: same transcript


def test_transcribe_reports_bad_files_and_goes_on(tone_model, tone_corpus, capsys, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all")
    good = read_manifest(tone_corpus["test"])[0].audio_filepath
    assert main(["transcribe", "--model", str(tone_model), str(bad), good]) == 1
    captured = capsys.readouterr()
    assert "broken.wav" in captured.err
    assert captured.out.startswith(good + "\t")


def test_evaluate_prints_rates_and_writes_hypotheses(tone_model, tone_corpus, capsys, tmp_path):
    out = tmp_path / "hyps.jsonl"
    code = main(
        [
            "evaluate",
            "--model",
            str(tone_model),
            "--manifest",
            str(tone_corpus["test"]),
            "--beam-size",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "WER" in printed and "CER" in printed and "substitutions" in printed and "insertions" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(read_manifest(tone_corpus["test"]))
    assert {"audio_filepath", "ref", "hyp", "word_errors"} <= set(rows[0])
    # Without --out, hypotheses go next to the model.
    assert (
        main(["evaluate", "--model", str(tone_model), "--manifest", str(tone_corpus["test"]), "--beam-size", "1"]) == 0
    )
    assert (tone_model.parent / "decode" / "test_beam1.jsonl").is_file()  # named by the decoding options


def test_evaluate_breaks_errors_down_by_word_and_speaker(tone_model, tone_corpus, capsys, tmp_path):
    utts = read_manifest(tone_corpus["test"])[:3]
    entries = [  # two wrong references, so that there are errors to break down
        {"audio_filepath": utts[0].audio_filepath, "duration": utts[0].duration, "text": "zz", "speaker": "ann"},
        {"audio_filepath": utts[1].audio_filepath, "duration": utts[1].duration, "text": "zz", "speaker": "bob"},
        {
            "audio_filepath": utts[2].audio_filepath,
            "duration": utts[2].duration,
            "text": utts[2].text,
            "speaker": "bob",
        },
    ]
    manifest = tmp_path / "wrong.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    out = tmp_path / "hyps.jsonl"
    args = ["evaluate", "--model", str(tone_model), "--manifest", str(manifest), "--decoder", "greedy"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["speaker"] for r in rows] == ["ann", "bob", "bob"]
    assert "most frequent errors: " in printed and "zz -> " in printed
    ann, bob = rows[0], rows[1:]
    bob_errors, bob_words = sum(r["word_errors"] for r in bob), sum(r["ref_words"] for r in bob)
    expected = (
        f"WER by speaker: ann {100 * ann['word_errors'] / ann['ref_words']:.2f}% of {ann['ref_words']}, "
        f"bob {100 * bob_errors / bob_words:.2f}% of {bob_words}"
    )
    assert expected in printed


def test_bad_inputs_give_clear_errors(tone_model, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope.pt"), "--manifest", "x.jsonl"]) == 2
    assert "nope.pt" in capsys.readouterr().err
    bad_manifest = tmp_path / "bad.jsonl"
    bad_manifest.write_text('{"audio_filepath": "a.wav", "duration": 1, "text": "a"}\n{"oops"\n')
    assert main(["evaluate", "--model", str(tone_model), "--manifest", str(bad_manifest)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    not_a_model = tmp_path / "model.pt"
    not_a_model.write_bytes(b"\x00" * 64)
    assert main(["transcribe", "--model", str(not_a_model), "a.wav"]) == 2
    assert "model.pt" in capsys.readouterr().err
    conf = tmp_path / "conf.yaml"
    conf.write_text("model:\n  d_model: 64\n")
    assert main(["train", "--config", str(conf), "model.n_layerz=3"]) == 2
    assert "model.n_layerz" in capsys.readouterr().err
