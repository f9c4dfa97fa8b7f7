"""Training faults (issue 27): SIGKILL at random moments and --resume, a damaged newest checkpoint, a full disk.

All on a tiny model and a small tone corpus: one epoch is 4 optimizer steps of well under a second, so a run's cost
is mostly the start of a Python process that imports torch and Lightning (several seconds on 2 cores).
"""

from __future__ import annotations

import errno
import logging
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_tone_corpus, write_tone_config

from asr import training
from asr.cli import main
from asr.data.manifest import read_manifest
from asr.data.sampler import BucketBatchSampler
from asr.training import read_resume_checkpoint

ROOT = Path(__file__).resolve().parent.parent

# Few threads (two runs share the 2 cores), frequent mid-epoch checkpoints, no per-epoch extras that cost time.
FAULT_OVERRIDES = [
    "train.num_threads=1",
    "train.checkpoint_every_n_steps=2",
    "train.average_checkpoints=0",
    "train.attention_plots=0",
]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, int]:
    """A recipe for a small tone corpus (60 training utterances), and its optimizer steps per epoch."""
    root = tmp_path_factory.mktemp("fault_corpus")
    corpus = make_tone_corpus(root, n_train=60, n_dev=12, n_test=1)
    per_epoch = len(BucketBatchSampler([u.duration for u in read_manifest(corpus["train"])], 1500))
    return write_tone_config(root, corpus), per_epoch


@pytest.fixture(autouse=True)
def in_process_cli():
    """asr.cli.main in this process sets torch's thread count (train.num_threads): give later tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _train_args(conf: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        str(conf),
        f"train.out_dir={out}",
        f"train.max_epochs={epochs}",
        *FAULT_OVERRIDES,
        *extra,
    ]


def _cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "asr.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def _model_extra(out: Path) -> dict:
    return torch.load(out / "model.pt", map_location="cpu", weights_only=True)["extra"]


def _signature(path: Path) -> tuple | None:
    """Changes whenever the file is replaced (atomically: a new inode, a new modification time)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _wait_for_new_checkpoint(proc: subprocess.Popen, last: Path, at_least: int, timeout: float = 120) -> int:
    """Wait until `proc` has written a last.ckpt of global step >= at_least (a new file, not one from an earlier
    run), so that every killed run made progress; return that step."""
    before = seen = _signature(last)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        now = _signature(last)
        if now is not None and now != seen and now != before:
            seen = now
            step = _step(last)  # whole: it was renamed into place complete
            if step >= at_least:
                return step
        time.sleep(0.02)
    stderr = proc.stderr.read().decode() if proc.poll() is not None else ""
    raise AssertionError(f"no last.ckpt of step >= {at_least} before the run ended or timed out\n{stderr[-2000:]}")


def _kill_steps(rng: random.Random, total: int, per_epoch: int, n: int = 3) -> list[int]:
    """n steps to kill after, one in each of n equal spans of the run, none on an epoch boundary. Not in the first
    epoch (there must be a checkpoint to resume from) nor in the last three (the kill must come before the run ends,
    however the random delay after the step falls)."""
    lo, hi = per_epoch, total - 3 * per_epoch
    span = (hi - lo) // n
    return [rng.choice([s for s in range(lo + i * span, lo + (i + 1) * span) if s % per_epoch]) for i in range(n)]


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
def test_sigkill_at_three_random_moments_then_resume_matches_an_uninterrupted_run(small_run, tmp_path):
    conf, per_epoch = small_run
    epochs = 10
    total = epochs * per_epoch
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    reference = _cli(_train_args(conf, ref_out, epochs))  # on the other core meanwhile
    last = out / "checkpoints" / "last.ckpt"
    rng = random.Random(27)
    resumed = False
    for target in _kill_steps(rng, total, per_epoch):
        proc = _cli(_train_args(conf, out, epochs, *(["--resume"] if resumed else [])))
        _wait_for_new_checkpoint(proc, last, target)
        time.sleep(rng.uniform(0.0, 0.15))  # a random moment after it: mid-step, mid-save or mid-validation
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the run ended before it was killed"
        proc.stderr.close()
        # Atomic saves: whatever the kill interrupted, the newest checkpoint is whole (CRCs checked) ...
        assert read_resume_checkpoint(last)["global_step"] < total
        assert not (out / "model.pt").exists()
        resumed = True
    assert main(_train_args(conf, out, epochs, "--resume")) == 0  # ... and the run finishes from it
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-3000:]
    reference.stderr.close()

    got, want = _model_extra(out), _model_extra(ref_out)
    assert got["global_step"] == want["global_step"] == total  # every batch trained once, none twice
    # Noise: none here. Without dropout or augmentation, on one thread, with the batch order resumed exactly and
    # the optimizer and schedule states in the checkpoint, the resumed run redoes the same arithmetic: the same
    # weights, so the same dev WER (any difference would be a resume bug, not chance).
    assert got["dev_wer_greedy"] == want["dev_wer_greedy"]
    assert got["checkpoint"] == want["checkpoint"]
    a = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(ref_out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in b)
    assert _temporaries(out) == []  # what a kill mid-save left was cleared by the next run


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_damaged_newest_checkpoint_falls_back_to_the_previous_good_one(small_run, tmp_path, caplog):
    conf, per_epoch = small_run
    out = tmp_path / "exp"
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    assert main(_train_args(conf, out, 2)) == 0
    damages = {
        "truncated": lambda: last.write_bytes(last.read_bytes()[: last.stat().st_size // 2]),
        "garbage": lambda: last.write_bytes(random.Random(0).randbytes(last.stat().st_size)),
    }
    for epochs, (what, damage) in enumerate(damages.items(), start=3):
        others = [p for p in ckpt_dir.glob("*.ckpt") if p.name != "last.ckpt"]
        good = max(others, key=_step)  # the newest by global step: the end of the previous epoch
        damage()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="asr"):
            assert main(_train_args(conf, out, epochs, "--resume")) == 0, what
        named = [w for w in _warnings(caplog) if str(last) in w and str(good) in w]
        assert named, f"{what}: no warning naming {last} and {good}: {_warnings(caplog)}"
        assert "unreadable" in named[0]
        # It continued from there (not from scratch): every epoch's steps exactly once.
        assert _model_extra(out)["global_step"] == epochs * per_epoch == _step(last)
        assert _temporaries(out) == []


def test_no_readable_checkpoint_is_an_error_naming_the_folder(small_run, tmp_path, capsys):
    conf, _ = small_run
    out = tmp_path / "exp"
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "last.ckpt").write_bytes(b"PK\x03\x04 not really")
    (ckpt_dir / "epoch000-wer50.00.ckpt").write_bytes(b"")
    assert main(_train_args(conf, out, 1, "--resume")) == 2
    err = capsys.readouterr().err
    assert f"error: --resume: no readable checkpoint in {ckpt_dir}" in err
    assert "last.ckpt" in err and "epoch000-wer50.00.ckpt" in err
    # Asked to continue, it never discards the run: the files are still there for whoever wants to rescue them.
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["epoch000-wer50.00.ckpt", "last.ckpt"]


def test_a_checkpoint_without_the_training_state_is_not_resumable(tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}, "global_step": 3}, path)
    with pytest.raises(ValueError, match=r"weights\.ckpt: not a training checkpoint .*asr_tokenizer"):
        read_resume_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        read_resume_checkpoint(path)


def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {e}")


def _unmount(folder: Path) -> None:
    # Lazily: a failed write's open file, held by a traceback, would otherwise keep it busy and mounted.
    subprocess.run(["umount", "--lazy", str(folder)], check=False)


def test_full_disk_is_one_clear_error_and_keeps_the_last_checkpoint(small_run, tmp_path, capsys):
    conf, per_epoch = small_run
    disk = tmp_path / "disk"
    out = disk / "exp"
    last = out / "checkpoints" / "last.ckpt"
    # One checkpoint is about 2.3 MB: the first (last.ckpt at step 2) fits, a second one beside it does not.
    _mount_tmpfs(disk, "3500k")
    try:
        assert main(_train_args(conf, out, 2)) == 2
        err = capsys.readouterr().err
        # The first write that does not fit: a best-k checkpoint at the end of epoch 0 (step 4).
        # (OutputError is an OSError made with an errno, whose str() starts "[Errno 28] ": tolerated, not required.)
        where = rf"error: (\[Errno 28\] )?{re.escape(str(last.parent))}/\S+\.ckpt: "
        assert re.search(where + r"cannot write it \(no space left on the device\); nothing was replaced\n", err), err
        assert "Traceback" not in err and err.count("error:") == 1
        # The previous checkpoint is whole and loads; nothing half-written is left.
        assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2
        assert _temporaries(out) == []
        assert not (out / "model.pt").exists()

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
        assert main(_train_args(conf, out, 2, "--resume")) == 0
        assert _model_extra(out)["global_step"] == 2 * per_epoch
        assert _temporaries(out) == []
    finally:
        _unmount(disk)


def _fill(disk: Path) -> None:
    """Write a file that takes every free byte of the file system `disk` is on."""
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def test_full_disk_at_the_model_file_is_one_clear_error(small_run, tmp_path, capsys, monkeypatch):
    conf, _ = small_run
    disk = tmp_path / "disk"
    out = disk / "exp"
    _mount_tmpfs(disk, "32m")
    try:
        real_save = training.save_model

        def fill_then_save(path, *args, **kwargs):  # the disk fills up just as training writes the model file
            _fill(disk)
            return real_save(path, *args, **kwargs)

        monkeypatch.setattr(training, "save_model", fill_then_save)
        try:
            code = main(_train_args(conf, out, 1))
        finally:
            (disk / "filler").unlink()
        err = capsys.readouterr().err
        assert _temporaries(out) == [] and not (out / "model.pt").exists()
        assert code == 2 and f"{out / 'model.pt'}: cannot write it (no space left on the device)" in err, err[-2000:]
    finally:
        _unmount(disk)
