"""Corpus preparers on tiny folders built here in each corpus's exact layout (short synthetic audio), the registry,
`asr prepare`, segment offsets, the real AN4 folder when it is there, and the recipe configs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.cli import main
from asr.config import load_config
from asr.data.common import split_by_hash
from asr.data.corpora import CORPORA, prepare_corpus
from asr.data.dataset import SpeechDataset, load_split, load_utterance
from asr.data.manifest import read_manifest
from asr.text import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
REAL_AN4 = ROOT.parent / "shared" / "data" / "an4"


def tone(path: Path, seconds: float, sr: int = 16000, f: float = 440.0, **kw) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    x = (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)
    sf.write(str(path), x, sr, **kw)
    return x


def corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not audio at all" * 4)


def manifests(result) -> dict[str, list]:
    """Read back every manifest: its paths must resolve to existing files."""
    out = {}
    for split, path in result.manifests.items():
        utts = read_manifest(path)
        assert all(Path(u.audio_filepath).is_file() for u in utts), split
        out[split] = utts
    return out


def reasons(result) -> list[str]:
    return [str(s) for s in result.skipped]


def has_skip(result, item: str, reason: str) -> bool:
    return any(item in s.item and reason in s.reason for s in result.skipped)


# ----------------------------------------------------------------------------------------------- LibriSpeech


def make_librispeech(root: Path) -> Path:
    ls = root / "LibriSpeech"
    for subset, spk, chap in [
        ("train-clean-100", "19", "198"),
        ("train-clean-100", "26", "495"),
        ("dev-clean", "84", "121123"),
        ("test-clean", "61", "70968"),
    ]:
        d = ls / subset / spk / chap
        lines = []
        for n in range(2):
            utt = f"{spk}-{chap}-{n:04d}"
            tone(d / f"{utt}.flac", 0.5 + 0.25 * n, format="FLAC")
            lines.append(f"{utt} HELLO WORLD'S END NUMBER {n}")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    d = ls / "train-clean-100" / "19" / "198"
    with open(d / "19-198.trans.txt", "a") as f:
        f.write("19-198-0009 A LINE WITHOUT AUDIO\n19-198-0010 A CORRUPT FILE\n")
    corrupt(d / "19-198-0010.flac")
    tone(d / "19-198-0011.flac", 0.5, format="FLAC")  # audio without a transcript line
    return root


def test_librispeech(tmp_path):
    data = make_librispeech(tmp_path / "data")
    result = prepare_corpus("librispeech", data, tmp_path / "out")
    m = manifests(result)
    assert {k: len(v) for k, v in m.items()} == {"train": 4, "dev": 2, "test": 2}
    u = m["train"][0]
    assert u.text == "hello world's end number 0" and u.extra["speaker"] == "19" and u.extra["id"] == "19-198-0000"
    assert u.duration == pytest.approx(0.5) and m["train"][1].duration == pytest.approx(0.75)
    assert result.stats["train"].speakers == 2 and result.stats["train"].hours == pytest.approx(2.5 / 3600)
    assert has_skip(result, "19-198.trans.txt:3", "transcript without audio")
    assert has_skip(result, "19-198-0010.flac", "cannot read audio header")
    assert has_skip(result, "19-198-0011.flac", "audio without transcript")
    assert len(result.skipped) == 3

    # Named subsets: only those, and a split left out loses its stale manifest.
    again = prepare_corpus(
        "librispeech", data / "LibriSpeech", tmp_path / "out", train=["train-clean-100"], dev=["dev-clean"]
    )
    assert set(again.manifests) == {"train", "dev"} and not (tmp_path / "out" / "test.jsonl").exists()
    with pytest.raises(FileNotFoundError, match="train-clean-360"):
        prepare_corpus("librispeech", data, tmp_path / "x", train=["train-clean-360"])


def test_mini_librispeech(tmp_path):
    ls = tmp_path / "LibriSpeech"
    for subset, spk in [("train-clean-5", "1088"), ("dev-clean-2", "1272"), ("test-clean", "61")]:
        d = ls / subset / spk / "134315"
        tone(d / f"{spk}-134315-0000.flac", 0.4, format="FLAC")
        (d / f"{spk}-134315.trans.txt").write_text(f"{spk}-134315-0000 MISTER QUILTER\n")
    tone(ls / "train-clean-100" / "1" / "2" / "1-2-0000.flac", 0.4, format="FLAC")  # not part of mini
    (ls / "train-clean-100" / "1" / "2" / "1-2.trans.txt").write_text("1-2-0000 NOT MINI\n")
    m = manifests(prepare_corpus("mini_librispeech", tmp_path, tmp_path / "out"))
    assert {k: [u.extra["subset"] for u in v] for k, v in m.items()} == {
        "train": ["train-clean-5"],
        "dev": ["dev-clean-2"],
        "test": ["test-clean"],
    }


# ----------------------------------------------------------------------------------------------- LJSpeech


def test_ljspeech(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    rows = []
    for i in range(1, 6):
        utt = f"LJ001-{i:04d}"
        tone(root / "wavs" / f"{utt}.wav", 0.3, sr=22050)
        rows.append(f'{utt}|In 1869, "Dr. Smith" came.|In eighteen sixty-nine, "Doctor Smith" came.')
    rows.append("LJ002-0001|No audio here.|No audio here.")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    tone(root / "wavs" / "LJ003-0001.wav", 0.3, sr=22050)  # not in metadata.csv
    corrupt(root / "wavs" / "LJ001-0005.wav")
    result = prepare_corpus("ljspeech", tmp_path, tmp_path / "out", n_dev=1, n_test=1)
    m = manifests(result)
    ids = {k: [u.extra["id"] for u in v] for k, v in m.items()}
    assert ids == {"train": ["LJ001-0001", "LJ001-0002"], "dev": ["LJ001-0003"], "test": ["LJ001-0004"]}
    assert m["train"][0].text == "in eighteen sixty nine doctor smith came"  # the normalised column, normalised
    assert m["train"][0].duration == pytest.approx(0.3, abs=1e-4) and m["dev"][0].extra["speaker"] == "LJ"
    assert has_skip(result, "metadata.csv:6", "transcript without audio")
    assert has_skip(result, "LJ003-0001.wav", "audio without transcript")
    assert has_skip(result, "LJ001-0005.wav", "cannot read audio header")


# ----------------------------------------------------------------------------------------------- Common Voice


def _can_write_mp3(tmp_path: Path) -> bool:
    try:
        tone(tmp_path / "probe.mp3", 0.1, sr=48000, format="MP3")
        return sf.info(str(tmp_path / "probe.mp3")).frames > 0
    except Exception:
        return False


@pytest.mark.parametrize("ext", ["mp3", "wav"])
def test_commonvoice(tmp_path, ext):
    if ext == "mp3" and not _can_write_mp3(tmp_path):
        pytest.skip("this libsndfile build cannot write MP3; the MP3 case needs an encoder (lame) in libsndfile")
    root = tmp_path / "cv-corpus" / "en"
    kw = {"format": "MP3"} if ext == "mp3" else {}
    header = "\t".join(
        [
            "client_id",
            "path",
            "sentence_id",
            "sentence",
            "sentence_domain",
            "up_votes",
            "down_votes",
            "age",
            "gender",
            "accents",
            "locale",
        ]
    )
    tables = {
        "train": [
            ("spk_a", "a1", 'Hello, "world"!'),
            ("spk_a", "a2", "Ça va?"),
            ("spk_b", "b1", "It's 5 o'clock."),
            ("spk_b", "missing", "No clip."),
        ],
        "dev": [("spk_c", "c1", "Dev sentence.")],
        "test": [("spk_d", "d1", "Test sentence."), ("spk_d", "broken", "Corrupt clip.")],
    }
    for split, rows in tables.items():
        lines = [header]
        for client, clip, sentence in rows:
            name = f"common_voice_en_{clip}.{ext}"
            if clip == "broken":
                corrupt(root / "clips" / name)
            elif clip != "missing":
                tone(root / "clips" / name, 1.0, sr=48000, **kw)
            lines.append(f"{client}\t{name}\tx\t{sentence}\t\t2\t0\t\t\t\ten")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = prepare_corpus("commonvoice", root, tmp_path / "out")
    m = manifests(result)
    assert {k: len(v) for k, v in m.items()} == {"train": 3, "dev": 1, "test": 1}
    texts = {u.extra["id"]: u.text for u in m["train"]}
    # As written: the recipe's normaliser reads digits and punctuation at training and scoring time.
    assert texts == {
        "common_voice_en_a1": 'Hello, "world"!',
        "common_voice_en_a2": "Ça va?",
        "common_voice_en_b1": "It's 5 o'clock.",
    }
    assert {u.extra["speaker"] for u in m["train"]} == {"spk_a", "spk_b"} and m["dev"][0].extra["locale"] == "en"
    assert all(abs(u.duration - 1.0) < 0.1 for v in m.values() for u in v)  # MP3 adds encoder padding
    assert has_skip(result, "train.tsv:5", "transcript without audio")
    assert has_skip(result, f"common_voice_en_broken.{ext}", "cannot read audio header")


# ----------------------------------------------------------------------------------------------- AN4


def make_an4(root: Path, kind: str) -> Path:
    """AN4 as CMU's archives extract: an4/etc + an4/wav/{an4_clstk,an4test_clstk}/<spk>/<utt>.{sph|raw}."""
    an4 = root / "an4"
    (an4 / "etc").mkdir(parents=True)
    train = {
        "fash": ["an251-fash-b", "cen1-fash-b"],
        "fbbh": ["an76-fbbh-b"],
        "mblw": ["an1-mblw-b", "an2-mblw-b"],
        "mcen": ["an36-mcen-b"],
    }
    texts = iter(["YES", "H I N I C H", "RUBOUT G M E F THREE NINE", "ENTER SIX TWO", "NO", "GO"])

    def audio(part: str, spk: str, utt: str, seconds: float) -> None:
        path = an4 / "wav" / part / spk / f"{utt}.{kind}"
        if kind == "sph":
            tone(path, seconds, format="NIST", subtype="PCM_16")
        else:  # headerless big-endian 16-bit PCM
            path.parent.mkdir(parents=True, exist_ok=True)
            x = (0.3 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * 16000)) / 16000) * 32767).astype(">i2")
            path.write_bytes(x.tobytes())

    lines, ids = [], []
    for spk, utts in train.items():
        for utt in utts:
            audio("an4_clstk", spk, utt, 1.0)
            lines.append(f"<s> {next(texts)} </s> ({utt})")
            ids.append(f"an4_clstk/{spk}/{utt}")
    lines.append("<s> NO AUDIO </s> (an99-mcen-b)")
    (an4 / "etc" / "an4_train.transcription").write_text("\n".join(lines) + "\n")
    (an4 / "etc" / "an4_train.fileids").write_text("\n".join(ids) + "\n")
    audio("an4_clstk", "mcen", "an37-mcen-b", 0.5)  # no transcript line
    audio("an4test_clstk", "fcaw", "an406-fcaw-b", 1.5)
    audio("an4test_clstk", "fcaw", "an407-fcaw-b", 1.5)
    (an4 / "etc" / "an4_test.transcription").write_text("RUBOUT T W O (an406-fcaw-b)\nERASE C Q Q (an407-fcaw-b)\n")
    return root


@pytest.mark.parametrize("kind", ["sph", "raw"])
def test_an4(tmp_path, kind):
    data = make_an4(tmp_path / "data", kind)
    result = prepare_corpus("an4", data, tmp_path / "out", dev_speakers=["fbbh", "mcen"])
    m = manifests(result)
    assert {k: sorted({u.extra["speaker"] for u in v}) for k, v in m.items()} == {
        "train": ["fash", "mblw"],
        "dev": ["fbbh", "mcen"],
        "test": ["fcaw"],
    }
    texts = {u.extra["id"]: u.text for v in m.values() for u in v}
    assert texts["cen1-fash-b"] == "h i n i c h" and texts["an76-fbbh-b"] == "rubout g m e f three nine"
    assert texts["an406-fcaw-b"] == "rubout t w o"  # test lines have no <s> </s>
    assert all(u.duration == pytest.approx(1.0) for u in m["train"]) and m["test"][0].duration == pytest.approx(1.5)
    assert all(u.audio_filepath.endswith(f".{kind}") for v in m.values() for u in v)
    assert has_skip(result, "an99-mcen-b", "transcript without audio")
    assert has_skip(result, "an37-mcen-b", "audio without transcript")
    # Default dev choice: n speakers, half of them female, the same every time.
    auto = prepare_corpus("an4", data / "an4", tmp_path / "auto", n_dev_speakers=2)
    dev = sorted({u.extra["speaker"] for u in read_manifest(auto.manifests["dev"])})
    assert len(dev) == 2 and dev[0].startswith("f") and dev[1].startswith("m")


@pytest.mark.skipif(not (REAL_AN4 / "etc" / "an4_train.transcription").is_file(), reason="real AN4 copy not here")
def test_real_an4_folder(tmp_path):
    result = prepare_corpus("an4", REAL_AN4, tmp_path)
    m = manifests(result)
    utts = m["train"] + m["dev"]
    assert len(utts) == 948 and len({u.extra["speaker"] for u in utts}) == 74 and not result.skipped
    assert "test" not in m  # the test part is withheld in this copy
    assert not {u.extra["speaker"] for u in m["train"]} & {u.extra["speaker"] for u in m["dev"]}
    assert 0.65 < sum(u.duration for u in utts) / 3600 < 0.75
    assert all(u.text == u.text.lower() and "<s>" not in u.text for u in utts)


# ----------------------------------------------------------------------------------------------- yesno


def test_yesno(tmp_path):
    root = tmp_path / "waves_yesno"
    names = [
        "0_0_0_0_1_1_1_1",
        "0_0_1_0_0_0_1_0",
        "0_1_0_0_1_0_1_1",
        "1_1_1_1_0_0_0_0",
        "1_0_1_1_1_1_0_1",
        "0_0_0_1_0_1_1_0",
        "1_1_0_0_1_1_1_0",
        "1_0_0_1_0_0_1_1",
    ]
    for name in names:
        tone(root / f"{name}.wav", 0.6, sr=8000)
    corrupt(root / "1_1_1_0_0_1_0_1.wav")
    tone(root / "README.wav", 0.2, sr=8000)
    result = prepare_corpus("yesno", tmp_path, tmp_path / "out", dev=0.2, test=0.3)
    m = manifests(result)
    got = {u.extra["id"]: (split, u.text) for split, v in m.items() for u in v}
    assert sorted(got) == sorted(names)
    assert got["0_1_0_0_1_0_1_1"][1] == "no yes no no yes no yes yes"
    assert all(split == split_by_hash(i, dev=0.2, test=0.3) for i, (split, _) in got.items())
    assert has_skip(result, "1_1_1_0_0_1_0_1.wav", "cannot read audio header")
    assert has_skip(result, "README.wav", "does not spell the words")


# ----------------------------------------------------------------------------------------------- Kaldi


def test_kaldi_dir_with_segments(tmp_path):
    s5 = tmp_path / "s5"
    rec1 = tone(s5 / "audio" / "rec1.wav", 4.0, f=300.0)
    tone(tmp_path / "abs" / "rec2.flac", 2.0, format="FLAC")
    d = s5 / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text(
        f"rec1 audio/rec1.wav\nrec2 {tmp_path / 'abs' / 'rec2.flac'}\n"
        "rec3 sox audio/rec3.sph -t wav - |\nrec4 raw.ark:1234\n"
    )
    (d / "segments").write_text(
        "rec1-a rec1 0.50 1.50\nrec1-b rec1 2.0 -1\nrec2-a rec2 0.25 1.25\nrec2-late rec2 1.5 2.75\nrec3-a rec3 0 1\n"
    )
    (d / "text").write_text(
        "rec1-a Hello there.\nrec1-b GENERAL Kenobi\nrec2-a one two\nrec2-late too late\n"
        "rec3-a piped\nlonely-utt no segment\n"
    )
    (d / "utt2spk").write_text("rec1-a obi\nrec1-b grievous\nrec2-a obi\n")
    result = prepare_corpus("kaldi", d, tmp_path / "out", split="dev")
    assert list(result.manifests) == ["dev"]
    utts = {u.extra["id"]: u for u in manifests(result)["dev"]}
    assert sorted(utts) == ["rec1-a", "rec1-b", "rec2-a"]
    a, b = utts["rec1-a"], utts["rec1-b"]
    assert (a.extra["offset"], a.duration, a.text, a.extra["speaker"]) == (0.5, 1.0, "Hello there.", "obi")
    assert (b.extra["offset"], b.duration) == (2.0, 2.0)  # end -1: to the end of the recording
    assert Path(a.audio_filepath) == (s5 / "audio" / "rec1.wav").resolve()
    assert has_skip(result, "wav.scp:3", "command pipe not supported")
    assert has_skip(result, "wav.scp:4", "archive")
    assert has_skip(result, "segments:4", "after the recording")
    assert has_skip(result, "segments:5", "not in wav.scp")
    assert has_skip(result, "text:6", "transcript without audio")
    # The dataset reads exactly the segment.
    wav = load_utterance(a, 16000).numpy()
    assert wav.size == 16000 and np.abs(wav - rec1[8000:24000]).max() < 1e-3
    kept = load_split(str(result.manifests["dev"]))
    assert len(kept) == 3
    ds = SpeechDataset(kept, CharTokenizer.build(u.text for u in kept), 16000)
    assert [ds[i][1].numel() for i in range(3)] == [16000, 32000, 16000]


def test_kaldi_dir_without_segments(tmp_path):
    d = tmp_path / "data" / "test"
    tone(d / "wavs" / "u1.wav", 0.5)
    tone(d / "wavs" / "u2.wav", 0.5)
    corrupt(d / "wavs" / "u3.wav")
    (d / "wav.scp").write_text(f"u1 {d / 'wavs' / 'u1.wav'}\nu2 {d / 'wavs' / 'u2.wav'}\nu3 {d / 'wavs' / 'u3.wav'}\n")
    (d / "text").write_text("u1 first one\nu3 broken\n")
    result = prepare_corpus("kaldi", d, tmp_path / "out", split="test")
    (u,) = manifests(result)["test"]
    assert (u.extra["id"], u.text, "offset" in u.extra) == ("u1", "first one", False)
    assert has_skip(result, "u2.wav", "audio without transcript") and has_skip(result, "u3.wav", "cannot read")


# ----------------------------------------------------------------------------------------------- folder


def test_folder(tmp_path):
    root = tmp_path / "corpus"
    for i in range(12):
        spk = ["alice", "bob"][i % 2]
        tone(root / spk / f"take{i}.wav", 0.4)
        (root / spk / f"take{i}.txt").write_text(f"Take number {i}!\n")
    tone(root / "bob" / "deep" / "x.flac", 0.4, format="FLAC")
    (root / "bob" / "deep" / "x.txt").write_text("Nested, FLAC.")
    tone(root / "alice" / "untranscribed.wav", 0.4)
    (root / "alice" / "orphan.txt").write_text("no audio")
    corrupt(root / "bob" / "bad.wav")
    (root / "bob" / "bad.txt").write_text("bad audio")
    result = prepare_corpus("folder", root, root)  # manifests beside the audio: relative paths (write_manifest)
    m = manifests(result)
    assert sum(len(v) for v in m.values()) == 13
    assert all(
        split == split_by_hash(str(Path(u.audio_filepath).relative_to(root.resolve()).as_posix()))
        for split, v in m.items()
        for u in v
    )
    nested = next(u for v in m.values() for u in v if u.extra["id"] == "bob-deep-x")
    assert nested.text == "Nested, FLAC." and nested.extra["speaker"] == "bob"
    line = json.loads(result.manifests["train"].read_text().splitlines()[0])
    assert line["audio_filepath"] == "alice/take0.wav"
    assert has_skip(result, "untranscribed.wav", "audio without transcript")
    assert has_skip(result, "orphan.txt", "transcript without audio")
    assert has_skip(result, "bad.wav", "cannot read audio header")
    one = prepare_corpus("folder", root, tmp_path / "one", split="train")
    assert list(one.manifests) == ["train"] and one.stats["train"].utterances == 13


# ----------------------------------------------------------------------------------------------- CLI, registry


def test_cli_prepare_prints_counts_hours_and_skips(tmp_path, capsys, caplog):
    root = tmp_path / "waves_yesno"
    for name in ["0_0_0_0_1_1_1_1", "0_0_1_0_0_0_1_0", "0_1_0_0_1_0_1_1", "1_1_1_1_0_0_0_0"]:
        tone(root / f"{name}.wav", 0.6, sr=8000)
    corrupt(root / "1_0_1_0_1_0_1_0.wav")
    with caplog.at_level(logging.WARNING, logger="asr"):
        assert (
            main(
                [
                    "prepare",
                    "yesno",
                    "--data-dir",
                    str(tmp_path),
                    "--out",
                    str(tmp_path / "out"),
                    "--dev-fraction",
                    "0",
                    "--test-fraction",
                    "0",
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "train: 4 utterances, 0.00 h" in out and "1 item(s) skipped" in out
    assert "1_0_1_0_1_0_1_0.wav" in caplog.text and "cannot read audio header" in caplog.text
    # An option the corpus does not take, and a missing --data-dir, are clear errors.
    assert main(["prepare", "yesno", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--split", "x"]) == 2
    assert "--split does not apply" in capsys.readouterr().err
    assert main(["prepare", "an4", "--out", str(tmp_path / "o")]) == 2
    assert "needs --data-dir" in capsys.readouterr().err


def test_cli_prepare_fsdd_still_works(tmp_path, capsys):
    rec = tmp_path / "fsdd" / "recordings"
    for spk in ("alice", "bob"):
        for d in range(3):
            for i in (0, 7, 46):  # a test, a train and a dev index
                tone(rec / f"{d}_{spk}_{i}.wav", 0.2, sr=8000, f=200.0 + 50 * d)
    assert (
        main(
            [
                "prepare",
                "fsdd",
                "--data-dir",
                str(tmp_path / "fsdd"),
                "--out",
                str(tmp_path / "out"),
                "--n-train",
                "4",
                "--n-dev",
                "2",
                "--n-test",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "train: 4 utterances" in out and "test: 2 utterances" in out
    assert len(read_manifest(tmp_path / "out" / "dev.jsonl")) == 2


def test_cli_prepare_digits_keeps_digit_words_and_cuts_above_4k(tmp_path, capsys, caplog):
    sr = 16000
    t = np.arange(sr) / sr
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    lines = []
    for name, text in [("a", "one two nine"), ("b", "x i sixty one"), ("c", "four oh three"), ("d", "zero five")]:
        sf.write(wavs / f"{name}.wav", 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t), sr)
        lines.append({"audio_filepath": str(wavs / f"{name}.wav"), "duration": 1.0, "text": text, "speaker": name})
    (wavs / "d.wav").write_bytes(b"RIFF not audio")  # reported and skipped
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with caplog.at_level(logging.WARNING, logger="asr"):
        assert main(["prepare", "digits", "--texts", str(manifest), "--out", str(tmp_path / "out")]) == 0
    assert "test: 1 utterances" in capsys.readouterr().out
    assert "d.wav" in caplog.text
    [utt] = read_manifest(tmp_path / "out" / "test.jsonl")
    assert utt.text == "one two nine" and utt.extra["speaker"] == "a" and utt.duration == pytest.approx(1.0)
    wav, got_sr = sf.read(utt.audio_filepath)
    spectrum = np.abs(np.fft.rfft(wav[2000:-2000]))
    freqs = np.fft.rfftfreq(wav.size - 4000, 1 / got_sr)
    assert got_sr == sr
    assert spectrum[np.abs(freqs - 1000) < 20].max() > 100 * spectrum[np.abs(freqs - 6000) < 20].max()
    assert main(["prepare", "digits", "--out", str(tmp_path / "o2")]) == 2
    assert "needs --texts" in capsys.readouterr().err
    # --rest: the utterances that are not only digit words, band-limited the same way, as training data
    assert main(["prepare", "digits", "--texts", str(manifest), "--out", str(tmp_path / "rest"), "--rest"]) == 0
    assert "train: 2 utterances" in capsys.readouterr().out
    rest = read_manifest(tmp_path / "rest" / "train.jsonl")
    assert [u.text for u in rest] == ["x i sixty one", "four oh three"]
    assert not (tmp_path / "rest" / "test.jsonl").exists()
    wav, _ = sf.read(rest[0].audio_filepath)
    spectrum = np.abs(np.fft.rfft(wav[2000:-2000]))
    assert spectrum[np.abs(freqs - 1000) < 20].max() > 100 * spectrum[np.abs(freqs - 6000) < 20].max()


def test_registry_is_complete():
    assert {
        "librispeech",
        "mini_librispeech",
        "ljspeech",
        "commonvoice",
        "an4",
        "yesno",
        "fsdd",
        "synth",
        "digits",
        "kaldi",
        "folder",
    } <= set(CORPORA)
    for c in CORPORA.values():
        assert callable(c.preparer()) and c.description and c.splits


@pytest.mark.parametrize("conf", sorted((ROOT / "recipes").glob("*/conf.yaml")), ids=lambda p: p.parent.name)
def test_recipe_configs_load(conf):
    cfg = load_config(conf)  # unknown keys or wrong types raise
    name = conf.parent.name
    # AN4 trains on its own recordings plus eSpeak NG copies of their transcripts (run.sh: asr prepare tts)
    train = f"data/{name}_tts/mixed.jsonl" if name == "an4" else f"data/{name}/train.jsonl"
    assert cfg.data.train_manifest == train and cfg.train.out_dir == f"exp/{name}"
    run = conf.parent / "run.sh"
    assert run.is_file() and f"recipes/{name}/conf.yaml" in run.read_text()
    assert (conf.parent / "README.md").is_file() or name == "synth"
