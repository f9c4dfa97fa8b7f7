"""Shared fixtures: everything is generated here, nothing is downloaded.

`tone_corpus` is a toy speech-like task: each "word" is a letter a-e spoken as a 150 ms tone of its own pitch (with
a harmonic and a little noise), words separated by short pauses. A model that learns it must segment the audio and
emit the right letter sequence with spaces: the whole pipeline, in seconds of CPU.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from asr.audio import write_audio
from asr.data.manifest import Utterance, write_manifest

SR = 16000
TONES = {"a": 300.0, "b": 520.0, "c": 800.0, "d": 1250.0, "e": 1900.0}


def tone_utterance(words: list[str], rng: random.Random) -> np.ndarray:
    parts = [np.zeros(int(rng.uniform(0.05, 0.15) * SR))]
    for w in words:
        n = int(rng.uniform(0.13, 0.17) * SR)
        t = np.arange(n) / SR
        f = TONES[w] * rng.uniform(0.97, 1.03)
        env = np.sin(np.pi * np.arange(n) / n) ** 0.5
        parts.append(0.3 * env * (np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t)))
        parts.append(np.zeros(int(rng.uniform(0.06, 0.12) * SR)))
    wav = np.concatenate(parts)
    return (wav + 0.003 * np.random.default_rng(rng.getrandbits(32)).standard_normal(wav.size)).astype(np.float32)


def make_tone_corpus(root: Path, n_train: int = 160, n_dev: int = 24, n_test: int = 24, seed: int = 0) -> dict:
    rng = random.Random(seed)
    out = {}
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        utts = []
        for i in range(n):
            words = [rng.choice(sorted(TONES)) for _ in range(rng.randint(1, 4))]
            wav = tone_utterance(words, rng)
            path = root / "wavs" / f"{split}_{i:04d}.wav"
            write_audio(path, wav, SR)
            utts.append(Utterance(str(path), wav.size / SR, " ".join(words), {"speaker": "tone"}))
        out[split] = root / f"{split}.jsonl"
        write_manifest(out[split], utts)
    return out


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory) -> dict:
    return make_tone_corpus(tmp_path_factory.mktemp("tones"), n_train=400)


TINY_OVERRIDES = [
    "model.d_model=64",
    "model.n_heads=4",
    "model.d_ff=128",
    "model.n_encoder_layers=2",
    "model.n_decoder_layers=2",
    "model.conv_channels=16",
    "model.dropout=0.0",
    "features.n_mels=40",
    "specaug.enabled=false",
    "train.warmup_steps=50",
    "loss.label_smoothing=0.0",
    "train.progress_bar=false",
    "data.max_frames_per_batch=1500",
    "decode.beam_size=3",
    "train.peak_lr=2e-3",
]


@pytest.fixture(scope="session")
def tone_model(tone_corpus, tmp_path_factory) -> Path:
    """A tiny model trained through the command line on the tone task (shared by the tests that need one)."""
    from asr.cli import main

    out = tmp_path_factory.mktemp("tone_exp")
    args = [
        "train",
        "--config",
        str(write_tone_config(out, tone_corpus)),
        f"train.out_dir={out}",
        "train.max_epochs=15",
    ]
    assert main(args) == 0
    return out / "model.pt"


def tone_config(corpus: dict, out_dir: Path, *overrides: str):
    """The tiny tone-task Config (TINY_OVERRIDES, the corpus's train/dev manifests, out_dir) plus `overrides`."""
    from asr.config import load_config

    data = [f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}", f"train.out_dir={out_dir}"]
    return load_config(None, TINY_OVERRIDES + data + list(overrides))


def write_tone_config(folder: Path, corpus: dict) -> Path:
    """A recipe YAML for the tone task: TINY_OVERRIDES as nested sections, plus the manifests."""
    import yaml

    data: dict = {"data": {"train_manifest": str(corpus["train"]), "dev_manifest": str(corpus["dev"])}}
    for item in TINY_OVERRIDES:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        data.setdefault(section, {})[name] = yaml.safe_load(value)
    path = folder / "conf.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def tone_nat_model(tone_corpus, tmp_path_factory) -> Path:
    """The tiny tone model with a trained non-autoregressive head (for nat-length, nat-max, mask-ctc)."""
    from asr.training import train

    out = tmp_path_factory.mktemp("tone_nat")
    cfg = tone_config(
        tone_corpus,
        out,
        "train.max_epochs=20",
        "model.nat_decoder_layers=2",
        "loss.nat_weight=1.0",
        "loss.nat_length_weight=0.3",
        "train.attention_plots=0",
    )
    return train(cfg)
