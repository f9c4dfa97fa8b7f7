"""Training with PyTorch Lightning: data module, the LightningModule, and `train(cfg)` which ends in a model file.

    train(cfg) -> path of `<out_dir>/model.pt` (best validation-WER weights, self-contained)

Per batch: waveforms -> features (on the training device) -> CMVN -> SpecAugment (training only) -> encoder ->
decoder under teacher forcing (input <sos> y1..yn, target y1..yn <eos>) -> label-smoothed cross-entropy.
Adam with the Noam schedule (linear warmup, then inverse square-root decay), gradient clipping, validation loss
and greedy WER every epoch, best-k and last checkpoints (`--resume` continues from last.ckpt).
"""

from __future__ import annotations

import logging
import math
import random
import time
from datetime import timedelta
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor
from torch.utils.data import DataLoader

from asr.config import Config
from asr.data.dataset import Batch, SpeechDataset, collate, load_split, load_utterance
from asr.data.manifest import Utterance
from asr.data.sampler import BucketBatchSampler
from asr.decoding import greedy_search
from asr.features import CMVNStats, SpecAugment
from asr.metrics import error_rates
from asr.model import ctc_loss, guided_attention_loss, label_smoothed_nll
from asr.recognizer import Recognizer, pad_waveforms, save_model
from asr.text import CharTokenizer, tokenizer_from_dict

log = logging.getLogger("asr")


class ASRDataModule(L.LightningDataModule):
    def __init__(self, cfg: Config, tokenizer: CharTokenizer, train_utts: list[Utterance], dev_utts: list[Utterance]):
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        sr = cfg.features.sample_rate
        self.train_set = SpeechDataset(train_utts, tokenizer, sr)
        self.dev_set = SpeechDataset(dev_utts, tokenizer, sr)

    def _loader(self, dataset: SpeechDataset, shuffle: bool) -> DataLoader:
        d = self.cfg.data
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = BucketBatchSampler(
            [u.duration for u in dataset.utts], d.max_frames_per_batch, d.max_batch_size,
            shuffle=shuffle, seed=self.cfg.train.seed, rank=rank, world_size=world,
        )
        if shuffle:
            log.info("train batches: %d per epoch, padding %.1f%% of frames", len(sampler), 100 * sampler.padding_fraction())
        return DataLoader(
            dataset, batch_sampler=sampler, collate_fn=partial(collate, pad=self.tokenizer.pad),
            num_workers=d.num_workers, persistent_workers=d.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dev_set, shuffle=False)


def noam_lambda(warmup: int):
    """Multiplier on the peak learning rate: linear warmup to 1 at `warmup` steps, then sqrt(warmup / step)."""

    def f(step: int) -> float:
        step = max(step, 1)
        return min(step / warmup, math.sqrt(warmup / step))

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


class ASRModule(L.LightningModule):
    def __init__(self, cfg: Config, recognizer: Recognizer):
        super().__init__()
        self.cfg, self.model = cfg, recognizer
        self.specaug = SpecAugment(cfg.specaug, cfg.features.dim)
        self._val_counts: list[Tensor] = []
        self._last_step_time: float | None = None

    def _forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, dict]:
        """Teacher-forced pass: returns loss, encoder output, its lengths, and stats to log."""
        tok = self.model.tokenizer
        feats, feat_lengths = self.model.features(batch.wavs, batch.wav_lengths)  # (batch, frames, dim)
        if self.training:
            feats = self.specaug(feats, feat_lengths)
        ys_in, ys_out = teacher_forcing_targets(batch.tokens, batch.token_lengths, tok.sos, tok.eos, tok.pad)
        net, lc = self.model.network, self.cfg.loss
        out_lengths = batch.token_lengths + 1  # with <sos> in, with <eos> out
        memory, memory_lengths = net.encoder(feats, feat_lengths)  # (batch, frames/4, d_model)
        guide = self._guided_weight() > 0
        logits, attn = net.decoder(  # (batch, n+1, vocab), cross-attention of the guided layers
            ys_in, memory, memory_lengths, out_lengths, weight_layers=self._guided_layers if guide else ()
        )
        att_loss = label_smoothed_nll(logits, ys_out, tok.pad, lc.label_smoothing)
        real = ys_out != tok.pad
        stats = {"acc": ((logits.argmax(-1) == ys_out) & real).sum() / real.sum(), "att_loss": att_loss}
        loss = att_loss
        if lc.ctc_weight > 0:
            ctc = ctc_loss(net.ctc(memory), memory_lengths, batch.tokens, batch.token_lengths, tok.blank)
            loss = (1 - lc.ctc_weight) * att_loss + lc.ctc_weight * ctc
            stats["ctc_loss"] = ctc
        if guide:
            ga = torch.stack([
                guided_attention_loss(a, out_lengths, memory_lengths, lc.guided_attn_sigma, lc.guided_attn_heads)
                for a in attn if a is not None
            ]).mean()
            loss = loss + self._guided_weight() * ga
            stats["guided_attn_loss"] = ga
        return loss, memory, memory_lengths, stats

    @property
    def _guided_layers(self) -> list[int]:
        n = len(self.model.network.decoder.layers)
        return [i % n for i in self.cfg.loss.guided_attn_layers] or list(range(n))

    def _guided_weight(self) -> float:
        lc = self.cfg.loss
        return lc.guided_attn_weight * lc.guided_attn_decay ** self.current_epoch

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

    def validation_step(self, batch: Batch | None, batch_idx: int) -> None:
        if batch is None:
            return
        loss, memory, memory_lengths, stats = self._forward(batch)
        tok = self.model.tokenizer
        hyps = greedy_search(
            self.model.network.decoder, memory, memory_lengths, tok.sos, tok.eos, self.cfg.decode.max_len_ratio
        )
        refs = [tok.decode(t[:n]) for t, n in zip(batch.tokens.tolist(), batch.token_lengths.tolist())]
        er = error_rates(refs, [tok.decode(h) for h in hyps])
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

    def configure_optimizers(self):
        t = self.cfg.train
        params = list(self.model.parameters())
        opt = torch.optim.Adam(params, lr=t.peak_lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, noam_lambda(t.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What `--resume` and the export need besides the weights (plain types: loads with weights_only=True).
        checkpoint["asr_tokenizer"] = self.model.tokenizer.to_dict()
        checkpoint["asr_config"] = self.cfg.to_dict()


def compute_cmvn(recognizer: Recognizer, utts: list[Utterance], max_hours: float = 3.0, seed: int = 0) -> None:
    """Global mean/variance of the training features (a seeded random subset of at most `max_hours`)."""
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
                stats.add(*frontend(padded, lengths))
    mean, std = stats.mean_std()
    recognizer.cmvn.set_stats(mean, std)
    log.info("CMVN statistics from %d utterances (%.2f h)", len(chosen), total / 3600)


def _read_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def export_checkpoint(ckpt_path: Path, recognizer: Recognizer, out_path: Path, extra: dict | None = None) -> Path:
    """Copy a Lightning checkpoint's weights into the recogniser and write the self-contained model file."""
    state = _read_checkpoint(ckpt_path)["state_dict"]
    recognizer.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    return save_model(out_path, recognizer, extra)


def train(cfg: Config, resume: bool = False) -> Path:
    t = cfg.train
    out = Path(t.out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    resume_from = last if resume and last.is_file() else None
    if resume and resume_from is None:
        log.warning("--resume: no %s yet, starting from scratch", last)
    if resume_from is None and ckpt_dir.is_dir():
        stale = sorted(ckpt_dir.glob("*.ckpt"))
        if stale:  # a fresh run must not pick up (or keep ranking) an earlier run's checkpoints
            log.warning("starting fresh: removing %d checkpoints of an earlier run in %s (use --resume to continue)",
                        len(stale), ckpt_dir)
            for f in stale:
                f.unlink()

    if resume_from is not None:  # same vocabulary as the interrupted run, whatever the manifests say now
        tokenizer = tokenizer_from_dict(_read_checkpoint(resume_from)["asr_tokenizer"])
    else:
        tokenizer = CharTokenizer.build(u.text for u in train_utts)
    recognizer = Recognizer(cfg, tokenizer)
    if resume_from is None:
        compute_cmvn(recognizer, train_utts, seed=t.seed)  # on resume the statistics come with the weights
    n_params = sum(p.numel() for p in recognizer.network.parameters())
    log.info(
        "%d train / %d dev utterances (%.2f h / %.2f h), vocabulary %d, model %.2f M parameters",
        len(train_utts), len(dev_utts), sum(u.duration for u in train_utts) / 3600,
        sum(u.duration for u in dev_utts) / 3600, len(tokenizer), n_params / 1e6,
    )

    module = ASRModule(cfg, recognizer)
    data = ASRDataModule(cfg, tokenizer, train_utts, dev_utts)
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, filename="epoch{epoch:03d}-wer{val_wer:.2f}", monitor="val_wer", mode="min",
        save_top_k=3, save_last=True, auto_insert_metric_name=False,
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
        precision=t.precision,
        gradient_clip_val=t.grad_clip or None,
        logger=logger,
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="step")],
        use_distributed_sampler=False,  # BucketBatchSampler splits batches across ranks itself
        enable_progress_bar=t.progress_bar,
        log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=1,
        default_root_dir=str(out),
        enable_model_summary=False,
    )
    start = time.time()
    trainer.fit(module, data, ckpt_path=str(resume_from) if resume_from else None)
    minutes = (time.time() - start) / 60
    if trainer.global_rank != 0:
        return out / "model.pt"
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    score = checkpoint.best_model_score
    extra = {
        "checkpoint": best.name,
        "val_wer": float(score) if score is not None else None,
        "epochs": trainer.current_epoch,
        "train_minutes": round(minutes, 2),
    }
    path = export_checkpoint(best, recognizer, out / "model.pt", extra)
    log.info("wrote %s (from %s, val WER %s, %.1f min)", path, best.name, extra["val_wer"], minutes)
    return path
