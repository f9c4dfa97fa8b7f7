"""Transcribing real recordings: cutting at pauses, long files, folders and manifests, output formats, bad files."""

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from asr import load_model
from asr.audio import load_audio
from asr.cli import main
from asr.data.manifest import Utterance, read_manifest
from asr.metrics import error_rates
from asr.segment import split_on_pauses

SR = 16000
SRT_TIME = r"\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d"
VTT_TIME = r"\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d"


def speech_like(seconds: float, rng: np.random.Generator, f0: float = 180.0) -> np.ndarray:
    """A voiced-speech stand-in: five harmonics, amplitude-modulated at a syllable rate (4 Hz)."""
    t = np.arange(int(seconds * SR)) / SR
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 2 * np.pi))
    return 0.15 * env * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))


def noisy(x: np.ndarray, rng: np.random.Generator, level: float = 0.002) -> np.ndarray:
    return (x + level * rng.standard_normal(x.size)).astype(np.float32)


def test_cuts_fall_inside_the_pauses():
    rng = np.random.default_rng(0)
    # (kind, seconds): three bursts of speech; the last has a 0.15 s gap, a pause too short to cut at.
    layout = [
        ("sil", 0.6),
        ("sp", 1.2),
        ("sil", 0.9),
        ("sp", 0.8),
        ("sil", 1.4),
        ("sp", 1.0),
        ("sil", 0.15),
        ("sp", 0.9),
        ("sil", 0.5),
    ]
    parts, t, bursts = [], 0.0, []
    for kind, sec in layout:
        parts.append(speech_like(sec, rng) if kind == "sp" else np.zeros(int(sec * SR)))
        if kind == "sp":
            bursts.append((t, t + sec))
        t += sec
    wav = noisy(np.concatenate(parts), rng)
    speech = [bursts[0], bursts[1], (bursts[2][0], bursts[3][1])]  # the short gap joins the last two

    segs = split_on_pauses(wav, SR, max_seconds=20.0)
    assert len(segs) == 3
    for seg, (start, end) in zip(segs, speech):
        assert start - 0.3 <= seg.start <= start and end <= seg.end <= end + 0.3  # speech kept, a little padding
    for seg, nxt, (_, end), (start, _) in zip(segs, segs[1:], speech, speech[1:]):
        assert end <= seg.end < nxt.start <= start  # the cut lies in the pause between the bursts
    assert segs[0].start >= 0 and segs[-1].end <= wav.size / SR


def test_continuous_speech_is_cut_at_the_quietest_points_under_the_maximum():
    rng = np.random.default_rng(1)
    t = np.arange(12 * SR) / SR
    wav = speech_like(12.0, rng)
    dips = (3.3, 6.9, 10.1)  # short (~70 ms) dips in level: no pause, but the quietest places to cut
    for d in dips:
        wav = wav * (1 - 0.97 * np.exp(-0.5 * ((t - d) / 0.03) ** 2))
    segs = split_on_pauses(noisy(wav, rng), SR, max_seconds=4.0)
    assert all(s.duration <= 4.0 for s in segs)
    assert [s.end for s in segs[:-1]] == [s.start for s in segs[1:]]  # nothing lost between chunks
    assert segs[0].start == 0.0 and segs[-1].end == 12.0
    assert len(segs) == 4 and all(abs(s.end - d) < 0.06 for s, d in zip(segs, dips))

    # Without dips the chunks still respect the maximum.
    segs = split_on_pauses(noisy(speech_like(30.0, rng), rng), SR, max_seconds=4.0)
    assert len(segs) >= 8 and all(s.duration <= 4.0 for s in segs) and segs[-1].end == 30.0


def test_silence_gives_no_segments():
    rng = np.random.default_rng(2)
    assert split_on_pauses(np.zeros(3 * SR), SR) == []
    assert split_on_pauses(noisy(np.zeros(3 * SR), rng, level=0.01), SR) == []  # steady noise is not speech
    assert split_on_pauses(np.zeros(0), SR) == []
    click = np.zeros(3 * SR)
    click[SR : SR + 80] = 0.5  # 5 ms: shorter than any speech
    assert split_on_pauses(click, SR) == []
    with pytest.raises(ValueError, match="at least"):
        split_on_pauses(np.zeros(SR), SR, max_seconds=0.1)


def _long_recording(tone_corpus, tmp_path, n: int = 6):
    """n test utterances joined by 1 s of (noisy) silence -> path, their manifest entries, their start times."""
    rng = np.random.default_rng(3)
    utts = read_manifest(tone_corpus["test"])[:n]
    parts, starts, t = [], [], 0.0
    for i, u in enumerate(utts):
        x, sr = sf.read(u.audio_filepath, dtype="float32")
        assert sr == SR
        if i:
            parts.append(noisy(np.zeros(SR), rng, level=0.003))
            t += 1.0
        starts.append(t)
        parts.append(x)
        t += x.size / SR
    path = tmp_path / "long.wav"
    sf.write(path, np.concatenate(parts), SR)
    return path, utts, starts


def test_long_recording_is_chunked_and_stitched(tone_model, tone_corpus, tmp_path):
    path, utts, starts = _long_recording(tone_corpus, tmp_path)
    rec = load_model(tone_model)
    individual = [t.text for t in rec.transcribe([u.audio_filepath for u in utts], decoder="greedy")]
    [t] = rec.transcribe([path], decoder="greedy", max_chunk_seconds=2.0)
    assert t.duration > 3 * 2.0  # well over the chunk limit
    assert error_rates([" ".join(individual)], [t.text]).wer <= 15.0
    assert error_rates([" ".join(u.text for u in utts)], [t.text]).wer <= 20.0
    # One chunk per utterance: each starts at most the padding before its utterance, in order, inside the file.
    assert len(t.segments) == len(utts)
    for seg, start, u in zip(t.segments, starts, utts):
        assert 0.0 <= seg.start < seg.end <= t.duration and seg.end - seg.start <= 2.0
        assert start - 0.25 <= seg.start and seg.end <= start + u.duration + 0.25
        assert np.isfinite(seg.score) and seg.score <= 0.0
    assert all(a.end <= b.start for a, b in zip(t.segments, t.segments[1:]))
    # Each segment is what decoding its span alone gives (a manifest entry with offset/duration, decoded whole).
    spans = [Utterance(str(path), s.end - s.start, "", {"offset": s.start}) for s in t.segments]
    alone = rec.transcribe(spans, decoder="greedy", cut_at_pauses=False)
    assert [a.text for a in alone] == [s.text for s in t.segments]
    assert [a.segments[0].score for a in alone] == pytest.approx([s.score for s in t.segments], abs=1e-4)

    # Silence transcribes to nothing, through the same API.
    [quiet] = rec.transcribe([np.zeros(2 * 8000, dtype=np.int16)], sample_rate=8000)
    assert quiet.text == "" and quiet.segments == [] and quiet.duration == pytest.approx(2.0)


def _test_audio(rec, tone_corpus, n: int = 6):
    utts = read_manifest(tone_corpus["test"])[:n]
    return utts, [load_audio(u.audio_filepath, rec.cfg.features.sample_rate) for u in utts]


def test_scores_are_hypothesis_log_probabilities(tone_model, tone_corpus):
    rec = load_model(tone_model)
    utts, wavs = _test_audio(rec, tone_corpus)
    encoded = rec.encode(wavs)
    greedy = rec.decode(encoded, rec.options(decoder="greedy"))
    assert [h.text for h in greedy] == [h.text for h in rec.decode(encoded, rec.options(decoder="beam", beam_size=1))]
    # The score is the decoder's log-probability of the hypothesis, <eos> included: a teacher-forced pass agrees.
    tok = rec.tokenizer
    for h, i in zip(greedy, range(len(wavs))):
        ids = torch.tensor([[tok.sos, *h.tokens]])
        with torch.no_grad():
            logits, _ = rec.network.decode(ids, encoded.memory[i : i + 1], encoded.lengths[i : i + 1])
        target = torch.tensor(h.tokens + [tok.eos])
        forced = float(logits[0].log_softmax(-1).gather(1, target[:, None]).sum())
        assert h.score == pytest.approx(forced, abs=1e-3) and h.score <= 0.0

    beam = rec.decode(encoded, rec.options(decoder="beam", beam_size=3, ctc_weight=0.0))
    nbest = rec.decode(encoded, rec.options(decoder="beam", beam_size=3, ctc_weight=0.0, nbest=2))
    assert [(h.text, h.score) for h in beam] == [(h.text, h.score) for h in nbest]
    assert all(len(h.alternatives) <= 1 for h in nbest)
    for h in nbest:
        assert all(a.score / (len(a.tokens) + 1) <= h.score / (len(h.tokens) + 1) for a in h.alternatives)
    same = [(g, b) for g, b in zip(greedy, beam) if g.text == b.text]
    assert same  # where greedy and beam agree, so do their scores: one scoring, whoever asked
    for g, b in same:
        assert g.score == pytest.approx(b.score, abs=1e-3)
    # transcribe reports the same hypotheses and scores as encode + decode.
    whole = rec.transcribe([u.audio_filepath for u in utts], decoder="greedy", cut_at_pauses=False)
    assert [t.text for t in whole] == [h.text for h in greedy]  # (batched in another order: padding differs)
    assert [t.segments[0].score for t in whole] == pytest.approx([h.score for h in greedy], abs=1e-4)


def test_vtln_keeps_each_utterances_best_scoring_warp(tone_model, tone_corpus, tmp_path, capsys):
    rec = load_model(tone_model)
    utts, wavs = _test_audio(rec, tone_corpus)
    warps = (0.9, 1.0, 1.12)
    plain_opts = rec.options(decoder="beam", beam_size=3, ctc_weight=0.0)
    plain = rec.decode(rec.encode(wavs), plain_opts)
    per_warp = [rec.decode(rec.encode(wavs, warps=(a,)), rec.options(plain_opts, vtln_warps=(a,))) for a in warps]
    assert [(h.text, h.score) for h in per_warp[1]] == [(h.text, h.score) for h in plain]  # warp 1 is no warp
    assert [h.score for h in per_warp[0]] != [h.score for h in per_warp[2]]  # the warp reaches the features

    options = rec.options(plain_opts, vtln_warps=warps)
    chosen = rec.decode(rec.encode(wavs, warps=options.warps), options)
    for i, h in enumerate(chosen):
        best = max((run[i] for run in per_warp), key=lambda x: x.score)
        assert (h.text, h.score) == (best.text, best.score) and h.score >= plain[i].score
    nbest = rec.decode(rec.encode(wavs, warps=options.warps), rec.options(options, nbest=3))
    for h, top in zip(nbest, chosen):  # n-best lists merged over warps: best first, each text once
        hs = [h, *h.alternatives]
        assert (h.text, h.score) == (top.text, top.score) and len({x.text for x in hs}) == len(hs) <= 3
        assert [x.score for x in hs] == sorted((x.score for x in hs), reverse=True)
    with pytest.raises(ValueError, match="encode with warps"):  # audio encoded without the warps the options ask
        rec.decode(rec.encode(wavs), options)
    with pytest.raises(ValueError, match="vtln_warps.*3.0"):
        rec.options(vtln_warps=(0.9, 3.0))

    # The command line: --vtln-warps on evaluate names the run, and a bad list is a clear error.
    out = tmp_path / "hyps.jsonl"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tone_model),
                "--manifest",
                str(tone_corpus["test"]),
                "--beam-size",
                "3",
                "--vtln-warps",
                "0.9,1,1.12",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "vtln_warps 0.9/1.0/1.12" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == len(read_manifest(tone_corpus["test"]))
    assert (
        main(["evaluate", "--model", str(tone_model), "--manifest", str(tone_corpus["test"]), "--vtln-warps", "0.9,x"])
        == 2
    )
    assert "--vtln-warps" in capsys.readouterr().err


def test_cli_folders_and_manifests(tone_model, tone_corpus, tmp_path, capsys):
    utts = read_manifest(tone_corpus["test"])[:3]
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    x, _ = sf.read(utts[0].audio_filepath, dtype="float32")
    sf.write(folder / "a.wav", x, SR)
    y, _ = sf.read(utts[1].audio_filepath, dtype="float32")
    sf.write(folder / "sub" / "b.flac", np.stack([y, y], 1), SR)  # other format, two channels, in a subfolder
    (folder / "notes.txt").write_text("not audio")
    model = ["transcribe", "--model", str(tone_model), "--beam-size", "1"]

    assert main([*model, str(folder)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(folder / "a.wav"), str(folder / "sub" / "b.flac")]
    by_folder = [line.split("\t")[1] for line in lines]

    manifest = tmp_path / "todo.jsonl"  # relative paths, and no text or duration: nothing to transcribe yet
    manifest.write_text('{"audio_filepath": "in/a.wav"}\n\n{"audio_filepath": "in/sub/b.flac", "speaker": "x"}\n')
    assert main([*model, str(manifest)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[1] for line in lines] == by_folder
    assert lines[0].split("\t")[0] == str(folder.resolve() / "a.wav")

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio_filepath": "in/a.wav"}\n{"path": "b.wav"}\n')
    assert main([*model, str(bad), str(folder / "a.wav")]) == 1  # the bad manifest is reported, the file still done
    captured = capsys.readouterr()
    assert "bad.jsonl:2" in captured.err and captured.out.startswith(str(folder / "a.wav") + "\t")


def test_cli_output_formats(tone_model, tone_corpus, tmp_path, capsys):
    path, utts, _ = _long_recording(tone_corpus, tmp_path, n=4)
    short = utts[0].audio_filepath
    model = ["transcribe", "--model", str(tone_model), "--beam-size", "1", "--max-chunk-seconds", "2"]

    assert main([*model, "--format", "json", str(path), short]) == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [o["audio_filepath"] for o in objs] == [str(path), short]
    long = objs[0]
    assert len(long["segments"]) == 4 and long["text"] == " ".join(s["text"] for s in long["segments"])
    for s in long["segments"]:
        assert 0 <= s["start"] < s["end"] <= long["duration"] and s["score"] <= 0 and s["text"]

    assert main([*model, "--format", "srt", str(path)]) == 0
    srt = capsys.readouterr().out
    blocks = srt.strip().split("\n\n")
    assert len(blocks) == 4
    for i, block in enumerate(blocks, 1):
        index, times, text = block.split("\n")
        assert index == str(i) and re.fullmatch(SRT_TIME, times) and text

    out = tmp_path / "subs"
    assert main([*model, "--format", "vtt", "--out-dir", str(out), str(path), short]) == 0
    assert capsys.readouterr().out == ""  # written to files, not printed
    vtt = (out / "long.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n") and len(re.findall(VTT_TIME, vtt)) == 4
    assert re.search(VTT_TIME, (out / f"{utts[0].id}.vtt").read_text())

    assert main([*model, "--out-dir", str(out), short]) == 0
    assert (out / f"{utts[0].id}.txt").read_text().strip() == objs[1]["text"]


def test_cli_bad_file_among_good_ones(tone_model, tone_corpus, tmp_path, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    for u in read_manifest(tone_corpus["test"])[:2]:
        x, _ = sf.read(u.audio_filepath, dtype="float32")
        sf.write(folder / f"{u.id}.wav", x, SR)
    (folder / "broken.flac").write_bytes(b"fLaC but not really")
    code = main(["transcribe", "--model", str(tone_model), "--beam-size", "1", str(folder), str(tmp_path / "gone.wav")])
    assert code == 1
    captured = capsys.readouterr()
    assert "broken.flac" in captured.err and "gone.wav" in captured.err
    assert len(captured.out.strip().splitlines()) == 2 and "broken" not in captured.out
