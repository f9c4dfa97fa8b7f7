import json

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.audio import AudioError, audio_info, load_audio, prepare_array, resample
from asr.data.manifest import ManifestError, Utterance, read_manifest, write_manifest


def _tone(sr, seconds=0.5, f=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("WAV", "FLOAT")])
def test_formats_downmix_and_resample(tmp_path, fmt, subtype):
    sr = 22050
    mono = _tone(sr)
    stereo = np.stack([mono, mono], axis=1)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, stereo, sr, format=fmt, subtype=subtype)
    wav = load_audio(path, 16000)
    assert wav.dtype == torch.float32 and wav.ndim == 1
    assert abs(wav.numel() - int(0.5 * 16000)) <= 1
    expected = _tone(16000)
    n = min(wav.numel(), expected.size) - 200  # the resampler's edges differ slightly
    tol = 0.05 if subtype == "VORBIS" else 0.01
    assert np.abs(wav.numpy()[200:n] - expected[200:n]).max() < tol


@pytest.mark.parametrize("orig, new", [(14400, 16000), (17600, 16000), (8000, 16000), (44100, 16000), (16000, 8000)])
def test_resample_matches_torchaudio(orig, new):
    import torchaudio

    g = torch.Generator().manual_seed(0)
    for shape in [(12345,), (2, 3, 4001), (orig * 40 + 7,)]:  # 40 s: windows taken in several chunks
        x = torch.randn(shape, generator=g)
        # torchaudio in float64 as the reference: its float32 kernel is itself off by up to 2e-5 at 441:160
        ours, ref = resample(x, orig, new), torchaudio.functional.resample(x.double(), orig, new).float()
        assert ours.dtype == torch.float32 and ours.shape == ref.shape
        assert torch.allclose(ours, ref, atol=2e-6)
    x64 = torch.randn(3000, dtype=torch.float64, generator=g)
    assert resample(x64, orig, new).dtype == torch.float64
    assert torch.allclose(resample(x64, orig, new), torchaudio.functional.resample(x64, orig, new), atol=1e-9)


def test_raw_big_endian_pcm(tmp_path):
    x = (_tone(16000) * 32767).astype(">i2")
    path = tmp_path / "an4.raw"
    path.write_bytes(x.tobytes())
    wav = load_audio(path, 16000)
    assert np.allclose(wav.numpy(), x.astype(np.float32) / 32768, atol=1e-6)
    assert audio_info(path) == (x.size, 16000)


def test_int_arrays_scale_like_files():
    x = (_tone(8000) * 32767).astype(np.int16)
    wav = prepare_array(x, 8000, 16000)
    assert wav.abs().max() <= 0.51 and wav.numel() == 2 * x.size


def test_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(AudioError, match="corrupt.wav"):
        load_audio(bad)
    with pytest.raises(AudioError, match="corrupt.wav"):
        audio_info(bad)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav"):
        load_audio(empty)


def test_manifest_round_trip_with_relative_paths(tmp_path):
    (tmp_path / "wavs").mkdir()
    sf.write(tmp_path / "wavs" / "a.wav", _tone(16000), 16000)
    utts = [Utterance(str(tmp_path / "wavs" / "a.wav"), 0.5, "hello", {"speaker": "s1"})]
    path = tmp_path / "m.jsonl"
    write_manifest(path, utts)
    line = json.loads(path.read_text())
    assert line["audio_filepath"] == "wavs/a.wav" and line["speaker"] == "s1"
    back = read_manifest(path)
    assert back[0].audio_filepath == str((tmp_path / "wavs" / "a.wav").resolve())
    assert back[0].extra == {"speaker": "s1"} and back[0].text == "hello"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "invalid JSON"),
        ('{"audio_filepath": "a.wav", "text": "x"}', "missing field"),
        ('{"audio_filepath": "a.wav", "duration": -1, "text": "x"}', "duration"),
        ('{"audio_filepath": "a.wav", "duration": "long", "text": "x"}', "duration"),
        ('{"audio_filepath": "a.wav", "duration": 1.0, "text": 5}', "text"),
        ('["a.wav", 1.0, "x"]', "JSON object"),
    ],
)
def test_bad_manifest_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = '{"audio_filepath": "a.wav", "duration": 1.0, "text": "ok"}'
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(ManifestError, match=rf"bad\.jsonl:3: .*{message}"):
        read_manifest(path)


def test_manifest_bytes_that_are_not_utf8_name_file_line_and_byte(tmp_path, tone_model, capsys):
    from asr.cli import main

    path = tmp_path / "latin1.jsonl"
    good = b'{"audio_filepath": "a.wav", "duration": 1.0, "text": "ok"}\n'
    bad = '{"audio_filepath": "b.wav", "duration": 1.0, "text": "caf\u00e9"}\n'.encode("latin-1")
    path.write_bytes(b"\xef\xbb\xbf" + good + bad)
    with pytest.raises(ManifestError, match=r"latin1\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 58\)"):
        read_manifest(path)
    assert main(["evaluate", "--model", str(tone_model), "--manifest", str(path)]) == 2  # a clear error, no crash
    assert "latin1.jsonl:2: not UTF-8" in capsys.readouterr().err
    path.write_bytes(b"\xef\xbb\xbf" + good)  # a BOM on the first line is fine
    assert read_manifest(path)[0].text == "ok"
