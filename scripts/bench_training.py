"""Training throughput: audio-seconds trained per wall-second, Lightning vs a plain PyTorch loop on the same model.

    python scripts/bench_training.py --manifest data/fsdd/train.jsonl --steps 30 [--config recipes/fsdd/conf.yaml]
    python scripts/bench_training.py --device cuda --precision bf16-mixed data.max_frames_per_batch=40000   # a GPU

Both runs use the same batches (length-bucketed, from the manifest), the same model and loss (rooms and noise when
configured, features, CMVN, SpecAugment, encoder, decoder, CTC, guided attention), and Adam. The plain loop is the
reference: the ratio tells the Lightning overhead. Also prints the peak resident memory of the process (and on CUDA
the peak GPU memory) and a per-stage time breakdown (from a separate pass). On CUDA the timers wait for the GPU
(`torch.cuda.synchronize`).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.config import load_config  # noqa: E402
from asr.data.dataset import SpeechDataset, collate, load_split  # noqa: E402
from asr.data.sampler import BucketBatchSampler  # noqa: E402
from asr.recognizer import Recognizer  # noqa: E402
from asr.text import CharTokenizer  # noqa: E402
from asr.training import ASRModule, compute_cmvn  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="recipes/fsdd/conf.yaml")
    p.add_argument("--manifest", default=None, help="training manifest (default: the config's)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run (after 3 warm-up steps)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--precision", default="32-true", help="32-true | bf16-mixed (Lightning's names; bf16 for GPUs)")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also profile N more steps on batch shapes not seen before and print the costliest ops",
    )
    p.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    args = p.parse_args(argv)
    if args.precision not in ("32-true", "bf16-mixed"):
        raise ValueError(f"--precision must be 32-true or bf16-mixed, got {args.precision!r}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    utts = load_split(args.manifest or cfg.data.train_manifest, cfg.data.max_duration)
    tok = CharTokenizer.build(u.text for u in utts)
    torch.manual_seed(0)
    rec = Recognizer(cfg, tok)
    compute_cmvn(rec, utts[:300])
    module = ASRModule(cfg, rec)
    dataset = SpeechDataset(utts, tok, cfg.features.sample_rate, cfg.data.speed_perturb)
    sampler = BucketBatchSampler([u.duration for u in utts], cfg.data.max_frames_per_batch, cfg.data.max_batch_size)
    start = time.perf_counter()  # data loading: read + speed perturbation + pad, as the DataLoader does (main process)
    batches = [collate([dataset[i] for i in b], tok.pad) for _, b in zip(range(args.steps + 3), sampler)]
    load_s = (time.perf_counter() - start) / len(batches)
    sampler.set_epoch(1)  # another batch order: batches (and so shapes) the timed runs do not have
    unseen = [collate([dataset[i] for i in b], tok.pad) for _, b in zip(range(args.profile), sampler)]
    module.to(device)
    cuda = device.type == "cuda"

    def clock() -> float:  # wall time once the GPU has finished what was queued
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def autocast():  # what Lightning's "bf16-mixed" does around the forward pass
        if args.precision == "bf16-mixed":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    audio_s = sum(float(b.wav_lengths.sum()) for b in batches[3:]) / cfg.features.sample_rate
    n_params = sum(p.numel() for p in rec.network.parameters())
    print(
        f"model {n_params / 1e6:.2f} M parameters, {args.steps} steps, {audio_s:.0f} audio-s, "
        f"padding {100 * sampler.padding_fraction():.1f}%, threads {torch.get_num_threads()}, "
        f"{args.device} {torch.cuda.get_device_name(device) if cuda else ''} {args.precision}"
    )

    # Plain PyTorch: the same forward/loss, Adam, clipping. Three passes over the batches. The first two time whole
    # steps (on CUDA one wait per step keeps the GPU's queue full): the first meets each batch shape for the first
    # time, as training mostly does (bucketed batches differ in length), and pays the per-shape kernel choices; the
    # second repeats the shapes. The third waits after every stage for the breakdown (costs a GPU 15-25%).
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    # On the device up front, so the plain loop times the steps alone (Lightning copies each batch in its loop);
    # on a GPU the batches held there add to the peak memory reported.
    device_batches = [type(b)(**{k: t.to(device) for k, t in vars(b).items()}) for b in batches]

    def step(b) -> list[float]:  # seconds in each stage; all zeros when not staged
        with autocast():
            loss = module._forward(b)[0]
        t1 = clock() if staged else 0.0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = clock() if staged else 0.0
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.train.grad_clip)
        opt.step()
        return [t1, t2]

    def timed_pass() -> float:  # seconds for the batches after the 3 warm-up steps
        for i, b in enumerate(device_batches):
            if i == 3:
                start = clock()
            step(b)
        return clock() - start

    staged = False
    first = timed_pass()
    plain = timed_pass()
    print(
        f"plain PyTorch loop: {audio_s / plain:7.1f} audio-s/s  ({plain:.1f} s); "
        f"first visit of each batch shape: {audio_s / first:.1f} audio-s/s"
    )
    print(f"  data loading: {1000 * load_s:.1f} ms per batch = {100 * load_s / (plain / args.steps):.1f}% of a step")

    staged = True
    # "rooms+noise" and "features" are extra no-grad passes timed on their own; forward+loss does both again, as
    # training does.
    extra = ("rooms+noise", "features")
    stages = dict.fromkeys((*extra, "forward+loss", "backward", "optimizer"), 0.0)
    for b in device_batches[3:]:
        t0 = clock()
        with torch.no_grad():
            module.wave_augment(b.wavs, b.wav_lengths)
            t1 = clock()
            module.model.features(b.wavs, b.wav_lengths)
        t2 = clock()
        t3, t4 = step(b)
        t5 = clock()
        for k, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            stages[k] += dt
    train_time = sum(v for k, v in stages.items() if k not in extra)
    print(
        "  "
        + ", ".join(f"{k} {100 * stages[k] / train_time:.0f}%" for k in extra)
        + " of a step; "
        + ", ".join(f"{k} {100 * v / train_time:.0f}%" for k, v in stages.items() if k not in extra)
    )

    # Lightning: the same module, the same batches (shapes seen before), Trainer.fit.
    import lightning as L

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 3:
                self.start = clock()

        def on_train_end(self, trainer, pl_module):
            self.end = clock()

    timer = Timer()
    trainer = L.Trainer(
        max_steps=len(batches),
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=cfg.train.grad_clip,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    light = timer.end - timer.start
    print(
        f"Lightning Trainer:  {audio_s / light:7.1f} audio-s/s  ({light:.1f} s), "
        f"overhead {100 * (light / plain - 1):+.1f}%"
    )
    print(f"peak resident memory: {peak_rss_gb():.2f} GB")
    if cuda:
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated(device) / 1024**3:.2f} GB")
    if unseen:  # where a step on a new batch shape spends its time (kernel choices, allocations, the ops)
        from torch.profiler import ProfilerActivity, profile

        staged = False
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for b in unseen:
                step(type(b)(**{k: t.to(device) for k, t in vars(b).items()}))
            clock()
        print(f"profile of {len(unseen)} steps on new batch shapes:")
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=20, max_name_column_width=60))


if __name__ == "__main__":
    main()
