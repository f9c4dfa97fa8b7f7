#!/usr/bin/env python
"""Feature extraction throughput, in audio-seconds per second on ONE CPU thread, over padded batches.

Ours (asr.features.Fbank / MFCC, batched) against, in the same run and on the same audio:
torchaudio.compliance.kaldi.fbank (per utterance), torchaudio.transforms.MelSpectrogram (batched) + log and
librosa.feature.melspectrogram (per utterance) + log. Each batch holds utterances of random lengths padded to the
longest; throughput counts true audio seconds, so work spent on padding counts against a method.

    python scripts/bench_features.py                 # 16 utterances of 2-8 s, best of 10 repetitions
    python scripts/bench_features.py --batch 32 --min-s 1 --max-s 15 --reps 10
    python scripts/bench_features.py --resample --threads 2   # asr.audio.resample against torchaudio's, per utterance

The resampling figures count input audio-seconds per second, per utterance (as the data loader calls it), for the
ratios speech needs: speed perturbation 0.9 and 1.1 (14.4 and 17.6 kHz read as 16 kHz), 8 -> 16 kHz, 44.1 -> 16 kHz.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def make_batch(
    batch: int, min_s: float, max_s: float, sample_rate: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy chirps of random lengths, zero-padded: wav (batch, samples), lengths (batch,)."""
    g = torch.Generator().manual_seed(seed)
    lengths = (torch.rand(batch, generator=g) * (max_s - min_s) + min_s).mul(sample_rate).long()
    t = torch.arange(int(lengths.max())) / sample_rate
    f0 = 100 + 400 * torch.rand(batch, 1, generator=g)
    wav = 0.3 * torch.sin(2 * torch.pi * (f0 + 500 * t) * t) + 0.02 * torch.randn(batch, t.numel(), generator=g)
    wav = wav * (torch.arange(t.numel()) < lengths[:, None])
    return wav.float(), lengths


def measure(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """(best, median) wall seconds over `reps` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def blas_threads(n: int) -> contextlib.AbstractContextManager:
    """Limit numpy/scipy BLAS and OpenMP pools to n threads (threadpoolctl comes with librosa's scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl missing; numpy BLAS may use more threads than --threads")
        return contextlib.nullcontext()
    return threadpool_limits(limits=n)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="utterances per padded batch (default 16)")
    p.add_argument("--min-s", type=float, default=2.0, help="shortest utterance, seconds (default 2)")
    p.add_argument("--max-s", type=float, default=8.0, help="longest utterance, seconds (default 8)")
    p.add_argument("--reps", type=int, default=10, help="timed repetitions per method; best and median shown")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the per-thread figure)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-librosa", action="store_true", help="skip librosa (the slowest reference)")
    p.add_argument("--resample", action="store_true", help="time resampling instead of feature extraction")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    import torchaudio
    import torchaudio.compliance.kaldi as kaldi

    from asr.config import FeatureConfig
    from asr.features import MFCC, Fbank

    cfg = FeatureConfig()
    sr = cfg.sample_rate
    wav, lengths = make_batch(args.batch, args.min_s, args.max_s, sr, args.seed)
    audio_s = lengths.sum().item() / sr
    utts = [wav[i, : int(n)] for i, n in enumerate(lengths)]
    if args.resample:
        bench_resample(utts, audio_s, args.reps)
        return

    fbank, mfcc = Fbank(cfg).eval(), MFCC(FeatureConfig(kind="mfcc")).eval()
    melspec = torchaudio.transforms.MelSpectrogram(
        sample_rate=sr,
        n_fft=cfg.n_fft,
        win_length=400,
        hop_length=160,
        f_min=cfg.low_freq,
        n_mels=cfg.n_mels,
        center=False,
        mel_scale="htk",
    )

    methods: dict[str, Callable[[], object]] = {
        "asr Fbank (batched)": lambda: fbank(wav, lengths),
        "asr MFCC+deltas (batched)": lambda: mfcc(wav, lengths),
        "torchaudio kaldi.fbank (per utt)": lambda: [kaldi.fbank(u[None], num_mel_bins=cfg.n_mels) for u in utts],
        "torchaudio MelSpectrogram+log (batched)": lambda: melspec(wav).clamp_min(1e-10).log(),
    }
    if not args.no_librosa:
        import librosa
        import numpy as np

        np_utts = [u.numpy() for u in utts]

        def run_librosa() -> list:
            return [
                np.log(
                    np.maximum(
                        librosa.feature.melspectrogram(
                            y=u,
                            sr=sr,
                            n_fft=cfg.n_fft,
                            win_length=400,
                            hop_length=160,
                            center=False,
                            n_mels=cfg.n_mels,
                            fmin=cfg.low_freq,
                            htk=True,
                        ),
                        1e-10,
                    )
                )
                for u in np_utts
            ]

        methods["librosa melspectrogram+log (per utt)"] = run_librosa

    print(
        f"{args.batch} utterances, {args.min_s:g}-{args.max_s:g} s ({audio_s:.1f} audio-s, padded to "
        f"{wav.shape[1] / sr:.2f} s), torch threads={torch.get_num_threads()}, best/median of {args.reps}"
    )
    load = os.getloadavg()[0]
    if load > 0.5:  # a shared machine: other processes take CPU time from the timed calls
        print(f"note: 1-min load average {load:.1f} on {os.cpu_count()} CPUs before timing; figures may be low")
    # numpy's BLAS (librosa's mel matmul) has its own thread pool, which torch.set_num_threads does not reach.
    with blas_threads(args.threads), torch.inference_mode():
        results = {name: measure(fn, args.reps) for name, fn in methods.items()}
    ref = audio_s / results["asr Fbank (batched)"][0]
    print(f"{'method':42s} {'best audio-s/s':>15s} {'median':>10s} {'vs Fbank':>9s}")
    for name, (best, median) in results.items():
        speed = audio_s / best
        print(f"{name:42s} {speed:15,.0f} {audio_s / median:10,.0f} {speed / ref:8.2f}x")


def bench_resample(utts: list[torch.Tensor], audio_s: float, reps: int) -> None:
    """asr.audio.resample against torchaudio's Resample transform (kernel built once, as a data loader would keep
    it) and torchaudio.functional.resample (kernel built per call), one utterance at a time. Every call trims the
    utterances by a few more samples: in training no two utterances have the same length, and torchaudio's conv1d
    pays for each new input shape (oneDNN builds a kernel per shape), which repeating the same lengths would hide."""
    import itertools

    import torchaudio

    from asr.audio import resample

    print(
        f"resampling {len(utts)} utterances ({audio_s:.1f} audio-s) one at a time, torch threads="
        f"{torch.get_num_threads()}, best of {reps}"
    )
    print(f"{'ratio':>14s} {'asr resample':>13s} {'Resample':>10s} {'functional':>11s} {'vs Resample':>12s}")
    for orig, new in ((14400, 16000), (17600, 16000), (8000, 16000), (44100, 16000)):
        transform = torchaudio.transforms.Resample(orig, new)
        trims = itertools.count(1)

        def fresh() -> list[torch.Tensor]:  # lengths no earlier call has used
            k = next(trims)
            return [u[:-k] for u in utts]

        best = {
            name: measure(lambda: [fn(u) for u in fresh()], reps)[0]
            for name, fn in (
                ("asr", lambda u: resample(u, orig, new)),
                ("transform", transform),
                ("functional", lambda u: torchaudio.functional.resample(u, orig, new)),
            )
        }
        print(
            f"{orig:>6d}->{new:<6d} {audio_s / best['asr']:13,.0f} {audio_s / best['transform']:10,.0f} "
            f"{audio_s / best['functional']:11,.0f} {best['transform'] / best['asr']:11.1f}x"
        )


if __name__ == "__main__":
    main()
