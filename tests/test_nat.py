"""The non-autoregressive head learns the tone task; its three decoders and the CLI."""

import pytest
import torch

from asr.benchmark.run import evaluate
from asr.cli import main
from asr.decoding.nat import mask_ctc, nat_length, nat_max
from asr.model.nat import placeholder_rows
from asr.recognizer import load_model


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["nat-length", "nat-length:length_from=ctc", "nat-max", "mask-ctc"])
def test_nat_decoders_learn_the_tone_task(tone_nat_model, tone_corpus, decoder):
    rec = load_model(tone_nat_model)
    result = evaluate(rec, tone_corpus["test"], decoder=decoder)
    assert result.rates.wer < 10.0, f"{decoder}: {result.rates.summary()}"


def test_placeholder_rows():
    rows = placeholder_rows(torch.tensor([3, 1, 0]), placeholder=2, pad=1)
    assert rows.tolist() == [[2, 2, 2], [2, 1, 1], [1, 1, 1]]


@pytest.mark.slow
def test_nat_decoders_from_the_cli_and_their_limits(tone_nat_model, tone_model, tone_corpus, capsys, tmp_path):
    rec = load_model(tone_nat_model)
    with torch.no_grad():
        from asr.audio import load_audio
        from asr.data.manifest import read_manifest
        from asr.recognizer import pad_waveforms

        wavs, lengths = pad_waveforms([load_audio(u.audio_filepath) for u in read_manifest(tone_corpus["test"])[:4]])
        memory, memory_lengths = rec.network.encode(*rec.features(wavs, lengths))
        ctc_log_probs = rec.network.ctc_log_probs(memory)
        tok, net = rec.tokenizer, rec.network
        for out in (
            nat_length(net, memory, memory_lengths, tok),
            nat_length(net, memory, memory_lengths, tok, length_from="ctc", ctc_log_probs=ctc_log_probs),
            nat_max(net, memory, memory_lengths, tok),
            mask_ctc(net, memory, memory_lengths, ctc_log_probs, tok, iterations=2),
        ):
            assert len(out) == 4
            for h in out:
                assert all(i not in (tok.blank, tok.pad, tok.sos, tok.eos) for i in h.tokens) and h.score <= 0
        # threshold 0: nothing is hidden, so Mask-CTC returns the CTC best path itself, with its frames
        from asr.decoding.ctc import ctc_greedy

        paths = ctc_greedy(ctc_log_probs, memory_lengths, tok.blank)
        masked = mask_ctc(net, memory, memory_lengths, ctc_log_probs, tok, threshold=0.0)
        assert [h.tokens for h in masked] == [p.tokens for p in paths]
        assert [h.token_times for h in masked] == [p.spans for p in paths]

    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tone_nat_model),
                "--manifest",
                str(tone_corpus["test"]),
                "--decoder",
                "mask-ctc:iterations=2",
                "--out",
                str(tmp_path / "h.jsonl"),
            ]
        )
        == 0
    )
    assert "mask-ctc, threshold 0.99, iterations 2" in capsys.readouterr().out
    assert (
        main(
            [
                "transcribe",
                "--model",
                str(tone_nat_model),
                "--decoder",
                "nat-length",
                str(read_manifest(tone_corpus["test"])[0].audio_filepath),
            ]
        )
        == 0
    )
    # A model without a NAT head, and an unknown decoder, are clear errors.
    assert (
        main(["evaluate", "--model", str(tone_model), "--manifest", str(tone_corpus["test"]), "--decoder", "nat-max"])
        == 2
    )
    assert "non-autoregressive" in capsys.readouterr().err
    assert (
        main(["evaluate", "--model", str(tone_model), "--manifest", str(tone_corpus["test"]), "--decoder", "nat-fast"])
        == 2
    )
    assert "nat-fast" in capsys.readouterr().err
