"""`asr benchmark`: bootstrap statistics, decoder setups, scoring, the cache, the report files and bad input."""

import json

import numpy as np
import pytest

import asr.benchmark.run
from asr.benchmark import aligned_pair, score_system, short_labels
from asr.cli import main
from asr.data.manifest import Utterance, read_manifest, write_manifest
from asr.decoding.options import parse_decoder, parse_decoders
from asr.stats import bootstrap_interval, paired_bootstrap


def simulate(n: int, wer: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n utterances of 2-15 words, each word wrong with probability `wer`: the expected corpus WER is `wer`."""
    words = rng.integers(2, 16, size=n)
    return rng.binomial(words, wer), words


def test_bootstrap_interval_covers_the_true_wer_and_narrows_with_more_utterances():
    true_wer, trials = 0.15, 200
    covered = 0
    for seed in range(trials):
        errors, words = simulate(150, true_wer, np.random.default_rng(seed))
        covered += true_wer in bootstrap_interval(errors, words, n_resamples=500, seed=seed)
    assert 0.88 <= covered / trials <= 0.99  # nominal 95%

    rng = np.random.default_rng(123)
    widths = [bootstrap_interval(*simulate(n, true_wer, rng), seed=0).width for n in (100, 400, 1600)]
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < widths[0] / 2.5  # ~ 1/sqrt(n): 16x the utterances, about a quarter of the width

    errors, words = simulate(300, true_wer, np.random.default_rng(5))
    assert bootstrap_interval(errors, words, seed=7) == bootstrap_interval(errors, words, seed=7)  # seeded


def test_paired_bootstrap_finds_the_better_system_and_ties_identical_ones():
    rng = np.random.default_rng(0)
    words = rng.integers(2, 16, size=200)
    worse, better = rng.binomial(words, 0.30), rng.binomial(words, 0.10)
    p = paired_bootstrap(worse, better, words, seed=0)
    assert p.prob_b_better > 0.99 and p.verdict == "B better" and p.delta < 0 and p.delta_interval.high < 0
    assert paired_bootstrap(better, worse, words, seed=0).verdict == "A better"
    same = paired_bootstrap(worse, worse, words, seed=0)
    assert same.prob_b_better == 0.5 and same.delta == 0 and same.verdict == "no significant difference"
    with pytest.raises(ValueError):
        paired_bootstrap([1, 2], [1], [3, 3])


def test_decoder_setups_parse_to_canonical_names_and_reject_unknowns():
    setups = parse_decoders(["greedy,beam10:length_penalty=0.8,ctc_weight=0.5,ctc", "beam4"])
    assert [s.canonical for s in setups] == ["greedy", "beam10:ctc_weight=0.5,length_penalty=0.8", "ctc", "beam4"]
    assert setups[1].options() == {"beam_size": 10, "ctc_weight": 0.5, "length_penalty": 0.8}
    assert len(parse_decoders(["beam3,beam3"])) == 1
    with pytest.raises(ValueError, match="beem5"):
        parse_decoders(["beem5"])
    with pytest.raises(ValueError, match="ctc_wieght"):
        parse_decoders(["beam3:ctc_wieght=0.5"])
    with pytest.raises(ValueError, match="length_penalty"):
        parse_decoders(["beam3:length_penalty=high"])
    with pytest.raises(ValueError, match="max_len_ratio"):  # greedy takes no lm/ctc parameters
        parse_decoders(["greedy:lm_weight=0.3"])
    vtln = parse_decoder("beam5:vtln_warps=0.92/1/1.08")  # list values are written with slashes
    assert vtln.canonical == "beam5:vtln_warps=0.92/1.0/1.08"
    assert vtln.options() == {"beam_size": 5, "vtln_warps": (0.92, 1.0, 1.08)}
    with pytest.raises(ValueError, match="list of numbers"):
        parse_decoder("greedy:vtln_warps=0.9/high")


def test_scoring_counts_errors_per_utterance_and_aligns_them():
    utts = [Utterance(f"/x/{i}.wav", 1.0, t) for i, t in enumerate(["one two three", "four five", "six", ""])]
    hyps = ["one too three four", "five", "six", "extra"]
    rates, scores, analysis = score_system(utts, hyps)
    assert [s.errors for s in scores] == [2, 1, 0, 1]
    assert sum(s.errors for s in scores) == rates.substitutions + rates.deletions + rates.insertions
    assert analysis.substitutions == [("two", "too", 1)]
    assert ("four", 1) in analysis.insertions and ("extra", 1) in analysis.insertions
    assert analysis.deletions == [("four", 1)]
    assert analysis.worst[0].id == "0"
    worst = analysis.worst[0]
    assert (worst.aligned_ref, worst.aligned_hyp) == ("one TWO three ****", "one TOO three FOUR")
    import jiwer

    out = jiwer.process_words("a b c", "a c")
    assert aligned_pair(["a", "b", "c"], ["a", "c"], out.alignments[0]) == ("a B c", "a * c")
    assert short_labels(["/e/a/model.pt", "/e/b/model.pt"]) == ["a/model.pt", "b/model.pt"]


@pytest.fixture(scope="module")
def two_speakers(tone_corpus, tmp_path_factory):
    """The tone test set with two speakers, so a breakdown has something to break down."""
    utts = read_manifest(tone_corpus["test"])
    for i, u in enumerate(utts):
        u.extra["speaker"] = "s1" if i % 2 else "s2"
    path = tmp_path_factory.mktemp("bench_sets") / "test.jsonl"
    write_manifest(path, utts)
    return path


@pytest.fixture(scope="module")
def second_model(tone_model, tmp_path_factory):
    """A different (worse) model: the tone model with noisy weights."""
    import torch

    from asr.recognizer import load_model, save_model

    rec = load_model(tone_model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in rec.network.decoder.parameters():
            p.add_(0.15 * torch.randn(p.shape, generator=gen))
    return save_model(tmp_path_factory.mktemp("noisy") / "model.pt", rec)


def test_benchmark_writes_reports_and_reruns_only_what_is_new(
    tone_model, second_model, two_speakers, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "bench"
    calls = []
    real = asr.benchmark.run.decode_set

    def counting(rec, options, *a):
        calls.append(options)
        return real(rec, options, *a)

    monkeypatch.setattr(asr.benchmark.run, "decode_set", counting)
    args = [
        "benchmark",
        "--sets",
        str(two_speakers),
        "--decoders",
        "greedy,beam3:length_penalty=0.5",
        "ctc",
        "--by",
        "speaker",
        "--by",
        "duration",
        "--bootstrap",
        "200",
        "--out",
        str(out),
    ]
    assert main([*args, "--models", str(tone_model)]) == 0
    printed = capsys.readouterr().out
    assert "| model | set | decoder |" in printed and "95% CI" in printed and "by speaker" in printed
    assert sorted(o.decoder for o in calls) == ["beam", "ctc", "greedy"]
    beam = next(o for o in calls if o.decoder == "beam")  # the setup on top of the model's decode config
    assert (beam.beam_size, beam.length_penalty, beam.ctc_weight, beam.lm_weight) == (3, 0.5, 0.3, 0.0)
    for name in ("results.md", "results.csv", "results.json", "wer_vs_rtf.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "wer_vs_rtf.png").read_bytes()[:4] == b"\x89PNG"
    first = json.loads((out / "results.json").read_text())
    assert [s["status"] for s in first["systems"]] == ["decoded"] * 3
    s = first["systems"][0]
    assert s["wer_interval"]["low"] <= s["rates"]["wer"] <= s["wer_interval"]["high"]
    assert s["rtf"] > 0 and s["utts_per_second"] > 0 and s["num_params"] > 0 and s["peak_rss_mb"] > 0
    assert {b["field"] for b in first["breakdowns"]} == {"speaker", "duration"}
    assert {r["group"] for r in first["breakdowns"][0]["rows"]} == {"s1", "s2"}
    assert [c["varied"] for c in first["comparisons"]] == ["decoder", "decoder"]  # one model: greedy vs the others
    md = (out / "results.md").read_text()
    assert "## Error analysis" in md
    assert "greedy" in (out / "results.csv").read_text().splitlines()[1]

    # Add a second model: only it is decoded; the first comes from the cache with the same hypotheses.
    calls.clear()
    assert main([*args, "--models", str(tone_model), str(second_model)]) == 0
    assert len(calls) == 3
    again = json.loads((out / "results.json").read_text())
    assert [s["status"] for s in again["systems"]] == ["cached"] * 3 + ["decoded"] * 3
    assert again["systems"][0]["rates"] == first["systems"][0]["rates"]
    models = [c for c in again["comparisons"] if c["varied"] == "model"]
    assert len(models) == 3 and all(0 <= c["result"]["prob_b_better"] <= 1 for c in models)
    assert "### Models" in capsys.readouterr().out
    assert again["systems"][3]["rates"]["wer"] > 0  # the noisy model makes errors: the worst are listed, aligned
    md = (out / "results.md").read_text()
    assert "REF:" in md and "HYP:" in md


def test_benchmark_bad_inputs_give_clear_errors(tone_model, two_speakers, tmp_path, capsys):
    base = ["benchmark", "--out", str(tmp_path / "b"), "--bootstrap", "50"]
    ok_model, ok_set = ["--models", str(tone_model)], ["--sets", str(two_speakers)]
    assert main([*base, "--models", str(tmp_path / "nope.pt"), *ok_set]) == 2
    assert "nope.pt" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio_filepath": "a.wav", "duration": 1, "text": "a"}\n{"oops"\n')
    assert main([*base, *ok_model, "--sets", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main([*base, *ok_model, *ok_set, "--decoders", "beem5"]) == 2
    assert "beem5" in capsys.readouterr().err
    assert main([*base, *ok_model, *ok_set, "--decoders", "beam3:ctc_wieght=1"]) == 2
    assert "ctc_wieght" in capsys.readouterr().err
    assert main([*base, *ok_model, *ok_set, "--by", "accent"]) == 2
    assert "accent" in capsys.readouterr().err
    assert main([*base, *ok_model, *ok_set, "--decoders", "beam3:lm_weight=0.3"]) == 2
    assert "lm_weight" in capsys.readouterr().err
    assert not (tmp_path / "b" / "cache").exists()  # every error came before any decoding


def test_ctc_decoder_needs_a_trained_ctc_head(tone_model, two_speakers, tmp_path, capsys):
    from asr.recognizer import load_model, save_model

    rec = load_model(tone_model)
    rec.cfg.loss.ctc_weight = 0.0
    no_ctc = save_model(tmp_path / "no_ctc.pt", rec)
    code = main(
        [
            "benchmark",
            "--models",
            str(no_ctc),
            "--sets",
            str(two_speakers),
            "--decoders",
            "greedy,ctc",
            "--out",
            str(tmp_path / "b"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "decoder ctc" in err and "CTC head" in err


def test_lm_weight_is_passed_to_an_attached_lm(tone_model, tone_corpus, two_speakers, tmp_path):
    from asr.lm import LMConfig, LMTrainConfig, save_lm, train_lm
    from asr.recognizer import load_model

    texts = [u.text for u in read_manifest(tone_corpus["train"])]
    lm, _ = train_lm(
        texts, load_model(tone_model).tokenizer, LMConfig(d_model=32, d_ff=64, n_layers=1), LMTrainConfig(epochs=1)
    )
    lm_path = save_lm(tmp_path / "lm.pt", lm)
    out = tmp_path / "b"
    args = [
        "benchmark",
        "--models",
        str(tone_model),
        "--sets",
        str(two_speakers),
        "--bootstrap",
        "50",
        "--out",
        str(out),
        "--lm",
        str(lm_path),
        "--decoders",
        "beam3,beam3:lm_weight=0.5",
    ]
    assert main(args) == 0
    systems = json.loads((out / "results.json").read_text())["systems"]
    assert [s["decoder"] for s in systems] == ["beam3", "beam3:lm_weight=0.5"]
    assert all(s["rates"]["sentences"] == 24 for s in systems)
    assert len(list((out / "cache").glob("*.json"))) == 2  # the LM setup has its own cache entry

    # Each setup's LM weight is its own: the benchmark's hypotheses and scores are those of evaluate with the same
    # options, with and without the LM.
    from asr.benchmark.run import evaluate
    from asr.lm import load_lm

    rec = load_model(tone_model).attach_lm(load_lm(lm_path))
    for system in systems:
        cached = next(
            json.loads(p.read_text())["decoded"]
            for p in (out / "cache").glob("*.json")
            if json.loads(p.read_text())["key"]["decoder"] == system["decoder"]
        )
        lm_weight = 0.5 if "lm_weight" in system["decoder"] else 0.0
        alone = evaluate(rec, two_speakers, decoder="beam3", lm_weight=lm_weight)
        assert [u.hyp for u in alone.utterances] == cached["hyps"]
        assert [u.score for u in alone.utterances] == pytest.approx(cached["scores"], abs=1e-4)
    entries = [json.loads(p.read_text())["decoded"]["scores"] for p in (out / "cache").glob("*.json")]
    assert entries[0] != entries[1]  # the LM took part in one setup's scores only
