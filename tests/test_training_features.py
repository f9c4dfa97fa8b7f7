"""Training features of the recipe: resume mid-epoch, data parallelism, checkpoint averaging, scheduled sampling,
augmentation."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import tone_config, write_tone_config

from asr.augment import WaveformAugment, room_impulse_responses
from asr.config import Config, SpecAugmentConfig, load_config
from asr.data.dataset import SpeechDataset, collate, load_utterance
from asr.data.manifest import read_manifest
from asr.data.sampler import BucketBatchSampler
from asr.features import time_warp
from asr.recognizer import load_model
from asr.text import CharTokenizer
from asr.training import average_checkpoints, budget_lambda, train

ROOT = Path(__file__).resolve().parent.parent


def _global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.slow
def test_killed_run_resumes_mid_epoch_and_finishes(tone_corpus, tmp_path):
    out = tmp_path / "exp"
    conf = write_tone_config(tmp_path, tone_corpus)
    durations = [u.duration for u in read_manifest(tone_corpus["train"])]
    per_epoch = len(BucketBatchSampler(durations, 1500))
    epochs = 3
    args = [
        "train",
        "--config",
        str(conf),
        f"train.out_dir={out}",
        f"train.max_epochs={epochs}",
        "train.checkpoint_every_n_steps=3",
        "train.average_checkpoints=0",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "asr.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = out / "checkpoints" / "last.ckpt"
    killed_at = None
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
        try:
            step = _global_step(last)
        except Exception:  # not written yet, or being written
            continue
        if step > per_epoch and step % per_epoch:  # inside the second epoch or later
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = step
            break
    assert killed_at is not None, "training finished before it could be interrupted"
    assert not (out / "model.pt").exists()

    from asr.cli import main

    assert main([*args, "--resume"]) == 0
    # Every batch of every epoch was trained exactly once across the two runs: no epoch restarted from scratch.
    assert _global_step(last) == epochs * per_epoch
    assert (out / "model.pt").is_file()


DDP_SCRIPT = textwrap.dedent("""
    import json, sys, hashlib
    import lightning as L
    import torch
    sys.path.insert(0, {tests!r})
    from conftest import TINY_OVERRIDES
    from asr.config import load_config
    from asr.training import train

    class Record(L.Callback):
        def __init__(self):
            self.seen = []
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen += batch.indices.tolist()
        def on_train_end(self, trainer, module):
            h = hashlib.sha256()
            for p in module.parameters():
                h.update(p.detach().cpu().numpy().tobytes())
            with open(f"{out}/rank{{trainer.global_rank}}.json", "w") as f:
                json.dump({{"seen": self.seen, "weights": h.hexdigest(), "world": trainer.world_size}}, f)

    cfg = load_config(None, TINY_OVERRIDES + [
        "data.train_manifest={train}", "data.dev_manifest={dev}", "train.out_dir={out}", "train.max_epochs=1",
        "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp", "train.num_threads=1",
        "train.average_checkpoints=0", "train.attention_plots=0"])
    train(cfg, extra_callbacks=(Record(),))
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes(tone_corpus, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(
        DDP_SCRIPT.format(
            tests=str(ROOT / "tests"), out=str(tmp_path), train=tone_corpus["train"], dev=tone_corpus["dev"]
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["seen"] and r1["seen"] and not set(r0["seen"]) & set(r1["seen"])  # each rank its own data
    assert r0["weights"] == r1["weights"]  # gradients were all-reduced: the replicas stayed identical
    assert (tmp_path / "model.pt").is_file()


def test_sampler_resume_skips_trained_batches():
    durations = [0.5 + 0.01 * i for i in range(100)]
    sampler = BucketBatchSampler(durations, max_frames=600, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume(2, 4)
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # only the first pass after the restart skips
    ranks = [BucketBatchSampler(durations, 600, seed=3, rank=r, world_size=2) for r in (0, 1)]
    a, b = (sum(list(s), []) for s in ranks)
    assert not set(a) & set(b) and len(list(ranks[0])) == len(list(ranks[1]))


def test_sampler_keeps_the_batch_count_of_every_epoch_and_varies_their_composition():
    # Lightning reads len() once and validates when an epoch reaches that many batches: an epoch with fewer
    # batches than epoch 0 (the jittered packing's count moved by one or two) used to skip its validation.
    rng = torch.Generator().manual_seed(0)
    durations = (0.3 + 2.5 * torch.rand(3000, generator=rng)).tolist()
    sampler = BucketBatchSampler(durations, max_frames=6000, seed=0)
    count = len(sampler)
    compositions = set()
    for epoch in range(12):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == count
        assert sorted(i for b in batches for i in b) == list(range(len(durations)))  # each utterance once
        assert all(max(sampler.frames[i] for i in b) * len(b) <= 6000 for b in batches)  # the cap holds
        compositions.add(frozenset(frozenset(b) for b in batches))
    assert len(compositions) == 12  # the jitter still changes which utterances share a batch
    plain = BucketBatchSampler(durations, max_frames=6000, shuffle=False)
    assert len(plain) == len(list(plain)) and list(plain) == sorted(list(plain), key=lambda b: durations[b[0]])


def test_average_checkpoints(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.ckpt"
        torch.save({"state_dict": {"model.w": torch.full((2,), float(i)), "model.n": torch.tensor(i)}}, p)
        paths.append(p)
    avg = average_checkpoints(paths)
    assert torch.allclose(avg["model.w"], torch.ones(2)) and int(avg["model.n"]) == 2


def test_scheduled_sampling_mixes_predictions():
    from asr.recognizer import Recognizer
    from asr.training import ASRModule

    cfg = Config()
    cfg.model.d_model, cfg.model.d_ff, cfg.model.n_encoder_layers, cfg.model.n_decoder_layers = 32, 64, 1, 1
    module = ASRModule(cfg, Recognizer(cfg, CharTokenizer.build(["abc"]))).eval()  # no dropout: comparable passes
    tok = module.model.tokenizer
    ys_in = torch.tensor([[tok.sos, 7, 8, 9, tok.pad]])
    memory, lengths = torch.randn(1, 10, 32), torch.tensor([10])
    same = module._scheduled_sampling(ys_in, memory, lengths, torch.tensor([4]), p=0.0)
    assert torch.equal(same, ys_in)
    pred = module.model.network.decoder(ys_in, memory, lengths, torch.tensor([4]))[0].argmax(-1)
    swapped = module._scheduled_sampling(ys_in, memory, lengths, torch.tensor([4]), p=1.0)
    assert swapped[0, 0] == tok.sos and swapped[0, 4] == tok.pad  # <sos> and padding stay
    assert torch.equal(swapped[0, 1:4], pred[0, 0:3])  # each input is the prediction for its position


def test_speed_perturbation():
    tok = CharTokenizer.build(["a"])
    wav = torch.sin(torch.arange(16000) * 0.05)
    fast = SpeechDataset([], tok, 16000, speed_perturb=[1.1])
    slow = SpeechDataset([], tok, 16000, speed_perturb=[0.9])
    assert abs(fast.augment(wav).numel() - 16000 / 1.1) < 5 and abs(slow.augment(wav).numel() - 16000 / 0.9) < 5


def test_noise_on_the_batch_keeps_each_utterances_snr_and_the_padding():
    wavs = torch.zeros(2, 16000)
    wavs[0] = torch.sin(torch.arange(16000) * 0.05)
    wavs[1, :8000] = 0.1 * torch.sin(torch.arange(8000) * 0.03)  # quieter, and half the batch length
    lengths = torch.tensor([16000, 8000])
    torch.manual_seed(0)
    noisy = WaveformAugment(16000, snr=[10, 10]).train()(wavs, lengths)
    for row, n in enumerate(lengths.tolist()):
        snr = 10 * torch.log10(wavs[row, :n].pow(2).mean() / (noisy[row, :n] - wavs[row, :n]).pow(2).mean())
        assert abs(float(snr) - 10) < 0.5
    assert torch.equal(noisy[1, 8000:], torch.zeros(8000))  # padding stays silent
    assert torch.equal(WaveformAugment(16000, snr=[10, 10]).eval()(wavs, lengths), wavs)  # training only
    with pytest.raises(ValueError, match="noise_snr"):
        WaveformAugment(16000, snr=[10])


def test_room_impulse_responses_decay_at_their_rt60():
    torch.manual_seed(0)
    h = room_impulse_responses(torch.tensor([0.4, 0.2]), torch.tensor([5.0, 0.0]), sample_rate=16000)
    assert h.shape == (2, 6400) and torch.equal(h[:, 0], torch.ones(2))
    for row, (rt60, drr) in enumerate([(0.4, 5.0), (0.2, 0.0)]):
        tail = h[row, 1:]
        assert abs(10 * torch.log10(1.0 / tail.pow(2).sum()).item() - drr) < 1e-3  # direct-to-reverberant ratio
        assert h[row, int(rt60 * 16000) :].abs().sum() == 0  # the shorter room stops at its own RT60
        # Schroeder backward integration: the energy decay curve falls 20 dB (-5 to -25) in a third of the RT60.
        edc = 10 * torch.log10(tail.pow(2).flip(0).cumsum(0).flip(0) / tail.pow(2).sum())
        t5, t25 = [int((edc > level).sum()) / 16000 for level in (-5.0, -25.0)]
        assert abs(3 * (t25 - t5) - rt60) < 0.1 * rt60


def test_reverberation_keeps_length_and_level_and_spreads_energy():
    clicks = torch.zeros(3, 16000)
    clicks[:, 1000] = 1.0
    lengths = torch.tensor([16000, 16000, 3000])  # the third ends before its room's tail would
    torch.manual_seed(0)
    wet = WaveformAugment(16000, rt60=[0.3, 0.3], prob=1.0).train()(clicks, lengths)
    assert wet.shape == clicks.shape
    for row, n in enumerate(lengths.tolist()):
        w = wet[row, :n]
        assert torch.allclose(w.pow(2).mean(), clicks[row, :n].pow(2).mean(), rtol=1e-4)  # same level
        total = w.pow(2).sum()
        assert w[:1000].pow(2).sum() < 1e-9 * total  # causal: nothing before the sound
        assert w[1001:].pow(2).sum() > 0.08 * total  # a tail (DRR at most 10 dB)
    assert wet[0, 4000:5800].pow(2).sum() > 1e-8 * wet[0].pow(2).sum()  # ... that lasts the room's RT60 ...
    assert wet[0, 5800:].pow(2).sum() < 1e-9 * wet[0].pow(2).sum()  # ... and no longer
    assert not torch.equal(wet[0], wet[1])  # a room of its own per utterance
    assert torch.equal(wet[2, 3000:], torch.zeros(13000))  # cut at the utterance's end: padding stays silent
    torch.manual_seed(1)
    half = WaveformAugment(16000, rt60=[0.3, 0.3], prob=0.5).train()(clicks.repeat(20, 1), lengths.repeat(20))
    dry = (half == clicks.repeat(20, 1)).all(1)  # the rows left out are untouched
    assert 15 <= int(dry.sum()) <= 45
    assert torch.equal(WaveformAugment(16000, rt60=[0.3, 0.3], prob=1.0).eval()(clicks, lengths), clicks)
    for bad in ([0.5], [0.6, 0.3], [0.0, 0.3]):
        with pytest.raises(ValueError, match="reverb_rt60"):
            WaveformAugment(16000, rt60=bad)
    with pytest.raises(ValueError, match="reverb_prob"):
        WaveformAugment(16000, rt60=[0.2, 0.4], prob=1.5)


def test_training_batches_get_vtlp_rooms_and_noise_validation_batches_do_not():
    from asr.recognizer import Recognizer
    from asr.training import ASRModule

    cfg = Config()
    cfg.model.d_model, cfg.model.d_ff, cfg.model.n_encoder_layers, cfg.model.n_decoder_layers = 32, 64, 1, 1
    cfg.data.vtlp, cfg.data.noise_snr = [0.9, 1.1], [20, 20]
    cfg.data.reverb_rt60, cfg.data.reverb_prob = [0.2, 0.2], 1.0
    module = ASRModule(cfg, Recognizer(cfg, CharTokenizer.build(["abc"])))
    seen = []  # the waveforms and warp argument of each frontend call
    module.model.frontend.register_forward_pre_hook(lambda _m, args: seen.append((args[0], args[2])))
    tok = module.model.tokenizer
    batch = collate(
        [
            (0, torch.randn(8000) * 0.1, torch.tensor(tok.encode("ab"))),
            (1, torch.randn(6000) * 0.1, torch.tensor(tok.encode("c"))),
        ],
        tok.pad,
    )
    module.train()._forward(batch)
    module.eval()._forward(batch)
    (train_wavs, warp), (val_wavs, val_warp) = seen
    assert warp.shape == (2,) and torch.all((warp >= 0.9) & (warp <= 1.1)) and warp[0] != warp[1]
    assert not torch.equal(train_wavs, batch.wavs) and torch.equal(train_wavs[1, 6000:], torch.zeros(2000))
    assert val_warp is None and torch.equal(val_wavs, batch.wavs)  # validation hears the real recordings
    cfg.data.vtlp = [1.1]
    with pytest.raises(ValueError, match="data.vtlp"):
        ASRModule(cfg, Recognizer(cfg, CharTokenizer.build(["abc"])))


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_intermediate_ctc_adds_the_shared_heads_loss_on_an_earlier_layer(encoder):
    from asr.model import ctc_loss
    from asr.recognizer import Recognizer
    from asr.training import ASRModule

    cfg = Config()
    cfg.model.d_model, cfg.model.d_ff, cfg.model.n_encoder_layers, cfg.model.n_decoder_layers = 32, 64, 3, 1
    cfg.model.encoder, cfg.model.conv_channels, cfg.specaug.enabled = encoder, 8, False
    cfg.loss.ctc_weight, cfg.loss.guided_attn_weight = 0.5, 0.0
    cfg.loss.inter_ctc_layers, cfg.loss.inter_ctc_weight = [1], 0.25
    torch.manual_seed(0)
    module = ASRModule(cfg, Recognizer(cfg, CharTokenizer.build(["abc"]))).eval()
    tok, net = module.model.tokenizer, module.model.network
    batch = collate(
        [
            (0, torch.randn(8000) * 0.1, torch.tensor(tok.encode("ab"))),
            (1, torch.randn(6000) * 0.1, torch.tensor(tok.encode("c"))),
        ],
        tok.pad,
    )
    loss, memory, lengths, stats = module._forward(batch)
    feats, feat_lengths = module.model.features(batch.wavs, batch.wav_lengths)
    final, _, [inter] = net.encode_with_intermediate(feats, feat_lengths, [1])
    assert torch.allclose(final, memory) and not torch.allclose(inter, memory)
    direct = ctc_loss(net.ctc_log_probs(inter), lengths, batch.tokens, batch.token_lengths, tok.blank)
    assert torch.allclose(stats["inter_ctc_loss"], direct)
    ctc = 0.75 * stats["ctc_loss"] + 0.25 * direct
    assert torch.allclose(loss, 0.5 * stats["att_loss"] + 0.5 * ctc)
    cfg.loss.inter_ctc_layers = [3]  # the last layer is the final CTC already
    with pytest.raises(ValueError, match="inter_ctc_layers must be encoder layers 1..2"):
        ASRModule(cfg, Recognizer(cfg, CharTokenizer.build(["abc"])))
    cfg.loss.inter_ctc_layers, cfg.loss.ctc_weight = [1], 0.0
    with pytest.raises(ValueError, match="ctc_weight > 0"):
        ASRModule(cfg, Recognizer(cfg, CharTokenizer.build(["abc"])))


def test_utterance_cmvn_statistics_and_model_file(tone_corpus, tmp_path):
    from asr.data.dataset import load_split
    from asr.recognizer import Recognizer, save_model
    from asr.training import compute_cmvn

    cfg = load_config(None, ["features.cmvn=utterance"])
    utts = load_split(str(tone_corpus["train"]))[:40]
    rec = Recognizer(cfg, CharTokenizer.build([u.text for u in utts]))
    compute_cmvn(rec, utts)
    assert rec.cmvn.utterance_mean and rec.cmvn.mean.abs().max() < 1e-3  # stats of mean-removed features
    wav = load_utterance(utts[0], 16000)[None]
    wav = wav + 0.01 * torch.randn(wav.shape, generator=torch.Generator().manual_seed(0))  # no band at the floor
    feats, n = rec.features(wav, torch.tensor([wav.shape[1]]))
    assert feats[0, : int(n[0])].mean(0).abs().max() < 1e-3
    louder = rec.features(wav * 3.0, torch.tensor([wav.shape[1]]))[0]  # a gain is an offset in log-mel: removed
    torch.testing.assert_close(louder, feats, atol=1e-3, rtol=0)
    loaded = load_model(save_model(tmp_path / "m.pt", rec))
    assert loaded.cmvn.utterance_mean and torch.equal(loaded.cmvn.std, rec.cmvn.std)
    with pytest.raises(ValueError, match="features.cmvn"):
        Recognizer(load_config(None, ["features.cmvn=speaker"]), rec.tokenizer)


def test_time_warp_keeps_length_and_content_range():
    torch.manual_seed(0)
    feats = torch.arange(50, dtype=torch.float32)[None, :, None].repeat(2, 1, 3)
    lengths = torch.tensor([50, 30])
    warped = time_warp(feats, lengths, max_warp=5)
    assert warped.shape == feats.shape
    assert torch.equal(warped[1, 30:], feats[1, 30:])  # padding untouched
    assert torch.all(warped[0, 1:, 0] >= warped[0, :-1, 0] - 1e-5)  # still monotonic: a warp, not a shuffle
    assert SpecAugmentConfig().time_warp == 0


@pytest.mark.slow
def test_bf16_mixed_precision_trains(tone_corpus, tmp_path):
    """`train.precision=bf16-mixed` (Lightning's autocast) trains and writes a float32 model file; on this CPU
    bf16 is emulated, so it is checked for correctness here and for speed only on GPUs."""

    class LinearDtypes(L.Callback):  # the dtypes the model's Linear layers computed in, under Lightning's autocast
        def __init__(self):
            self.seen: set = set()

        def on_train_start(self, trainer, module):
            for m in module.modules():
                if isinstance(m, torch.nn.Linear):
                    m.register_forward_hook(lambda _m, _i, out: self.seen.add(out.dtype))

    cfg = tone_config(
        tone_corpus,
        tmp_path,
        "train.max_epochs=1",
        "train.precision=bf16-mixed",
        "train.average_checkpoints=0",
        "train.attention_plots=0",
        "loss.ctc_weight=0.3",
    )
    dtypes = LinearDtypes()
    model = train(cfg, extra_callbacks=(dtypes,))
    assert torch.bfloat16 in dtypes.seen
    metrics = sorted((tmp_path / "logs").glob("version_*"))[-1] / "metrics.csv"
    losses = [float(r["train_loss"]) for r in csv.DictReader(open(metrics)) if r.get("train_loss")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    params = list(load_model(model).parameters())
    assert params and all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params)


def test_budget_schedule_warms_up_then_falls_to_zero_with_the_budget():
    spent = [0.0]
    f = budget_lambda(10, lambda: spent[0])
    assert f(0) == pytest.approx(0.1) and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(1.0)
    spent[0] = 0.25
    assert f(100) == pytest.approx(0.75)
    spent[0] = 1.3  # past the budget (the last step of a timed run): zero, never negative
    assert f(100) == 0.0


def test_budget_schedule_follows_the_wall_clock_budget(tone_corpus, tmp_path):
    # max_epochs alone would allow 200 epochs: the 0.25-minute budget is what must bring the rate down.
    cfg = tone_config(
        tone_corpus,
        tmp_path,
        "train.max_epochs=200",
        "train.max_minutes=0.25",
        "train.lr_schedule=budget",
        "train.warmup_steps=5",
        "train.log_every_n_steps=1",
        "train.average_checkpoints=0",
        "train.attention_plots=0",
    )
    train(cfg)
    metrics = sorted((tmp_path / "logs").glob("version_*"))[-1] / "metrics.csv"
    lrs = [float(r["lr"]) for r in csv.DictReader(open(metrics)) if r.get("lr")]
    peak = max(lrs)
    # At the warmup's end the rate is peak_lr times the budget left: near 1 on an idle CPU, less on a loaded one
    # (the 5 warmup steps took a fifth of the 15 s beside a training run).
    assert 0.5 * 2e-3 < peak <= 2e-3 * 1.001
    after = lrs[lrs.index(peak) :]
    assert all(b <= a for a, b in zip(after, after[1:]))  # falls steadily after the warmup ...
    assert after[-1] < 0.15 * peak  # ... and is nearly spent when the budget ends


def test_reverse_gradient_is_identity_forward_and_negated_backward():
    from asr.model.losses import reverse_gradient

    x = torch.randn(3, 4, requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.arange(4.0)).sum().backward()
    assert torch.equal(x.grad, -0.5 * torch.arange(4.0).expand(3, 4))


def test_speaker_adversary_scores_real_frames_of_known_speakers_only():
    from asr.model.losses import SpeakerAdversary

    torch.manual_seed(0)
    adversary = SpeakerAdversary(8, 3)
    memory = torch.randn(3, 5, 8)
    lengths, speakers = torch.tensor([5, 2, 4]), torch.tensor([2, 0, -1])  # the third speaker unknown
    loss, acc = adversary(memory, lengths, speakers)
    logits = adversary.net(memory)
    frames = torch.cat([logits[0, :5], logits[1, :2]])  # padding and the unknown speaker left out
    targets = torch.tensor([2] * 5 + [0] * 2)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(frames, targets))
    assert torch.allclose(acc, (frames.argmax(-1) == targets).float().mean())
    none, _ = adversary(memory, lengths, torch.tensor([-1, -1, -1]))
    assert none.item() == 0.0 and not none.isnan()


def test_speaker_adversarial_loss_trains_the_classifier_and_pushes_the_encoder_away():
    from asr.recognizer import Recognizer
    from asr.training import ASRModule

    cfg = Config()
    cfg.model.d_model, cfg.model.d_ff, cfg.model.n_encoder_layers, cfg.model.n_decoder_layers = 32, 64, 1, 1
    cfg.model.conv_channels, cfg.specaug.enabled, cfg.loss.guided_attn_weight = 8, False, 0.0
    cfg.loss.speaker_adversarial_weight = 0.3
    torch.manual_seed(0)
    module = ASRModule(cfg, Recognizer(cfg, CharTokenizer.build(["abc"])), ["bob", "", "amy"])
    assert torch.equal(module.speaker_ids, torch.tensor([1, -1, 0]))  # sorted names; "" is unknown
    assert not any(k.startswith("speaker") for k in module.model.state_dict())  # not in the model file
    tok = module.model.tokenizer
    batch = collate(
        [
            (2, torch.randn(8000) * 0.1, torch.tensor(tok.encode("ab"))),
            (0, torch.randn(6000) * 0.1, torch.tensor(tok.encode("c"))),
        ],
        tok.pad,
    )
    module.train()
    torch.manual_seed(1)
    loss, memory, lengths, stats = module._forward(batch)
    adv, _ = module.speaker_adversary(memory, lengths, torch.tensor([0, 1]))
    assert torch.allclose(stats["speaker_adv_loss"], adv)
    asr_loss = loss - 0.3 * stats["speaker_adv_loss"]
    assert torch.allclose(asr_loss, 0.7 * stats["att_loss"] + 0.3 * stats["ctc_loss"])
    # The classifier descends its loss; the encoder gets the reversed gradient of it.
    head = module.speaker_adversary.net[0].weight
    enc = next(module.model.network.encoder.parameters())
    g_head, g_enc = torch.autograd.grad(adv, [head, enc], retain_graph=True)
    logits = module.speaker_adversary.net(memory).transpose(1, 2)  # the same classifier without the reversal
    targets = torch.tensor([0, 1])[:, None].expand(2, memory.shape[1])
    targets = torch.where(torch.arange(memory.shape[1]) < lengths[:, None], targets, -100)
    (g_plain,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, targets), [enc], retain_graph=True)
    assert g_enc.abs().sum() > 0 and torch.allclose(g_enc, -g_plain, atol=1e-7)
    torch.manual_seed(1)
    module.zero_grad()
    module._forward(batch)[0].backward()
    assert torch.allclose(head.grad, 0.3 * g_head, atol=1e-6)
    params = module.configure_optimizers()["optimizer"].param_groups[0]["params"]
    assert any(p is head for p in params)
    module.eval()
    assert "speaker_adv_loss" not in module._forward(batch)[3]  # training only
    with pytest.raises(ValueError, match="at least two speakers"):
        ASRModule(cfg, Recognizer(cfg, CharTokenizer.build(["abc"])), ["bob", "bob", ""])


def test_ema_update_ramps_up_to_the_decay():
    from asr.training import ema_update

    ema, param = [torch.zeros(3)], [torch.ones(3)]
    ema_update(ema, param, decay=0.99, step=0)  # d = min(0.99, 1 / 10): the start is mostly forgotten at once
    assert torch.allclose(ema[0], torch.full((3,), 0.9))
    ema_update(ema, param, decay=0.99, step=10_000)  # d = 0.99 (the ramp is past it)
    assert torch.allclose(ema[0], torch.full((3,), 0.9 + 0.1 * 0.01))
    assert torch.equal(param[0], torch.ones(3))  # the weights are read, never written


def test_ema_checkpoint_keys_are_taken_out_on_load_and_restore_the_average():
    from asr.recognizer import Recognizer
    from asr.training import ASRModule

    cfg = Config()
    cfg.model.d_model, cfg.model.d_ff, cfg.model.n_encoder_layers, cfg.model.n_decoder_layers = 32, 64, 1, 1
    cfg.model.conv_channels, cfg.train.ema_decay = 8, 0.9
    module = ASRModule(cfg, Recognizer(cfg, CharTokenizer.build(["abc"])))
    named = list(module.model.named_parameters())
    state = {f"model.{k}": v for k, v in module.model.state_dict().items()}
    state.update({f"ema.{n}": torch.full_like(p, 0.5) for n, p in named})
    checkpoint = {"state_dict": state}
    module.on_load_checkpoint(checkpoint)
    assert not any(k.startswith("ema.") for k in checkpoint["state_dict"])  # Lightning loads the rest strictly
    assert len(module.ema) == len(named) and all(torch.equal(e, torch.full_like(e, 0.5)) for e in module.ema)
    module.on_save_checkpoint(saved := {"state_dict": dict(checkpoint["state_dict"])})
    assert all(torch.equal(saved["state_dict"][f"ema.{n}"], torch.full_like(p, 0.5)) for n, p in named)
    with pytest.raises(ValueError, match="ema_decay"):
        cfg.train.ema_decay = 1.0
        ASRModule(cfg, Recognizer(cfg, CharTokenizer.build(["abc"])))


def test_ema_weights_are_validated_and_exported_and_training_goes_on_from_the_raw_ones(tone_corpus, tmp_path):
    cfg = tone_config(
        tone_corpus,
        tmp_path,
        "train.max_epochs=2",
        "train.ema_decay=0.9",
        "train.average_checkpoints=0",
        "train.attention_plots=0",
    )
    train(cfg)
    ckpts = {p: torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in
             sorted((tmp_path / "checkpoints").glob("*.ckpt"))}  # fmt: skip
    network = load_model(tmp_path / "model.pt").network.state_dict()
    names = [k for k in network if f"ema.network.{k}" in ckpts[tmp_path / "checkpoints" / "last.ckpt"]]
    assert names and len(names) == len(list(load_model(tmp_path / "model.pt").network.parameters()))
    last = ckpts[tmp_path / "checkpoints" / "last.ckpt"]
    # Saved after the last validation, which ran on the average: the raw weights were put back before the save.
    assert any(not torch.equal(last[f"model.network.{k}"], last[f"ema.network.{k}"]) for k in names)

    def same(state: dict, prefix: str) -> bool:
        return all(torch.equal(network[k], state[f"{prefix}.network.{k}"]) for k in names)

    # The model file is the average of a checkpoint, never its raw weights.
    assert any(same(s, "ema") for s in ckpts.values())
    assert not any(same(s, "model") for s in ckpts.values())
