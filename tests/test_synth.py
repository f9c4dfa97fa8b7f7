"""asr.data.synth: the eSpeak NG corpus generator (skipped when the optional espeakng-loader is not installed).

A tiny corpus (20/5/5 utterances) is generated into a temporary folder; each generation takes about a second.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from asr.data import synth  # noqa: E402
from asr.data.manifest import read_manifest  # noqa: E402
from asr.text import normalize_text  # noqa: E402

TINY = dict(n_train=20, n_dev=5, n_test=5, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return synth.prepare_synth(tmp_path_factory.mktemp("synth"), seed=0, **TINY)


def _wav_bytes(manifests: dict[str, Path]) -> list[bytes]:
    return [Path(u.audio_filepath).read_bytes() for s in synth.SPLITS for u in read_manifest(manifests[s])]


def test_manifests_and_audio(corpus):
    utts = {s: read_manifest(corpus[s]) for s in synth.SPLITS}
    assert [len(utts[s]) for s in synth.SPLITS] == [20, 5, 5]
    for split, items in utts.items():
        for u in items:
            assert Path(u.audio_filepath).parent.name == split
            assert u.text and normalize_text(u.text) == u.text and re.fullmatch(r"[a-z' ]+", u.text)
            assert 1 <= len(u.text.split()) <= 10
            assert set(u.extra) >= {"speaker", "rate", "pitch"} and "+" in u.extra["speaker"]
            assert 130 <= u.extra["rate"] <= 200 and 30 <= u.extra["pitch"] <= 70
            wav, sr = sf.read(u.audio_filepath, dtype="float32")
            info = sf.info(u.audio_filepath)
            assert sr == 16000 and wav.ndim == 1 and info.channels == 1 and info.subtype == "PCM_16"
            assert u.duration == pytest.approx(wav.size / sr, abs=1e-3)
            assert 0.3 < u.duration < 15
            assert np.sqrt(np.mean(wav**2)) > 3e-3  # speech, not silence
            assert np.abs(wav).max() <= 1.0
            assert np.count_nonzero(wav[:400]) > 300  # the leading pause carries a noise floor, not digital zero
    train_speakers = {u.extra["speaker"] for u in utts["train"]}
    for split in ("dev", "test"):
        assert not {u.extra["speaker"] for u in utts[split]} & train_speakers


def test_same_seed_same_bytes_other_seed_other_data(corpus, tmp_path):
    again = synth.prepare_synth(tmp_path / "again", seed=0, **TINY)
    assert _wav_bytes(again) == _wav_bytes(corpus)
    assert all(again[s].read_text() == corpus[s].read_text() for s in synth.SPLITS)
    other = synth.prepare_synth(tmp_path / "other", seed=1, **TINY)
    assert [u.text for u in read_manifest(other["train"])] != [u.text for u in read_manifest(corpus["train"])]
    assert not set(_wav_bytes(other)) & set(_wav_bytes(corpus))


def test_cache_marker(tmp_path):
    out = tmp_path / "c"
    manifests = synth.prepare_synth(out, seed=3, **TINY)
    files = sorted((out / "wavs").rglob("*.wav")) + list(manifests.values())
    stamps = [f.stat().st_mtime_ns for f in files]
    assert synth.prepare_synth(out, seed=3, **TINY) == manifests
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing rewritten

    synth.prepare_synth(out, seed=3, **{**TINY, "n_train": 12})  # changed parameters: rebuilt
    assert len(read_manifest(manifests["train"])) == 12
    assert len(list((out / "wavs" / "train").glob("*.wav"))) == 12  # the old, larger run's files are gone
    assert manifests["dev"].stat().st_mtime_ns != stamps[files.index(manifests["dev"])]


def test_synthesize_and_bad_voice():
    es = synth.get_espeak()
    wav, sr = es.synthesize("call mom", "en-us+f2", rate=160, seed=5)
    assert sr == 22050 and wav.dtype == np.float32 and 0.3 < wav.size / sr < 3 and np.abs(wav).max() > 0.05
    es.synthesize("stop", "en-gb-scotland+m1")  # history must not matter: a fresh instance per call
    assert np.array_equal(es.synthesize("call mom", "en-us+f2", rate=160, seed=5)[0], wav)
    with pytest.raises(synth.VoiceError, match="unknown eSpeak voice variant 'nosuchvariant'"):
        es.synthesize("hello", "en-us+nosuchvariant")  # eSpeak itself would silently ignore the variant
    with pytest.raises(synth.VoiceError, match="unknown eSpeak voice 'xx-nosuchlanguage'"):
        es.synthesize("hello", "xx-nosuchlanguage")


def test_voice_split_and_voices_exist():
    split = synth.voice_split()
    sets = {s: set(v) for s, v in split.items()}
    assert not sets["train"] & sets["dev"] and not sets["train"] & sets["test"] and not sets["dev"] & sets["test"]
    total = len(synth.ACCENTS) * len(synth.VARIANTS)
    assert sum(map(len, sets.values())) == total and 0.1 < len(sets["test"]) / total < 0.2
    train_accents = {v.split("+")[0] for v in sets["train"]}
    train_variants = {v.split("+")[1] for v in sets["train"]}
    assert train_accents == set(synth.ACCENTS)
    for s, held in synth.HELD_OUT_VARIANTS.items():
        assert not set(held) & train_variants  # whole variants never heard in training
    es = synth.get_espeak()
    assert set(synth.VARIANTS) <= es.variants
    for accent in synth.ACCENTS:
        es.phonemes("one", accent)  # raises VoiceError if this eSpeak lacks the accent


def test_grammar():
    a = [synth.make_sentence(random.Random(7)) for _ in range(3)]
    assert a == [synth.make_sentence(random.Random(7)) for _ in range(3)]
    rng = random.Random(0)
    for _ in range(2000):
        text = synth.make_sentence(rng)
        norm = normalize_text(text)
        assert norm == text.rstrip("?") and 1 <= len(norm.split()) <= 10
    assert 150 <= len(synth.vocabulary()) <= 250
    assert synth.number_words(0) == "zero" and synth.number_words(42) == "forty two"
    assert synth.number_words(90) == "ninety" and synth.number_words(17) == "seventeen"


def test_missing_espeak_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes `import espeakng_loader` fail
    with pytest.raises(ImportError, match=r"speech-transformer-asr\[corpus\]"):
        synth.ESpeak()


def test_espeak_only_imported_by_synth_and_lazily():
    root = Path(synth.__file__).resolve().parents[1]
    users = [p for p in root.rglob("*.py") if "espeakng_loader" in p.read_text(encoding="utf-8")]
    assert users == [Path(synth.__file__).resolve()]  # GPL-3.0: only the corpus generator may use it
    code = "import sys, asr.data.synth; assert 'espeakng_loader' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root.parent)


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        synth.main(["--help"])
    assert e.value.code == 0 and "--out" in capsys.readouterr().out
    assert synth.main(["--list-voices"]) == 0
    assert "en-us+" in capsys.readouterr().out
    assert (
        synth.main(["--out", str(tmp_path / "cli"), "--n-train", "3", "--n-dev", "1", "--n-test", "1", "--no-progress"])
        == 0
    )
    assert len(read_manifest(tmp_path / "cli" / "train.jsonl")) == 3


def test_tts_augmentation_speaks_the_manifest_transcripts(tmp_path):
    from asr.data.manifest import Utterance, write_manifest

    audio = tmp_path / "real.wav"
    sf.write(audio, np.zeros(8000, np.float32), 16000)
    texts = ["a b c nine", "rubout"]
    write_manifest(tmp_path / "train.jsonl", [Utterance(str(audio), 0.5, t, {"speaker": "real1"}) for t in texts])
    out = synth.prepare_tts(tmp_path / "train.jsonl", tmp_path / "tts", copies=2, spell_letters=True, progress=False)
    fake = read_manifest(out["train"])
    assert [u.text for u in fake] == [texts[0], texts[0], texts[1], texts[1]]  # transcripts kept as written
    assert all(u.extra["speaker"].startswith("tts:") for u in fake)
    for u in fake:
        wav, sr = sf.read(u.audio_filepath)
        assert sr == 16000 and 0.3 < wav.size / sr < 5 and np.abs(wav).max() > 0.01
    mixed = read_manifest(out["mixed"])
    assert [u.text for u in mixed] == texts + [u.text for u in fake]
    assert mixed[0].audio_filepath == str(audio.resolve())
    # eSpeak says the letter's name for a lone "a" only when it is respelled
    assert synth.speakable("a b c", spell_letters=True) == "eigh b c"
    assert synth.speakable("a cat", spell_letters=False) == "a cat"
    plans = synth.plan_texts(texts, copies=2, seed=0, spell_letters=True)
    assert plans[0].spoken == "eigh b c nine" and plans[0].text == "a b c nine"
    assert len({p.voice for p in plans}) > 1
    assert (
        synth.prepare_tts(tmp_path / "train.jsonl", tmp_path / "tts", copies=2, spell_letters=True, progress=False)
        == out
    )  # cached
    with pytest.raises(ValueError, match="copies"):
        synth.prepare_tts(tmp_path / "train.jsonl", tmp_path / "tts2", copies=0)


def test_cli_tts_without_espeak_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from asr.cli import main
    from asr.data.manifest import Utterance, write_manifest

    write_manifest(tmp_path / "train.jsonl", [Utterance(str(tmp_path / "a.wav"), 1.0, "a b c")])
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    monkeypatch.setattr(synth, "_DEFAULT", None)
    rc = main(["prepare", "tts", "--texts", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "tts")])
    assert rc == 2 and "espeakng-loader" in capsys.readouterr().err
    rc = main(["prepare", "tts", "--out", str(tmp_path / "tts")])
    assert rc == 2 and "--texts" in capsys.readouterr().err
