"""The pipeline learns: a tiny model trained for a few epochs on the tone task transcribes held-out audio."""

import csv

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.benchmark.run import evaluate
from asr.data.manifest import read_manifest
from asr.recognizer import MODEL_FORMAT, load_model
from asr.training import noam_lambda, teacher_forcing_targets


@pytest.mark.slow
def test_tiny_model_learns_the_tone_task(tone_model, tone_corpus):
    rec = load_model(tone_model)
    for beam in (1, 3):
        result = evaluate(rec, tone_corpus["test"], decoder="beam", beam_size=beam)
        assert result.rates.wer < 5.0, f"beam {beam}: {result.rates.summary()}"
    # The training loop logged falling loss and the validation WER each epoch.
    log_dir = next((tone_model.parent / "logs").glob("version_*"))
    rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
    wers = [float(r["val_wer"]) for r in rows if r.get("val_wer")]
    losses = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    assert len(wers) >= 15 and wers[-1] < wers[0]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert (tone_model.parent / "checkpoints" / "last.ckpt").is_file()


def test_model_file_is_self_contained_and_safe(tone_model, tone_corpus):
    blob = torch.load(tone_model, weights_only=True)  # no pickled code needed
    assert blob["format"] == MODEL_FORMAT
    assert blob["config"]["features"]["n_mels"] == 40 and blob["tokenizer"]["tokens"][3] == "<eos>"
    assert "cmvn.mean" in blob["state_dict"] and "cmvn.std" in blob["state_dict"]
    assert not torch.allclose(blob["state_dict"]["cmvn.std"], torch.ones(40))  # real statistics were stored

    rec = load_model(tone_model)
    utts = read_manifest(tone_corpus["test"])[:3]
    from_files = [t.text for t in rec.transcribe([u.audio_filepath for u in utts], decoder="greedy")]
    # The same audio as int16 stereo arrays at 8 kHz goes through downmix + resampling and gives the same text.
    arrays = []
    for u in utts:
        x, sr = sf.read(u.audio_filepath, dtype="int16")
        arrays.append(np.stack([x, x], axis=1))
    from_arrays = [t.text for t in rec.transcribe(arrays, sample_rate=sr, decoder="greedy")]
    assert from_files == from_arrays
    assert sum(f == u.text for f, u in zip(from_files, utts)) >= 2


def test_teacher_forcing_targets():
    tokens = torch.tensor([[7, 8, 9], [7, 1, 1]])  # second row padded (pad = 1)
    ys_in, ys_out = teacher_forcing_targets(tokens, torch.tensor([3, 1]), sos=2, eos=3, pad=1)
    assert ys_in.tolist() == [[2, 7, 8, 9], [2, 7, 1, 1]]
    assert ys_out.tolist() == [[7, 8, 9, 3], [7, 3, 1, 1]]


def test_noam_schedule():
    f = noam_lambda(100)
    assert f(1) == pytest.approx(0.01) and f(100) == pytest.approx(1.0)
    assert f(400) == pytest.approx(0.5) and f(50) == pytest.approx(0.5)
