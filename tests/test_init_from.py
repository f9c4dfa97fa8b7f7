"""asr train --init-from: fine-tuning starts from a model file's weights and vocabulary; a model of other sizes is
refused naming the file and the size."""

from __future__ import annotations

import pytest
import torch
from conftest import write_tone_config

from asr.cli import main
from asr.recognizer import load_model


@pytest.mark.slow
def test_init_from_starts_at_the_source_weights(tone_model, tone_corpus, tmp_path):
    out = tmp_path / "finetune"
    args = ["train", "--config", str(write_tone_config(tmp_path, tone_corpus)), "--init-from", str(tone_model)]
    # A learning rate of ~0: what the run ends with is what it started from.
    assert main([*args, f"train.out_dir={out}", "train.max_epochs=1", "train.peak_lr=1e-12"]) == 0
    src, tuned = load_model(tone_model), load_model(out / "model.pt")
    assert tuned.tokenizer.tokens == src.tokenizer.tokens
    theirs = src.network.state_dict()
    for name, w in tuned.network.state_dict().items():
        assert torch.allclose(w, theirs[name], atol=1e-6), name
    # and it transcribes as the source does (CMVN is recomputed on the same data here: the same statistics)
    files = [str(p) for p in sorted(tone_corpus["test"].parent.rglob("*.wav"))[:6]]
    assert files
    assert [t.text for t in tuned.transcribe(files)] == [t.text for t in src.transcribe(files)]


def test_init_from_refuses_other_sizes(tone_model, tone_corpus, tmp_path, capsys):
    config = str(write_tone_config(tmp_path, tone_corpus))
    args = ["train", "--config", config, "--init-from", str(tone_model), f"train.out_dir={tmp_path / 'x'}"]
    assert main([*args, "model.d_model=32"]) != 0
    err = capsys.readouterr().err
    assert str(tone_model) in err and "model.d_model is 64" in err
    assert main(["train", "--config", config, "--init-from", str(tmp_path / "none.pt")]) != 0
    assert "none.pt: model file not found" in capsys.readouterr().err
