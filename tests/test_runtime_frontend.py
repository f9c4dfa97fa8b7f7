"""asr.runtime's numpy front end (features, audio, segment) against the torch modules it ports, and its imports.

Feature tolerances: the torch front end computes in float32, the numpy one in float64; on speech-like signals the two
agree to ~1e-5. Spectra with a huge dynamic range (a loud pure tone over faint noise) leave torch's float32 FFT noise
in the quiet mel bands, so those are checked against the torch front end run in float64 (buffers included).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from asr import audio as torch_audio
from asr import segment as torch_segment
from asr.config import FeatureConfig
from asr.features import dct_matrix, kaldi_mel_matrix, kaldi_window, make_frontend
from asr.runtime import audio as rt_audio
from asr.runtime import features as rt_features

SR = 16000
CONFIGS = {
    "fbank": FeatureConfig(),
    "mfcc": FeatureConfig(kind="mfcc"),
    "hamming40": FeatureConfig(n_mels=40, window="hamming", n_fft=1024, low_freq=0.0, high_freq=-400.0),
    "hann_nodc": FeatureConfig(window="hann", remove_dc=False, preemphasis=0.5),
}


def speech_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Noise with speech's falling spectrum: an AR(1) filter, x[t] = 0.9 x[t-1] + e[t] (via a long FIR)."""
    e = rng.standard_normal(n + 200)
    x = np.convolve(e, 0.9 ** np.arange(200), mode="full")[200 : n + 200]
    return (0.05 * x).astype(np.float32)


def tone(rng: np.random.Generator, n: int, freq: float, noise: float) -> np.ndarray:
    t = np.arange(n) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(n)).astype(np.float32)


def torch_features(
    cfg: FeatureConfig, wavs: list[np.ndarray], dtype=torch.float32, warp: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    frontend = make_frontend(cfg).eval().to(dtype)
    if dtype == torch.float64:  # rebuild the float32-rounded buffers in float64 too
        fbank = frontend.fbank if cfg.kind == "mfcc" else frontend
        fbank.window = kaldi_window(cfg.window, fbank.win)
        mel = kaldi_mel_matrix(cfg.n_mels, cfg.n_fft, cfg.sample_rate, cfg.low_freq, cfg.high_freq)
        fbank.mel_matrix = mel[fbank.bin_lo : fbank.bin_hi]
        if cfg.kind == "mfcc":
            frontend.dct = dct_matrix(cfg.n_mels, cfg.n_mfcc)
    batch = torch.zeros(len(wavs), max(w.size for w in wavs), dtype=dtype)
    for i, w in enumerate(wavs):
        batch[i, : w.size] = torch.from_numpy(w)
    with torch.no_grad():
        factors = None if warp is None else torch.full((len(wavs),), warp)
        feats, counts = frontend(batch, torch.tensor([w.size for w in wavs]), factors)
    return feats.numpy(), counts.numpy()


def test_defaults_match_feature_config():
    assert rt_features.DEFAULTS == dataclasses.asdict(FeatureConfig())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_features_match_torch(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(0)
    # Shorter than a window, exactly one, one and a bit, a second; plus tones over that noise: a padded batch.
    wavs = [speech_like(rng, n) for n in (300, 400, 561, SR)]
    wavs += [
        tone(rng, 8000, 440.0, 0.0) + speech_like(rng, 8000),
        tone(rng, 12345, 1500.0, 0.0) + speech_like(rng, 12345),
    ]
    feats, lengths = rt_features.compute_batch(wavs, dataclasses.asdict(cfg))
    ref, ref_lengths = torch_features(cfg, wavs)
    assert feats.dtype == np.float32 and lengths.dtype == np.int64
    assert feats.shape == ref.shape and feats.shape[2] == cfg.dim
    np.testing.assert_array_equal(lengths, ref_lengths)
    assert lengths[0] == 0 and lengths[1] == 1
    diff = float(np.abs(feats - ref).max())
    print(f"{name}: max |numpy - torch float32| = {diff:.2e}")
    assert diff < 1e-4
    for i, w in enumerate(wavs):  # one at a time gives the same rows; the padding is exactly 0
        one = rt_features.compute_features(w, dataclasses.asdict(cfg))
        np.testing.assert_array_equal(one, feats[i, : lengths[i]])
        assert not feats[i, lengths[i] :].any()


@pytest.mark.parametrize("name", ["fbank", "mfcc", "hamming40"])
@pytest.mark.parametrize("warp", [0.85, 0.92, 1.08, 1.15])
def test_vtln_warps_match_torch(name, warp):
    """Test-time VTLN in the runtime reads the same warped channels as the torch front end."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(2)
    wavs = [speech_like(rng, SR), tone(rng, 9000, 700.0, 0.0) + speech_like(rng, 9000), np.zeros(300, np.float32)]
    feats, lengths = rt_features.compute_batch(wavs, dataclasses.asdict(cfg), warp=warp)
    ref, ref_lengths = torch_features(cfg, wavs, warp=warp)
    np.testing.assert_array_equal(lengths, ref_lengths)
    assert float(np.abs(feats - ref).max()) < 1e-4
    plain, _ = rt_features.compute_batch(wavs, dataclasses.asdict(cfg))
    assert float(np.abs(feats - plain).max()) > 0.1  # the warp did move the channels
    one = rt_features.compute_features(wavs[1], dataclasses.asdict(cfg), warp=1.0)
    np.testing.assert_array_equal(one, plain[1, : lengths[1]])  # warp 1 is no warp


@pytest.mark.parametrize("name", ["fbank", "mfcc", "hamming40"])
def test_pure_tones_match_torch_float64(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(1)
    wavs = [tone(rng, SR, 440.0, 0.0), tone(rng, 7000, 3000.0, 1e-3), np.zeros(2000, np.float32)]
    feats, _ = rt_features.compute_batch(wavs, dataclasses.asdict(cfg))
    ref, _ = torch_features(cfg, wavs, torch.float64)
    diff = float(np.abs(feats - ref).max())
    print(f"{name} tones: max |numpy - torch float64| = {diff:.2e}")
    assert diff < 1e-5


def test_feature_config_errors():
    wav = np.zeros(SR, np.float32)
    for bad, match in [
        (dict(kind="plp"), "unknown feature kind"),
        (dict(window="blackman"), "unknown window"),
        (dict(n_fft=256), "n_fft"),
        (dict(kind="mfcc", n_mfcc=100), "n_mfcc"),
        (dict(low_freq=9000.0), "bad mel range"),
    ]:
        with pytest.raises(ValueError, match=match):
            rt_features.compute_features(wav, {**dataclasses.asdict(FeatureConfig()), **bad})
    feats, lengths = rt_features.compute_batch([np.zeros(100, np.float32)], {})
    assert feats.shape == (1, 0, 80) and lengths.tolist() == [0]


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000])
def test_resample_matches_torchaudio(orig):
    rng = np.random.default_rng(orig)
    x = (0.3 * rng.standard_normal(orig + 123)).astype(np.float32)
    ours = rt_audio.resample(x, orig, SR)
    ref = torchaudio.functional.resample(torch.from_numpy(x), orig, SR).numpy()
    assert ours.shape == ref.shape and ours.dtype == np.float32
    diff = float(np.abs(ours - ref).max())
    print(f"resample {orig} -> {SR}: max diff {diff:.2e}")
    assert diff < 1e-4
    np.testing.assert_allclose(ours, torch_audio.resample(torch.from_numpy(x), orig, SR).numpy(), atol=1e-5)


def test_resample_ratio_limit(tmp_path):
    with pytest.raises(ValueError, match="awkward"):
        rt_audio.resample(np.zeros(10, np.float32), 44101, SR)
    path = tmp_path / "odd.wav"
    sf.write(str(path), np.zeros(4410, np.float32), 44101)
    with pytest.raises(rt_audio.AudioError, match="odd.wav.*awkward"):
        rt_audio.load_audio(path, SR)


def test_load_audio_matches_torch(tmp_path):
    rng = np.random.default_rng(2)
    stereo = (0.3 * rng.standard_normal((SR, 2))).astype(np.float32)
    files = {"stereo16.wav": (stereo, SR, "PCM_16"), "float.wav": (stereo[:, 0], SR, "FLOAT"),
             "narrow.wav": (stereo[:8000, 0], 8000, "PCM_16")}  # fmt: skip
    for name, (data, sr, subtype) in files.items():
        sf.write(str(tmp_path / name), data, sr, subtype=subtype)
    (tmp_path / "an4.raw").write_bytes((stereo[:, 0] * 30000).astype(">i2").tobytes())
    for name in [*files, "an4.raw"]:
        for kwargs in ({}, dict(offset=0.25, duration=0.5)):
            ours = rt_audio.load_audio(tmp_path / name, SR, **kwargs)
            ref = torch_audio.load_audio(tmp_path / name, SR, **kwargs).numpy()
            assert ours.dtype == np.float32 and ours.shape == ref.shape
            np.testing.assert_allclose(ours, ref, atol=1e-5, err_msg=name)
    assert rt_audio.audio_info(tmp_path / "narrow.wav") == torch_audio.audio_info(tmp_path / "narrow.wav")


def test_load_audio_errors_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    nan = tmp_path / "nan.wav"
    sf.write(str(nan), np.array([0.0, np.nan, 0.1], np.float32), SR, subtype="FLOAT")
    for path, match in [(tmp_path / "missing.wav", "not found"), (garbage, "cannot decode"), (nan, "NaN")]:
        with pytest.raises(rt_audio.AudioError, match=match) as ours:
            rt_audio.load_audio(path, SR)
        assert str(path) in str(ours.value)
        with pytest.raises(torch_audio.AudioError) as ref:
            torch_audio.load_audio(path, SR)
        assert str(ours.value) == str(ref.value)


def test_split_on_pauses_takes_numpy_and_torch_alike():
    rng = np.random.default_rng(3)
    parts = []
    for speech, pause in [(1.2, 0.8), (0.05, 0.7), (2.5, 0.3), (0.9, 1.0), (3.0, 0.0)]:
        parts.append(tone(rng, int(speech * SR), 300.0 + 400 * rng.random(), 0.02))
        parts.append((1e-3 * rng.standard_normal(int(pause * SR))).astype(np.float32))
    wav = np.concatenate(parts)
    for max_seconds in (20.0, 1.5):
        ours = torch_segment.split_on_pauses(wav, SR, max_seconds)
        ref = torch_segment.split_on_pauses(torch.from_numpy(wav), SR, max_seconds)
        assert [dataclasses.astuple(s) for s in ours] == [dataclasses.astuple(s) for s in ref]
        assert len(ours) >= 3 and all(s.duration <= max_seconds + 1e-9 for s in ours)
    assert torch_segment.split_on_pauses(np.zeros(0, np.float32), SR) == []


BLOCKER = """
import importlib.abc, sys
BLOCKED = ("torch", "torchaudio", "lightning", "pytorch_lightning", "librosa", "sentencepiece")
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Blocker())
"""


def run_blocked(code: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", BLOCKER + code], cwd=root, capture_output=True, text=True, timeout=60)


def test_runtime_front_end_imports_without_torch(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(str(wav), (0.1 * np.random.default_rng(4).standard_normal(22050)).astype(np.float32), 22050)
    code = f"""
import numpy as np
from asr.runtime.audio import load_audio
from asr.runtime.features import compute_batch
from asr.segment import split_on_pauses
x = load_audio({str(wav)!r}, 16000)
feats, lengths = compute_batch([x, x[:8000]], {{"kind": "mfcc"}})
split_on_pauses(x, 16000)
assert feats.shape == (2, 98, 39), feats.shape
banned = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
assert not banned, banned
print("ok")
"""
    done = run_blocked(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    blocked = run_blocked("import torch")  # the blocker really blocks
    assert blocked.returncode != 0 and "blocked: torch" in blocked.stderr
