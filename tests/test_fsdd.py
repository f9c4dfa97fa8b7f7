import logging

import numpy as np
import pytest
import soundfile as sf

from asr.data.fsdd import DIGITS, FSDDConfig, _split_of, prepare_fsdd, trim_silence
from asr.data.manifest import read_manifest


@pytest.fixture
def fake_fsdd(tmp_path):
    """FSDD's exact layout (recordings/{digit}_{speaker}_{index}.wav, 8 kHz mono) with short synthetic tones."""
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for spk in ("alice", "bob", "carol"):
        for d in range(10):
            for i in range(12):
                t = np.arange(int(8000 * rng.uniform(0.2, 0.4))) / 8000
                sf.write(
                    rec / f"{d}_{spk}_{i}.wav",
                    (0.3 * np.sin(2 * np.pi * (200 + 50 * d) * t)).astype(np.float32),
                    8000,
                    subtype="PCM_16",
                )
    (rec / "3_bob_11.wav").write_bytes(b"RIFF broken")  # a corrupt file: reported and skipped
    (rec / "README.txt").write_text("not a recording")
    return tmp_path / "fsdd"


def test_prepare_fsdd(fake_fsdd, tmp_path, caplog):
    cfg = FSDDConfig(n_train=30, n_dev=6, n_test=8, dev_indices=(10, 11))
    with caplog.at_level(logging.WARNING, logger="asr"):
        out = prepare_fsdd(fake_fsdd, tmp_path / "out", cfg)
    assert "3_bob_11.wav" in caplog.text
    for split, n in (("train", 30), ("dev", 6), ("test", 8)):
        utts = read_manifest(out[split])
        assert len(utts) == n
        for u in utts:
            words = u.text.split()
            assert 1 <= len(words) <= 7 and set(words) <= set(DIGITS)
            info = sf.info(u.audio_filepath)
            assert info.samplerate == 16000 and info.channels == 1
            assert abs(info.frames / 16000 - u.duration) < 1e-3
            assert u.extra["speaker"] in {"alice", "bob", "carol"}
    # Cached: a second call with the same settings rewrites nothing.
    mtime = out["train"].stat().st_mtime_ns
    assert prepare_fsdd(fake_fsdd, tmp_path / "out", cfg) == out
    assert out["train"].stat().st_mtime_ns == mtime


def test_conventional_split_and_held_out_speakers(fake_fsdd, tmp_path):
    cfg = FSDDConfig(dev_indices=(45, 49))
    assert [_split_of(i, "x", cfg) for i in (0, 4, 5, 44, 45, 49)] == ["test", "test", "train", "train", "dev", "dev"]
    held = FSDDConfig(n_train=10, n_dev=2, n_test=5, dev_indices=(10, 11), held_out_speakers=["carol"])
    out = prepare_fsdd(fake_fsdd, tmp_path / "held", held)
    assert {u.extra["speaker"] for u in read_manifest(out["test"])} == {"carol"}
    assert _split_of(2, "alice", held) == "train" and _split_of(30, "carol", held) == "test"
    assert "carol" not in {u.extra["speaker"] for u in read_manifest(out["train"])}
    assert "carol" not in {u.extra["speaker"] for u in read_manifest(out["dev"])}
    with pytest.raises(ValueError, match="dave"):
        prepare_fsdd(fake_fsdd, tmp_path / "x", FSDDConfig(held_out_speakers=["dave"]))


def test_trim_silence_keeps_the_voiced_span():
    sr = 16000
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(int(0.3 * sr)) / sr).astype(np.float32)
    wav = np.concatenate([np.full(int(0.2 * sr), 1e-4, np.float32), tone, np.full(int(0.25 * sr), 1e-4, np.float32)])
    out = trim_silence(wav, sr, 35.0)
    assert 0.3 <= out.size / sr <= 0.3 + 0.05  # the tone and at most 20 ms (+ a frame) of margin each side
    assert np.abs(out).max() == np.abs(wav).max()


def test_connected_joins_change_only_the_training_split(fake_fsdd, tmp_path):
    base = dict(n_train=40, n_dev=6, n_test=8, dev_indices=(10, 11))
    apart = prepare_fsdd(fake_fsdd, tmp_path / "apart", FSDDConfig(**base))
    joined = prepare_fsdd(fake_fsdd, tmp_path / "joined", FSDDConfig(**base, connected=1.0))
    for split in ("dev", "test"):  # the same utterances, sample for sample
        a, b = read_manifest(apart[split]), read_manifest(joined[split])
        assert [u.text for u in a] == [u.text for u in b]
        for x, y in zip(a, b):
            assert np.array_equal(sf.read(x.audio_filepath)[0], sf.read(y.audio_filepath)[0])

    def seconds_per_digit(path):
        utts = read_manifest(path)
        return sum(u.duration for u in utts) / sum(len(u.text.split()) for u in utts)

    # Gaps of -40..40 ms instead of 50..300 ms: the connected training utterances are shorter per digit.
    assert seconds_per_digit(joined["train"]) < seconds_per_digit(apart["train"]) - 0.08
    with pytest.raises(ValueError, match="connected must be a share"):
        prepare_fsdd(fake_fsdd, tmp_path / "bad", FSDDConfig(**base, connected=1.5))


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no FSDD recordings"):
        prepare_fsdd(tmp_path, tmp_path / "out")
