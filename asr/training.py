"""Training with PyTorch Lightning: data module, the LightningModule, and `train(cfg)` which ends in a model file.

    train(cfg) -> path of `<out_dir>/model.pt` (best or averaged checkpoint weights, self-contained)

Per batch: waveforms -> rooms and noise (training only) -> features (on the training device) -> CMVN -> SpecAugment
(training only) -> encoder -> decoder under teacher forcing (input <sos> y1..yn, target y1..yn <eos>) ->
label-smoothed cross-entropy. Options: joint CTC, guided attention on the cross-attention, scheduled sampling,
speaker-adversarial training (a speaker classifier on the encoder frames behind a gradient reversal), speed
perturbation (in the data path), simulated rooms and noise (asr/augment.py) and VTLP (a random frequency warp per
utterance, inside the feature extractor).
Adam with a linear warmup, then inverse square-root decay (Noam) or linear decay to zero at the end of the training
budget (`train.lr_schedule: budget`: epochs or wall-clock minutes, whichever runs out first), gradient clipping,
validation loss and greedy WER every epoch, attention plots, best-k and last checkpoints (last.ckpt also every N
steps, so `--resume` continues mid-epoch), checkpoint averaging into the final model, an exponential moving average
of the weights (`train.ema_decay`: validated and exported instead of the raw weights), any Lightning strategy (DDP).

Faults: checkpoints are written atomically (AtomicCheckpointIO: a temporary file beside the target, renamed over it),
so a kill or a full disk leaves the previous checkpoint whole; `--resume` falls back to the newest readable
checkpoint when last.ckpt is damaged (find_resume_checkpoint); a full disk ends training with one OutputError
naming the file (the command line's "error: PATH: cannot write it (no space left on the device) ...").
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import math
import random
import time
import warnings
import zipfile
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor
from torch.utils.data import DataLoader

from asr.augment import WaveformAugment, uniform
from asr.config import Config
from asr.data.dataset import Batch, SpeechDataset, collate, load_split, load_utterance
from asr.data.manifest import Utterance
from asr.data.sampler import BucketBatchSampler
from asr.decoding import greedy_search
from asr.decoding.search import max_output_lengths
from asr.features import CMVNStats, SpecAugment
from asr.metrics import error_rates
from asr.model import ctc_loss, guided_attention_loss, label_smoothed_nll
from asr.model.losses import SpeakerAdversary
from asr.model_file import ZIP_MAGIC, describe
from asr.outputs import OutputError, atomic_open, check_output
from asr.recognizer import Recognizer, pad_waveforms, save_model
from asr.text import CharTokenizer, build_tokenizer, tokenizer_from_dict

log = logging.getLogger("asr")


class EpochBucketBatchSampler(BucketBatchSampler):
    """A BucketBatchSampler that takes its epoch from `epoch()` (the trainer's) as each pass over the data begins.

    Lightning calls set_epoch on a DataLoader's sampler and on its batch sampler's `.sampler`, never on a batch
    sampler itself. Left to that, every epoch had epoch 0's batch order, and a mid-epoch resume, which skips the
    trained batches only in the epoch it was interrupted in, trained the epoch's first batches again instead of
    its remaining ones (tests/test_training_faults.py: a resumed run's weights differed from an uninterrupted one)."""

    def __init__(self, *args: Any, epoch: Callable[[], int], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._trainer_epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        self.set_epoch(self._trainer_epoch())
        return super().__iter__()


class ASRDataModule(L.LightningDataModule):
    """Length-bucketed train/dev loaders. Its state (epoch, batches trained in it) goes into every checkpoint, so a
    run resumed from a mid-epoch checkpoint continues with the next batch rather than repeating the epoch."""

    def __init__(self, cfg: Config, tokenizer: CharTokenizer, train_utts: list[Utterance], dev_utts: list[Utterance]):
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        sr, d = cfg.features.sample_rate, cfg.data
        self.train_set = SpeechDataset(train_utts, tokenizer, sr, d.speed_perturb)
        self.dev_set = SpeechDataset(dev_utts, tokenizer, sr)
        self._resume: dict | None = None

    def _loader(self, dataset: SpeechDataset, shuffle: bool) -> DataLoader:
        d = self.cfg.data
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        make = BucketBatchSampler
        if shuffle and self.trainer is not None:  # the epoch Lightning gives samplers: the one in progress
            make = partial(
                EpochBucketBatchSampler, epoch=lambda: self.trainer.fit_loop.epoch_progress.current.processed
            )
        sampler = make(
            [u.duration for u in dataset.utts],
            d.max_frames_per_batch,
            d.max_batch_size,
            shuffle=shuffle,
            seed=self.cfg.train.seed,
            rank=rank,
            world_size=world,
        )
        if shuffle:
            padding = 100 * sampler.padding_fraction()
            log.info(
                "train batches: %d per epoch (rank %d of %d), padding %.1f%% of frames",
                len(sampler),
                rank,
                world,
                padding,
            )
            if self.trainer is not None and self.trainer.logger is not None:
                self.trainer.logger.log_metrics({"padding_percent": padding}, step=0)
            if self._resume is not None:
                sampler.resume(self._resume["epoch"], self._resume["batches_done"])
                self._resume = None
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=partial(collate, pad=self.tokenizer.pad),
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dev_set, shuffle=False)

    def state_dict(self) -> dict:
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches_done": progress.processed}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state or None


def noam_lambda(warmup: int):
    """Multiplier on the peak learning rate: linear warmup to 1 at `warmup` steps, then sqrt(warmup / step)."""

    def f(step: int) -> float:
        step = max(step, 1)
        return min(step / warmup, math.sqrt(warmup / step))

    return f


def budget_lambda(warmup: int, progress: Callable[[], float]):
    """Multiplier on the peak learning rate: linear warmup to 1 at `warmup` steps, then linear decay to 0 as
    `progress()` (the fraction of the training budget spent, 0..1) reaches 1.

    Under a fixed budget a schedule that anneals to zero exactly when the budget runs out converges further than
    one that decays by step count alone (Li et al. 2020, "Budgeted training"): inverse square root still sits at
    a third of its peak after ten epochs, so the last epochs never settle.
    """

    def f(step: int) -> float:
        if step < warmup:
            return max(step, 1) / warmup
        return min(1.0, max(0.0, 1.0 - progress()))

    return f


def teacher_forcing_targets(tokens: Tensor, lengths: Tensor, sos: int, eos: int, pad: int) -> tuple[Tensor, Tensor]:
    """tokens (batch, n) -> decoder input <sos> y (batch, n+1) and target y <eos> (batch, n+1), pad elsewhere."""
    b, n = tokens.shape
    ys_in = torch.full((b, n + 1), pad, dtype=tokens.dtype, device=tokens.device)
    ys_in[:, 0] = sos
    ys_in[:, 1:] = tokens
    ys_out = torch.full_like(ys_in, pad)
    ys_out[:, :n] = tokens
    ys_out[torch.arange(b, device=tokens.device), lengths] = eos
    return ys_in, ys_out


def ema_update(ema: list[Tensor], params: list[Tensor], decay: float, step: int) -> None:
    """One step of the weights' moving average, in place: ema = d * ema + (1 - d) * params. d ramps up as
    (1 + step) / (10 + step) to `decay`, so the first steps' weights (near the random start) fade fast."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema, params):
            e.lerp_(p.detach(), 1.0 - d)


class ASRModule(L.LightningModule):
    """The training objective around a Recognizer. `train_speakers`: the training utterances' speakers, in dataset
    order ("" where a manifest line has none), for loss.speaker_adversarial_weight."""

    def __init__(self, cfg: Config, recognizer: Recognizer, train_speakers: list[str] | None = None):
        super().__init__()
        self.cfg, self.model = cfg, recognizer
        self.speaker_adversary = None
        if cfg.loss.speaker_adversarial_weight > 0:
            names = sorted({s for s in train_speakers or [] if s})
            if len(names) < 2:
                raise ValueError(
                    "loss.speaker_adversarial_weight needs at least two speakers in the training manifest's "
                    f"'speaker' field, found {len(names)}"
                )
            index = {name: i for i, name in enumerate(names)}
            # (train utterances,) class id of each, -1 where unknown; rebuilt from the manifest on --resume
            ids = torch.tensor([index.get(s, -1) for s in train_speakers], dtype=torch.long)
            self.register_buffer("speaker_ids", ids, persistent=False)
            self.speaker_adversary = SpeakerAdversary(cfg.model.d_model, len(names))
        self.specaug = SpecAugment(cfg.specaug, cfg.features.dim)
        d = cfg.data
        self.wave_augment = WaveformAugment(cfg.features.sample_rate, d.reverb_rt60, d.reverb_prob, d.noise_snr)
        if d.vtlp and not (len(d.vtlp) == 2 and 0 < d.vtlp[0] <= d.vtlp[1]):
            raise ValueError(f"data.vtlp must be [min, max] warp factors with 0 < min <= max, got {d.vtlp}")
        lc, n_layers = cfg.loss, cfg.model.n_encoder_layers
        if any(not isinstance(i, int) or not 1 <= i < n_layers for i in lc.inter_ctc_layers):
            raise ValueError(
                f"loss.inter_ctc_layers must be encoder layers 1..{n_layers - 1}, got {lc.inter_ctc_layers}"
            )
        if lc.inter_ctc_layers and lc.ctc_weight <= 0:
            raise ValueError("loss.inter_ctc_layers needs the CTC loss on: set loss.ctc_weight > 0")
        if not 0 <= cfg.train.ema_decay < 1:
            raise ValueError(f"train.ema_decay must be in [0, 1) (0 = off), got {cfg.train.ema_decay}")
        # train.ema_decay: the average of each model parameter (set up when fit starts, or from the checkpoint),
        # and the raw weights put aside while validation runs on the average.
        self.ema: list[Tensor] | None = None
        self._raw: list[Tensor] | None = None
        self._val_counts: list[Tensor] = []
        self._last_step_time: float | None = None

    def _forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, dict]:
        """Teacher-forced pass: returns loss, encoder output, its lengths, and stats to log."""
        tok = self.model.tokenizer
        warp = None
        if self.training and self.cfg.data.vtlp:  # one factor per utterance, uniform in [min, max]
            warp = uniform(*self.cfg.data.vtlp, batch.wavs.shape[0], batch.wavs.device)
        wavs = self.wave_augment(batch.wavs, batch.wav_lengths)  # rooms, noise (training only)
        feats, feat_lengths = self.model.features(wavs, batch.wav_lengths, warp)  # (batch, frames, dim)
        if self.training:
            feats = self.specaug(feats, feat_lengths)
        ys_in, ys_out = teacher_forcing_targets(batch.tokens, batch.token_lengths, tok.sos, tok.eos, tok.pad)
        net, lc = self.model.network, self.cfg.loss
        out_lengths = batch.token_lengths + 1  # with <sos> in, with <eos> out
        # (batch, frames/4, d_model), and the intermediate-CTC layers' outputs (none unless asked; __init__ checked)
        memory, memory_lengths, inter = net.encode_with_intermediate(feats, feat_lengths, lc.inter_ctc_layers)
        p = self._sampling_prob()
        if p > 0:
            ys_in = self._scheduled_sampling(ys_in, memory, memory_lengths, out_lengths, p)
        guide = self._guided_weight() > 0
        logits, attn = net.decode(  # (batch, n+1, vocab), cross-attention of the guided layers
            ys_in, memory, memory_lengths, out_lengths, weight_layers=self._guided_layers if guide else ()
        )
        att_loss = label_smoothed_nll(logits, ys_out, tok.pad, lc.label_smoothing)
        real = ys_out != tok.pad
        stats = {"acc": ((logits.argmax(-1) == ys_out) & real).sum() / real.sum(), "att_loss": att_loss}
        loss = att_loss
        if lc.ctc_weight > 0:
            ctc = ctc_loss(net.ctc_log_probs(memory), memory_lengths, batch.tokens, batch.token_lengths, tok.blank)
            stats["ctc_loss"] = ctc
            if inter:  # the same head on earlier layers' outputs: (1 - w) * final CTC + w * mean intermediate CTC
                inter_ctc = torch.stack(
                    [
                        ctc_loss(net.ctc_log_probs(h), memory_lengths, batch.tokens, batch.token_lengths, tok.blank)
                        for h in inter
                    ]
                ).mean()
                ctc = (1 - lc.inter_ctc_weight) * ctc + lc.inter_ctc_weight * inter_ctc
                stats["inter_ctc_loss"] = inter_ctc
            loss = (1 - lc.ctc_weight) * att_loss + lc.ctc_weight * ctc
        if lc.nat_weight > 0:
            if not net.has_nat:
                raise ValueError("loss.nat_weight > 0 needs a non-autoregressive head: set model.nat_decoder_layers")
            nat, length = self._nat_losses(batch, memory, memory_lengths)
            loss = loss + lc.nat_weight * (nat + lc.nat_length_weight * length)
            stats.update(nat_loss=nat, nat_length_loss=length)
        if guide:
            ga = torch.stack(
                [
                    guided_attention_loss(a, out_lengths, memory_lengths, lc.guided_attn_sigma, lc.guided_attn_heads)
                    for a in attn
                    if a is not None
                ]
            ).mean()
            loss = loss + self._guided_weight() * ga
            stats["guided_attn_loss"] = ga
        if self.training and self.speaker_adversary is not None:  # batch.indices: positions in the train set
            speakers = self.speaker_ids[batch.indices.to(self.speaker_ids.device)]
            adv, acc = self.speaker_adversary(memory, memory_lengths, speakers)
            loss = loss + lc.speaker_adversarial_weight * adv
            stats.update(speaker_adv_loss=adv, speaker_acc=acc)
        return loss, memory, memory_lengths, stats

    def _nat_losses(self, batch: Batch, memory: Tensor, memory_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The NAT head's loss on a mix of its three uses, so one head serves every NAT decoder:
        - `nat-length` rows: the true length, every position a placeholder (<sos>): predict all tokens at once;
        - refinement rows (Mask-Predict / Mask-CTC): the true length, a random number of positions hidden;
        - `nat-max` rows: a length tied to the input, all placeholders: tokens, then <eos>, the rest ignored.
        Plus the length classifier's cross-entropy on the true token count."""
        tok, net = self.model.tokenizer, self.model.network
        lengths = batch.token_lengths
        max_lens = torch.maximum(max_output_lengths(memory_lengths, self.cfg.decode.max_len_ratio), lengths + 1)
        mode = torch.randint(0, 3, (len(lengths),)).tolist()  # 0 all hidden, 1 some hidden, 2 max length
        # At least one position per row: a row with nothing to attend to would give NaN attention.
        rows = [int(max_lens[i]) if m == 2 else max(int(lengths[i]), 1) for i, m in enumerate(mode)]
        width = max(rows)
        inputs = torch.full((len(rows), width), tok.pad, dtype=torch.long, device=memory.device)
        targets = torch.full_like(inputs, tok.pad)  # pad = ignored by the loss
        for i, (m, n, row) in enumerate(zip(mode, lengths.tolist(), rows)):
            y = batch.tokens[i, :n]
            if m == 1 and n > 0:
                hide = torch.randperm(n, device=memory.device)[: int(torch.randint(1, n + 1, (1,)))]
                inputs[i, :n] = y
                inputs[i, hide] = tok.sos
                targets[i, hide] = y[hide]
            else:
                inputs[i, :row] = tok.sos
                targets[i, :n] = y
                if m == 2:
                    targets[i, n] = tok.eos
        logits = net.nat_logits(inputs, torch.tensor(rows, device=memory.device), memory, memory_lengths)
        nat_loss = label_smoothed_nll(logits, targets, tok.pad, self.cfg.loss.label_smoothing)
        length_loss = F.cross_entropy(
            net.nat_length_logits(memory, memory_lengths).float(), lengths.clamp(max=self.cfg.model.nat_max_length)
        )
        return nat_loss, length_loss

    def _sampling_prob(self) -> float:
        lc = self.cfg.loss
        if not self.training or lc.scheduled_sampling <= 0 or self.current_epoch < lc.scheduled_sampling_start:
            return 0.0
        ramp = (self.current_epoch - lc.scheduled_sampling_start + 1) / max(lc.scheduled_sampling_ramp, 1)
        return lc.scheduled_sampling * min(1.0, ramp)

    @torch.no_grad()
    def _scheduled_sampling(
        self, ys_in: Tensor, memory: Tensor, memory_lengths: Tensor, out_lengths: Tensor, p: float
    ) -> Tensor:
        """Two-pass scheduled sampling: a teacher-forced pass predicts every position at once; each input token
        after <sos> is then replaced, with probability p, by the prediction for its position."""
        pred = self.model.network.decode(ys_in, memory, memory_lengths, out_lengths)[0].argmax(-1)  # (batch, n+1)
        swap = torch.rand(ys_in.shape, device=ys_in.device) < p
        swap[:, 0] = False  # <sos> stays
        mixed = ys_in.clone()
        mixed[:, 1:] = torch.where(swap[:, 1:], pred[:, :-1], ys_in[:, 1:])
        pad = self.model.tokenizer.pad
        return torch.where(ys_in == pad, ys_in, mixed)

    @property
    def _guided_layers(self) -> list[int]:
        n = self.cfg.model.n_decoder_layers
        return [i % n for i in self.cfg.loss.guided_attn_layers] or list(range(n))

    def _guided_weight(self) -> float:
        lc = self.cfg.loss
        return lc.guided_attn_weight * lc.guided_attn_decay**self.current_epoch

    def training_step(self, batch: Batch | None, batch_idx: int):
        if batch is None:  # every file of the batch was unreadable (already reported)
            return None
        loss, _, _, stats = self._forward(batch)
        now = time.perf_counter()
        if self._last_step_time is not None:
            audio_s = float(batch.wav_lengths.sum()) / self.cfg.features.sample_rate
            self.log("audio_s_per_s", audio_s / (now - self._last_step_time), batch_size=len(batch))
        self._last_step_time = now
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch))
        for name, value in stats.items():
            self.log(f"train_{name}", value, batch_size=len(batch))
        self.log("lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, batch_size=len(batch))
        return loss

    def on_train_epoch_start(self) -> None:
        self._last_step_time = None

    def on_fit_start(self) -> None:
        if self.cfg.train.ema_decay > 0 and self.ema is None:  # not restored from a checkpoint: start at the weights
            self.ema = [p.detach().clone() for p in self.model.parameters()]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end: a mid-epoch last.ckpt (a callback's on_train_batch_end, which
        # runs first) then holds the average of the same step as the weights, so --resume continues it exactly.
        if self.ema is not None:
            ema_update(self.ema, list(self.model.parameters()), self.cfg.train.ema_decay, self.trainer.global_step)

    def on_validation_epoch_start(self) -> None:
        if self.ema is not None:  # validate (and rank checkpoints by) the average the model file will hold
            params = list(self.model.parameters())
            self._raw = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, e in zip(params, self.ema):
                    p.copy_(e)

    def _restore_raw_weights(self) -> None:
        if self._raw is not None:
            with torch.no_grad():
                for p, r in zip(self.model.parameters(), self._raw):
                    p.copy_(r)
            self._raw = None

    def validation_step(self, batch: Batch | None, batch_idx: int) -> None:
        if batch is None:
            return
        loss, memory, memory_lengths, stats = self._forward(batch)
        tok = self.model.tokenizer
        hyps = greedy_search(
            self.model.network,
            memory,
            memory_lengths,
            tok.sos,
            tok.eos,
            self.cfg.decode.max_len_ratio,
            banned=(tok.blank, tok.pad, tok.sos),
        )
        refs = [tok.decode(t[:n]) for t, n in zip(batch.tokens.tolist(), batch.token_lengths.tolist())]
        er = error_rates(refs, [tok.decode(h.tokens) for h in hyps])
        self._val_counts.append(
            torch.tensor(
                [er.substitutions + er.deletions + er.insertions, er.ref_words, er.char_errors, er.ref_chars],
                dtype=torch.float64,
            )
        )
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)
        self.log("val_acc", stats["acc"], batch_size=len(batch), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        counts = torch.stack(self._val_counts).sum(0) if self._val_counts else torch.zeros(4, dtype=torch.float64)
        self._val_counts.clear()
        if self.trainer.world_size > 1:
            counts = self.all_gather(counts.to(self.device)).sum(0).cpu()
        self.log("val_wer", 100.0 * float(counts[0] / counts[1].clamp(min=1)), prog_bar=True)
        self.log("val_cer", 100.0 * float(counts[2] / counts[3].clamp(min=1)))
        if self.cfg.train.attention_plots > 0 and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._plot_attention()
        # Before the checkpoint callbacks (on_validation_end) save: checkpoints hold the raw weights and the average.
        self._restore_raw_weights()

    @torch.no_grad()
    def _plot_attention(self) -> None:
        """Cross-attention maps (heads averaged, one column per decoder layer) of the first dev utterances, to a
        PNG under <out_dir>/attention/ and to TensorBoard when that is the logger: a near-diagonal, monotonic map
        is what guided attention aims for."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        dev = self.trainer.datamodule.dev_set
        items = [x for x in (dev[i] for i in range(min(self.cfg.train.attention_plots, len(dev)))) if x is not None]
        if not items:
            return
        batch = collate(items, self.model.tokenizer.pad)
        batch = Batch(
            *(
                t.to(self.device)
                for t in (batch.wavs, batch.wav_lengths, batch.tokens, batch.token_lengths, batch.indices)
            )
        )
        tok = self.model.tokenizer
        feats, feat_lengths = self.model.features(batch.wavs, batch.wav_lengths)
        memory, memory_lengths = self.model.network.encode(feats, feat_lengths)
        ys_in, _ = teacher_forcing_targets(batch.tokens, batch.token_lengths, tok.sos, tok.eos, tok.pad)
        layers = list(range(self.cfg.model.n_decoder_layers))
        _, attn = self.model.network.decode(
            ys_in, memory, memory_lengths, batch.token_lengths + 1, weight_layers=layers
        )
        rows, cols = len(items), len(layers)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
        for i in range(rows):
            n, t = int(batch.token_lengths[i]) + 1, int(memory_lengths[i])
            for j in layers:
                ax = axes[i][j]
                ax.imshow(
                    attn[j][i].float().mean(0)[:n, :t].cpu().numpy(),
                    aspect="auto",
                    origin="lower",
                    interpolation="nearest",
                )
                ax.set_title(f"utt {i}, layer {j}", fontsize=8)
                ax.set_xlabel("encoder frame", fontsize=7)
                ax.set_ylabel("output token", fontsize=7)
        fig.suptitle(f"cross-attention, epoch {self.current_epoch}")
        fig.tight_layout()
        out = Path(self.cfg.train.out_dir) / "attention" / f"epoch{self.current_epoch:03d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=80)
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_figure("cross_attention", fig, global_step=self.global_step)
        plt.close(fig)

    def configure_optimizers(self):
        t = self.cfg.train
        params = list(self.model.parameters())  # the model's first: old checkpoints' optimizer states still fit
        if self.speaker_adversary is not None:
            params += list(self.speaker_adversary.parameters())
        opt = torch.optim.Adam(params, lr=t.peak_lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=t.weight_decay)
        if t.lr_schedule == "noam":
            schedule = noam_lambda(t.warmup_steps)
        elif t.lr_schedule == "budget":
            schedule = budget_lambda(t.warmup_steps, self._budget_spent)
        else:
            raise ValueError(f"train.lr_schedule must be 'noam' or 'budget', not {t.lr_schedule!r}")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _budget_spent(self) -> float:
        """Fraction of the training budget spent: steps of max_epochs, or minutes of max_minutes if that is further
        along (the Timer callback's elapsed time survives --resume)."""
        trainer = self.trainer
        if getattr(self, "_budget_steps", None) is None:  # Lightning recomputes it on every access
            self._budget_steps = max(int(min(trainer.estimated_stepping_batches, 2**62)), 1)
        spent = trainer.global_step / self._budget_steps
        minutes = self.cfg.train.max_minutes
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        if minutes > 0 and timer is not None:
            spent = max(spent, timer.time_elapsed() / (60 * minutes))
        return spent

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What `--resume` and the export need besides the weights (plain types: loads with weights_only=True).
        checkpoint["asr_tokenizer"] = self.model.tokenizer.to_dict()
        checkpoint["asr_config"] = self.cfg.to_dict()
        if self.ema is not None:  # "ema.<name>" beside "model.<name>": what export_model reads
            names = [n for n, _ in self.model.named_parameters()]
            checkpoint["state_dict"].update({f"ema.{n}": e.detach().clone() for n, e in zip(names, self.ema)})

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Taken out before Lightning loads the state dict (strictly: it knows no "ema." keys). A checkpoint without
        # them (an older run, or one without EMA) starts the average at its weights in on_fit_start.
        state = checkpoint["state_dict"]
        saved = {k[len("ema.") :]: state.pop(k) for k in [k for k in state if k.startswith("ema.")]}
        if self.cfg.train.ema_decay > 0 and saved:
            named = list(self.model.named_parameters())
            if all(n in saved for n, _ in named):
                self.ema = [saved[n].to(p.device, p.dtype).clone() for n, p in named]


def compute_cmvn(recognizer: Recognizer, utts: list[Utterance], max_hours: float = 3.0, seed: int = 0) -> None:
    """Global mean/variance of the training features (a seeded random subset of at most `max_hours`), after
    per-utterance mean removal when the config asks for it."""
    utts = list(utts)
    random.Random(seed).shuffle(utts)
    stats, total, sr = CMVNStats(), 0.0, recognizer.cfg.features.sample_rate
    chosen = []
    for u in utts:
        if total > max_hours * 3600:
            break
        chosen.append(u)
        total += u.duration
    chosen.sort(key=lambda u: u.duration)
    frontend = recognizer.frontend
    with torch.no_grad():
        for start in range(0, len(chosen), 32):
            wavs = []
            for u in chosen[start : start + 32]:
                try:
                    wavs.append(load_utterance(u, sr))
                except Exception as e:  # reported by the dataset later too; statistics do without it
                    log.warning("CMVN: skipping %s", e)
            if wavs:
                padded, lengths = pad_waveforms(wavs)
                feats, frames = frontend(padded, lengths)
                stats.add(recognizer.cmvn.centre(feats, frames), frames)
    mean, std = stats.mean_std()
    recognizer.cmvn.set_stats(mean, std)
    log.info("CMVN statistics from %d utterances (%.2f h)", len(chosen), total / 3600)


def _read_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through asr.outputs.atomic_open: the checkpoint goes to a temporary file
    beside the target, fsynced, then renamed over it, so a kill or a full disk leaves the previous file whole
    (last.ckpt included: ModelCheckpoint saves it through here too, it is not linked with save_last=True).

    The bytes are serialized in memory first and written by Python: torch.save's own writer reports a full disk as
    a RuntimeError without an errno, whereas here it becomes an OutputError naming the file. Training owns its
    checkpoint folder, so files there are replaced without the ownership check of other outputs."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with atomic_open(path, "wb", overwrite=True) as f:
            f.write(buffer.getbuffer())


class LastCheckpoint(ModelCheckpoint):
    """last.ckpt, the state `--resume` continues from: every N training steps (N = 0: never mid-epoch) and after
    every validation. Two changes to Lightning 2.6's own save_last, both found by tests/test_training_faults.py:

    - Not after an epoch's last batch: resumed from a checkpoint taken there, before validation, Lightning's epoch
      counters end up one behind (the next epoch counts as restarted, never as started), and a second resume from
      that run trains extra batches (two or four too many in 40 steps). The save after validation follows anyway.
    - After every epoch's validation, not only after one whose checkpoint made the best k: otherwise last.ckpt lags
      the end of an epoch that did not improve, and the last epoch's end is not in it."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    # After validation, at the hook where the best-k checkpoints are saved too (the end of the training epoch,
    # unless validation runs at other times): saved earlier, last.ckpt would hold their state from before the
    # epoch's entry, and a run resumed from it would forget that checkpoint when choosing the best.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_after_validation(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_after_validation(trainer)

    def _save_last_after_validation(self, trainer: L.Trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # not in the sanity check, not twice at one step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @property
    def state_key(self) -> str:
        # The key its state has in a checkpoint: as a plain ModelCheckpoint's, so that runs checkpointed before
        # this class existed resume with it.
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)


# What `--resume` needs of a checkpoint: weights, vocabulary, and the trainer state Lightning restores.
RESUME_KEYS = ("state_dict", "asr_tokenizer", "global_step", "optimizer_states", "loops")


def read_resume_checkpoint(path: Path) -> dict:
    """The checkpoint at `path` if `--resume` can continue from it, else ValueError naming it and saying why.

    Besides torch.load, the zip archive's CRCs are checked: torch.load checks none, and a damaged byte in the
    weights would otherwise resume silently from different weights."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != ZIP_MAGIC:
                raise ValueError("not a zip archive as torch.save writes")
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise ValueError(f"checksum mismatch in {bad}")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # OSError, BadZipFile, EOFError, UnpicklingError, RuntimeError...: all mean unreadable
        raise ValueError(f"{path}: unreadable checkpoint ({describe(e)})") from None
    missing = [k for k in RESUME_KEYS if k not in ckpt] if isinstance(ckpt, dict) else list(RESUME_KEYS)
    if missing:
        raise ValueError(f"{path}: not a training checkpoint of this toolkit (no {', '.join(missing)})")
    return ckpt


def _run_checkpoints(ckpt_dir: Path) -> list[Path]:
    """The run's checkpoints other than last.ckpt: best-k in checkpoints/, last-N epochs in checkpoints/epochs/
    (not the hidden temporary files of a write in progress)."""
    found = [*ckpt_dir.glob("*.ckpt"), *(ckpt_dir / "epochs").glob("*.ckpt")]
    return sorted(p for p in found if p.name != "last.ckpt" and not p.name.startswith("."))


def find_resume_checkpoint(ckpt_dir: Path) -> tuple[Path, dict] | None:
    """Where `--resume` continues: last.ckpt when it is readable; otherwise, with a warning naming both files, the
    readable checkpoint of the run with the highest global step (ties: the newest file). None when the folder
    holds no checkpoint at all (the caller starts from scratch, with a warning).

    When there are checkpoints but none is readable this is an error (ValueError naming the folder), not a fresh
    start: as with Kaldi's and ESPnet's resume stages, asking to continue never silently discards a run, and a
    fresh start would delete the very files someone may want to rescue."""
    last = ckpt_dir / "last.ckpt"
    others = _run_checkpoints(ckpt_dir) if ckpt_dir.is_dir() else []
    if not last.is_file() and not others:
        return None
    problems = []
    if last.is_file():
        try:
            return last, read_resume_checkpoint(last)
        except ValueError as e:
            problems.append(str(e))
    else:
        problems.append(f"{last}: missing")
    readable = []  # (global step, modification time, path); read again below, so only one is held at a time
    for path in others:
        try:
            readable.append((int(read_resume_checkpoint(path)["global_step"]), path.stat().st_mtime_ns, path))
        except (ValueError, TypeError, OSError) as e:
            problems.append(str(e))
    if not readable:
        raise ValueError(
            f"--resume: no readable checkpoint in {ckpt_dir} ({'; '.join(problems)}); move the folder aside to keep "
            "it, or train without --resume to start afresh (which deletes these checkpoints)"
        )
    step, _, path = max(readable)
    log.warning("--resume: %s; resuming from %s (global step %d) instead", problems[0], path, step)
    return path, read_resume_checkpoint(path)


def _remove_temporaries(out: Path, ckpt_dir: Path) -> None:
    """Delete what a killed write left behind: the temporary files of checkpoints (asr.outputs.atomic_path names
    them .NAME.XXXX.tmp.SUFFIX), of the outputs' ledger, and of the model file (asr.model_file: model.pt.tmp).
    They are never renamed into place, so they are only ever debris."""
    for folder in (ckpt_dir, ckpt_dir / "epochs"):
        for f in [*folder.glob(".*.tmp.ckpt"), *folder.glob(".asr-outputs.*.tmp")]:
            f.unlink(missing_ok=True)
    for f in [out / "model.pt.tmp", *out.glob(".model.pt.*.tmp.pt"), *out.glob(".asr-outputs.*.tmp")]:
        f.unlink(missing_ok=True)


def _output_error_in(e: BaseException | None) -> OutputError | None:
    """The first OutputError in an exception's chain (itself, its cause or the one it was raised while handling)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OutputError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def _disk_errors_reported(out: Path) -> Iterator[None]:
    """A write that fails during fit() ends training with the OutputError naming the file. Lightning re-raises a
    callback's exception as it is, but on the way out it finalizes the loggers, whose own write can fail too (a
    full disk) and would hide the first error: the OutputError is dug out of the chain. A plain ENOSPC from
    elsewhere (a log file) becomes an OutputError naming that file."""
    try:
        yield
    except OutputError:
        raise
    except Exception as e:
        first = _output_error_in(e)
        if first is not None:
            raise first from None
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            where = e.filename or out
            raise OutputError(e.errno, f"{where}: cannot write it (no space left on the device)") from None
        raise


def init_source(cfg: Config) -> Recognizer:
    """The model file of train.init_from, checked against cfg: the model and feature sizes must be the same (the
    weights are copied one to one); dropout and the training settings may differ."""
    from asr.recognizer import load_model

    path = cfg.train.init_from
    if not Path(path).is_file():
        raise FileNotFoundError(f"train.init_from {path}: model file not found")
    source = load_model(path)
    theirs, ours = source.cfg.model, cfg.model
    for name in ("encoder", "d_model", "n_heads", "d_ff", "n_encoder_layers", "n_decoder_layers", "conv_channels",
                 "conv_kernel", "nat_decoder_layers", "nat_max_length"):  # fmt: skip
        if getattr(theirs, name) != getattr(ours, name):
            raise ValueError(
                f"train.init_from {path}: its model.{name} is {getattr(theirs, name)!r}, this config's "
                f"{getattr(ours, name)!r} (the weights are copied as they are: the sizes must match)"
            )
    if source.cfg.features.dim != cfg.features.dim:
        raise ValueError(
            f"train.init_from {path}: its features have {source.cfg.features.dim} dimensions, this config's "
            f"{cfg.features.dim}"
        )
    return source


def train(cfg: Config, resume: bool = False, extra_callbacks: tuple = ()) -> Path:
    """Fit the model on cfg.data and write <out_dir>/model.pt. `extra_callbacks`: Lightning callbacks to add."""
    t = cfg.train
    out = Path(t.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_output(out / "model.pt")  # before training, not an hour later (--overwrite replaces a foreign file)
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    L.seed_everything(t.seed, workers=True, verbose=False)
    for name in ("train_manifest", "dev_manifest"):
        if not getattr(cfg.data, name):
            raise ValueError(f"data.{name} is not set (give it in the config or as data.{name}=PATH)")
    train_utts = load_split(cfg.data.train_manifest, cfg.data.max_duration)
    dev_utts = load_split(cfg.data.dev_manifest)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    _remove_temporaries(out, ckpt_dir)
    found = find_resume_checkpoint(ckpt_dir) if resume else None
    resume_from, resume_ckpt = found if found is not None else (None, None)
    if resume and resume_from is None:
        log.warning("--resume: no %s yet, starting from scratch", last)
    if resume_from is None and ckpt_dir.is_dir():
        stale = sorted(ckpt_dir.glob("*.ckpt"))
        if stale:  # a fresh run must not pick up (or keep ranking) an earlier run's checkpoints
            log.warning(
                "starting fresh: removing %d checkpoints of an earlier run in %s (use --resume to continue)",
                len(stale),
                ckpt_dir,
            )
            for f in stale:
                f.unlink()

    source = init_source(cfg) if resume_from is None and t.init_from else None
    if resume_from is not None:  # same vocabulary as the interrupted run, whatever the manifests say now
        tokenizer = tokenizer_from_dict(resume_ckpt["asr_tokenizer"])
    elif source is not None:  # the output layers' rows are the source's tokens
        tokenizer = source.tokenizer
    else:
        tokenizer = build_tokenizer(cfg.tokenizer, (u.text for u in train_utts))
    del resume_ckpt  # Lightning reads the file itself; the weights need not stay in memory twice
    recognizer = Recognizer(cfg, tokenizer)
    if source is not None:
        recognizer.network.load_state_dict(source.network.state_dict())
        log.info("initialised from %s (%d tokens)", t.init_from, len(tokenizer))
        del source
    if resume_from is None:
        compute_cmvn(recognizer, train_utts, seed=t.seed)  # on resume the statistics come with the weights
    n_params = sum(p.numel() for p in recognizer.network.parameters())
    log.info(
        "%d train / %d dev utterances (%.2f h / %.2f h), vocabulary %d, model %.2f M parameters",
        len(train_utts),
        len(dev_utts),
        sum(u.duration for u in train_utts) / 3600,
        sum(u.duration for u in dev_utts) / 3600,
        len(tokenizer),
        n_params / 1e6,
    )

    module = ASRModule(cfg, recognizer, [str(u.extra.get("speaker", "")) for u in train_utts])
    data = ASRDataModule(cfg, tokenizer, train_utts, dev_utts)
    n_avg = t.average_checkpoints if t.average_checkpoints > 1 else 0
    if t.average_by not in ("best", "last"):
        raise ValueError(f"train.average_by must be best or last, got {t.average_by!r}")
    best_ckpts = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="epoch{epoch:03d}-wer{val_wer:.2f}",
        monitor="val_wer",
        mode="min",
        save_top_k=max(3, n_avg if t.average_by == "best" else 0),
        save_last=False,  # LastCheckpoint below
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks = [best_ckpts, LearningRateMonitor(logging_interval="step"), *extra_callbacks]
    if n_avg and t.average_by == "last":  # keep the last N epochs as well
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir / "epochs",
                filename="epoch{epoch:03d}",
                monitor="epoch",
                mode="max",
                save_top_k=n_avg,
                auto_insert_metric_name=False,
            )
        )
    # last.ckpt after each epoch, and mid-epoch too so that an interrupted run loses little. After the others in
    # the list, so it holds their state of the same moment (Lightning runs checkpoint callbacks in this order).
    callbacks.append(
        LastCheckpoint(
            dirpath=ckpt_dir,
            every_n_train_steps=max(t.checkpoint_every_n_steps, 0),
            save_top_k=0,
            save_last=True,
            enable_version_counter=False,
        )
    )
    if t.logger == "tensorboard":
        logger = TensorBoardLogger(str(out), name="logs")
    elif t.logger == "csv":
        logger = CSVLogger(str(out), name="logs")
    else:
        raise ValueError(f"train.logger must be csv or tensorboard, got {t.logger!r}")
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        max_time=timedelta(minutes=t.max_minutes) if t.max_minutes > 0 else None,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        gradient_clip_val=t.grad_clip or None,
        logger=logger,
        callbacks=callbacks,
        use_distributed_sampler=False,  # BucketBatchSampler splits batches across ranks itself
        enable_progress_bar=t.progress_bar,
        log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=1,
        default_root_dir=str(out),
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],  # applies to the strategy string chosen (ddp, ...) as to the default
    )
    start = time.time()
    # The data module's state (epoch, batches done) makes mid-epoch resumption exact; Lightning only looks for it
    # on the DataLoader, and would warn that it is missing.
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    with _disk_errors_reported(out):
        trainer.fit(module, data, ckpt_path=str(resume_from) if resume_from else None)
    minutes = (time.time() - start) / 60
    if trainer.global_rank != 0:
        return out / "model.pt"
    return export_model(
        cfg,
        recognizer,
        best_ckpts,
        callbacks,
        dev_utts,
        out / "model.pt",
        # global_step: optimizer steps in all (across --resume), so a resumed run can be compared with another
        {"epochs": trainer.current_epoch, "global_step": trainer.global_step, "train_minutes": round(minutes, 2)},
    )


def average_checkpoints(paths: list[Path]) -> dict[str, Tensor]:
    """Element-wise mean of the checkpoints' weights (integer buffers are taken from the last one)."""
    states = [_read_checkpoint(p)["state_dict"] for p in paths]
    avg = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            avg[key] = torch.stack([s[key].float() for s in states]).mean(0).to(last.dtype)
        else:
            avg[key] = last
    return avg


def _dev_wer(recognizer: Recognizer, utts: list[Utterance]) -> float:
    sr = recognizer.cfg.features.sample_rate
    wavs, refs = [], []
    for u in utts:
        try:
            wavs.append(load_utterance(u, sr))
            refs.append(u.text)
        except Exception:  # reported when the dev set was loaded for validation
            continue
    found = recognizer.transcribe(wavs, decoder="greedy", sample_rate=sr, cut_at_pauses=False, align_times=False)
    return error_rates(refs, [t.text for t in found]).wer


def _load_weights(recognizer: Recognizer, state: dict[str, Tensor], ema: bool = False) -> None:
    """A checkpoint's model weights into `recognizer`; `ema`: its moving average ("ema.*") instead, where kept."""
    weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if ema:
        weights.update({k[len("ema.") :]: v for k, v in state.items() if k.startswith("ema.")})
    recognizer.load_state_dict(weights)


def export_model(
    cfg: Config,
    recognizer: Recognizer,
    best_ckpts: ModelCheckpoint,
    callbacks: list,
    dev_utts: list[Utterance],
    path: Path,
    extra: dict,
) -> Path:
    """Write the model file from the best checkpoint, or from the average of N checkpoints (Vaswani et al. 2017;
    ESPnet averages the best N by validation) when that decodes the dev set (greedy) at least as well."""
    t = cfg.train
    ema = t.ema_decay > 0  # the checkpoints' moving averages, which validation ranked them by
    best = Path(best_ckpts.best_model_path) if best_ckpts.best_model_path else path.parent / "checkpoints" / "last.ckpt"
    _load_weights(recognizer, _read_checkpoint(best)["state_dict"], ema)
    best_wer = _dev_wer(recognizer, dev_utts)
    extra.update(checkpoint=best.name, dev_wer_greedy=round(best_wer, 3))
    n = t.average_checkpoints
    if n > 1:
        if t.average_by == "best":
            ranked = sorted(best_ckpts.best_k_models.items(), key=lambda kv: float(kv[1]))
        else:
            last_cb = next(c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor == "epoch")
            ranked = sorted(last_cb.best_k_models.items(), key=lambda kv: -float(kv[1]))
        chosen = [Path(p) for p, _ in ranked[:n]]
        if len(chosen) > 1:
            _load_weights(recognizer, average_checkpoints(chosen), ema)
            avg_wer = _dev_wer(recognizer, dev_utts)
            log.info(
                "dev WER (greedy): best checkpoint %.2f%%, average of %d %s checkpoints %.2f%%",
                best_wer,
                len(chosen),
                t.average_by,
                avg_wer,
            )
            if avg_wer <= best_wer:
                extra.update(checkpoint=f"average of {[p.name for p in chosen]}", dev_wer_greedy=round(avg_wer, 3))
            else:  # averaging hurt (e.g. checkpoints from very different stages): keep the single best
                _load_weights(recognizer, _read_checkpoint(best)["state_dict"], ema)
    if ema:
        extra.update(ema_decay=t.ema_decay)
    save_model(path, recognizer, extra)
    log.info("wrote %s (%s, dev WER %.2f%% greedy)", path, extra["checkpoint"], extra["dev_wer_greedy"])
    return path
