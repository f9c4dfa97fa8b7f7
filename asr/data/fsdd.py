"""FSDD connected digits: Free Spoken Digit Dataset recordings -> connected-digit utterances + JSONL manifests.

    prepare_fsdd(src_dir, out_dir) -> {"train": Path, "dev": Path, "test": Path}

FSDD holds isolated digits named `{digit}_{speaker}_{index}.wav` (8 kHz). Each utterance here joins 1-7 recordings of
one speaker with short random pauses, resampled to 16 kHz, with a faint noise floor so pauses are not digital silence.
With `connected` > 0 that share of the *training* utterances is joined as connected speech instead: each recording
trimmed to its voiced span and the next one starting within `connected_pause` (a negative gap overlaps the two, added
together), as talkers run digits together; dev and test are always joined the first way, so their figures stay
comparable. Splits follow the conventional indices: 0-4 test, 5-49 train, of which `dev_indices` are held out as dev, so
no recording is shared between splits. With `held_out_speakers` (unseen-speaker evaluation) the test set is built from
all recordings of those speakers only, and the other speakers' indices 0-4 go to training.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr.audio import AudioError, load_audio, write_audio
from asr.data.common import is_prepared, mark_prepared, unmark_prepared
from asr.data.manifest import Utterance, write_manifest

log = logging.getLogger("asr")

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
VERSION = 1  # bump when the generated audio changes, so cached corpora are rebuilt


@dataclass
class FSDDConfig:
    n_train: int = 4000
    n_dev: int = 200
    n_test: int = 300
    min_digits: int = 1
    max_digits: int = 7
    pause: tuple[float, float] = (0.05, 0.3)  # seconds between digits
    connected: float = 0.0  # share of training utterances joined as connected speech (trimmed, tight gaps)
    connected_pause: tuple[float, float] = (-0.04, 0.04)  # seconds between trimmed digits; < 0 overlaps them
    trim_db: float = 35.0  # connected joins: a recording's voiced span is the 10 ms frames within this of its peak
    edge: tuple[float, float] = (0.05, 0.25)  # leading/trailing silence
    noise_dbfs: tuple[float, float] = (-70.0, -50.0)  # noise floor level
    dev_indices: tuple[int, int] = (45, 49)  # inclusive range of train indices held out as dev
    held_out_speakers: list[str] = field(default_factory=list)
    seed: int = 0
    sample_rate: int = 16000


def scan_fsdd(src_dir: str | Path) -> dict[tuple[str, int], list[tuple[int, Path]]]:
    """Index recordings by (speaker, digit) -> [(index, path)], ignoring files not named like FSDD."""
    src = Path(src_dir)
    rec_dir = src / "recordings" if (src / "recordings").is_dir() else src
    found: dict[tuple[str, int], list[tuple[int, Path]]] = defaultdict(list)
    for p in sorted(rec_dir.glob("*.wav")):
        m = NAME.match(p.name)
        if m:
            found[(m.group(2), int(m.group(1)))].append((int(m.group(3)), p))
    if not found:
        raise FileNotFoundError(f"{src}: no FSDD recordings named {{digit}}_{{speaker}}_{{index}}.wav found")
    return found


def _split_of(index: int, speaker: str, cfg: FSDDConfig) -> str:
    lo, hi = cfg.dev_indices
    if cfg.held_out_speakers:  # unseen-speaker setup: the test set is the held-out speakers, all of their files
        if speaker in cfg.held_out_speakers:
            return "test"
    elif index <= 4:
        return "test"
    return "dev" if lo <= index <= hi else "train"


def _build_utterances(
    pools: dict[str, dict[int, list[torch.Tensor]]], n: int, cfg: FSDDConfig, rng: random.Random
) -> list[tuple[str, list[int], list[torch.Tensor]]]:
    """Draw n (speaker, digits, recordings) triples from per-speaker pools of recordings by digit."""
    speakers = sorted(s for s, by_digit in pools.items() if by_digit)
    out = []
    for _ in range(n):
        spk = rng.choice(speakers)
        digits_avail = sorted(pools[spk])
        digits = [rng.choice(digits_avail) for _ in range(rng.randint(cfg.min_digits, cfg.max_digits))]
        out.append((spk, digits, [rng.choice(pools[spk][d]) for d in digits]))
    return out


def trim_silence(wav: np.ndarray, sample_rate: int, below_db: float) -> np.ndarray:
    """(samples,) -> the stretch from the first to the last 10 ms frame whose energy is within `below_db` of the
    loudest frame's, with 20 ms of margin each side (FSDD recordings carry their own lead-in and tail)."""
    hop = sample_rate // 100
    n = wav.size // hop
    if n < 3:
        return wav
    energy = (wav[: n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (-below_db / 10))
    return wav[max(0, (loud[0] - 2) * hop) : min(wav.size, (loud[-1] + 3) * hop)]


def _join(recs: list[torch.Tensor], cfg: FSDDConfig, rng: random.Random, connected: bool = False) -> np.ndarray:
    """Recordings -> one utterance: edge silence, the recordings with a pause between each two (connected: trimmed,
    tight gaps, a negative one overlapping at most a quarter of the shorter), edge silence, a faint noise floor."""
    sr = cfg.sample_rate
    pieces = [r.numpy() for r in recs]
    if connected:
        pieces = [trim_silence(p, sr, cfg.trim_db) for p in pieces]
    pause = cfg.connected_pause if connected else cfg.pause
    starts, pos = [], int(rng.uniform(*cfg.edge) * sr)
    for i, piece in enumerate(pieces):
        if i:
            pos += max(int(rng.uniform(*pause) * sr), -min(piece.size, pieces[i - 1].size) // 4)
        starts.append(pos)
        pos += piece.size
    wav = np.zeros(pos + int(rng.uniform(*cfg.edge) * sr), dtype=np.float32)
    for start, piece in zip(starts, pieces):
        wav[start : start + piece.size] += piece
    level = 10 ** (rng.uniform(*cfg.noise_dbfs) / 20)
    noise = np.random.default_rng(rng.getrandbits(32)).standard_normal(wav.size).astype(np.float32)
    return wav + level * noise


def prepare_fsdd(src_dir: str | Path, out_dir: str | Path, cfg: FSDDConfig | None = None) -> dict[str, Path]:
    cfg = cfg or FSDDConfig()
    out = Path(out_dir)
    params = {"version": VERSION, "src": str(Path(src_dir).resolve()), **asdict(cfg)}
    if not cfg.connected:  # the connected-join settings change nothing then: corpora prepared before them stay valid
        for key in ("connected", "connected_pause", "trim_db"):
            params.pop(key)
    if not 0.0 <= cfg.connected <= 1.0:
        raise ValueError(f"fsdd: connected must be a share in [0, 1], got {cfg.connected}")
    manifests = {s: out / f"{s}.jsonl" for s in ("train", "dev", "test")}
    if is_prepared(out, manifests, params):
        log.info("%s: already prepared", out)
        return manifests
    unmark_prepared(out)

    found = scan_fsdd(src_dir)
    unknown = set(cfg.held_out_speakers) - {spk for spk, _ in found}
    if unknown:
        raise ValueError(f"held-out speaker(s) not in {src_dir}: {', '.join(sorted(unknown))}")
    pools: dict[str, dict[str, dict[int, list[torch.Tensor]]]] = {s: defaultdict(dict) for s in manifests}
    skipped = 0
    for (spk, digit), items in sorted(found.items()):
        for index, path in items:
            try:
                wav = load_audio(path, cfg.sample_rate)
            except AudioError as e:
                log.warning("skipping %s", e)
                skipped += 1
                continue
            split = _split_of(index, spk, cfg)
            pools[split][spk].setdefault(digit, []).append(wav)

    counts = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}
    for split, path in manifests.items():
        if not pools[split]:
            raise ValueError(f"{src_dir}: no recordings for the {split} split")
        # Seed per split: changing n_train leaves the test set unchanged.
        rng = random.Random(int(hashlib.sha256(f"{cfg.seed}/{split}".encode()).hexdigest()[:8], 16))
        utts = []
        for i, (spk, digits, recs) in enumerate(_build_utterances(pools[split], counts[split], cfg, rng)):
            connected = split == "train" and cfg.connected > 0 and rng.random() < cfg.connected
            wav = _join(recs, cfg, rng, connected)
            wav_path = out / "wavs" / split / f"{split}_{i:05d}_{spk}.wav"
            write_audio(wav_path, wav, cfg.sample_rate)
            text = " ".join(DIGITS[d] for d in digits)
            utts.append(Utterance(str(wav_path), wav.size / cfg.sample_rate, text, {"speaker": spk}))
        write_manifest(path, utts)
        hours = sum(u.duration for u in utts) / 3600
        speakers = sorted(pools[split])
        log.info("%s: %d utterances, %.2f h, speakers %s", split, len(utts), hours, ", ".join(speakers))
    if skipped:
        log.warning("%d unreadable recordings were skipped", skipped)
    mark_prepared(out, params)
    return manifests


def digit_subset(
    manifest: str | Path,
    out_dir: str | Path,
    band_limit_hz: int = 4000,
    sample_rate: int = 16000,
    rest: bool = False,
) -> Path:
    """The utterances of `manifest` whose transcripts are only FSDD's ten digit words, band-limited to
    `band_limit_hz` the way FSDD's 8 kHz recordings are (down to 2 * band_limit_hz and back up to `sample_rate`):
    a cross-corpus test set for an FSDD model. Writes `out_dir/test.jsonl` (+ wavs) and returns its path; an
    unreadable file is logged and skipped. "oh" for zero is not an FSDD word, so its utterances are left out.

    `rest`: the other utterances instead (transcripts not made only of digit words), band-limited the same way, into
    `out_dir/train.jsonl`: more speakers to train an FSDD model on, none of them an utterance of the test set."""
    from asr.audio import resample
    from asr.data.manifest import read_manifest

    out = Path(out_dir)
    low = 2 * band_limit_hz
    if not 0 < low < sample_rate:
        raise ValueError(f"band limit {band_limit_hz} Hz must be below the Nyquist frequency of {sample_rate} Hz")
    words = set(DIGITS)
    utts = []
    for utt in read_manifest(manifest):
        spoken = set(utt.text.split())
        if rest == bool(spoken and spoken <= words):
            continue
        try:
            wav = load_audio(utt.audio_filepath, sample_rate)
        except AudioError as e:
            log.warning("skipping %s", e)
            continue
        wav = resample(resample(wav, sample_rate, low), low, sample_rate)[: wav.numel()]
        path = out / "wavs" / f"{utt.id}.wav"
        write_audio(path, wav, sample_rate)
        utts.append(Utterance(str(path), wav.numel() / sample_rate, utt.text, dict(utt.extra)))
    which = "not only digit words" if rest else "digit-only"
    if not utts:
        raise ValueError(f"{manifest}: no usable utterance is {which} ({' '.join(DIGITS)})")
    split = out / ("train.jsonl" if rest else "test.jsonl")
    write_manifest(split, utts)
    log.info("%s: %d utterances of %s (%s), band-limited to %d Hz", out, len(utts), manifest, which, band_limit_hz)
    return split
