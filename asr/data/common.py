"""Pieces shared by the corpus preparers: durations, skipped-item reports, deterministic splits, manifest writing.

    duration_of(path) -> seconds (from the header), or raises AudioError naming the file
    split_by_hash("utt-id", dev=0.1, test=0.1) -> "train" | "dev" | "test"   (stable: depends on the key only)
    finish(out_dir, {"train": [Utterance, ...], ...}, skipped) -> PrepareResult (manifests, per-split stats, skips)
    is_prepared(out_dir, manifests, params) / mark_prepared(out_dir, params)   the cache marker of generated corpora

Every preparer returns a `PrepareResult`; `asr prepare` prints its summary. A skipped item is never silent: it is
logged as a warning with its reason and kept in `PrepareResult.skipped`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from asr.audio import AudioError, audio_info
from asr.data.manifest import Utterance, read_manifest, write_manifest
from asr.outputs import check_output, write_text

log = logging.getLogger("asr")

SPLITS = ("train", "dev", "test")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".sph", ".nist", ".raw")


def is_prepared(out_dir: str | Path, manifests: dict[str, Path], params: dict) -> bool:
    """True when out_dir holds a corpus generated with these parameters: its marker records them (and maybe more,
    e.g. a library version) and every manifest exists. A missing or unreadable marker means: generate again."""
    marker = Path(out_dir) / ".prepared.json"
    if not (marker.is_file() and all(Path(p).is_file() for p in manifests.values())):
        return False
    try:
        done = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    params = json.loads(json.dumps(params))  # tuples -> lists, as they read back
    return isinstance(done, dict) and {k: done.get(k) for k in params} == params


def unmark_prepared(out_dir: str | Path) -> None:
    """Before regenerating: an interrupted run must not look finished."""
    (Path(out_dir) / ".prepared.json").unlink(missing_ok=True)


def mark_prepared(out_dir: str | Path, params: dict) -> None:
    """After the last manifest is written."""
    write_text(Path(out_dir) / ".prepared.json", json.dumps(params, indent=1) + "\n", overwrite=True)


@dataclass
class Skipped:
    item: str  # a file, or "file:line" for a transcript line
    reason: str

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


@dataclass
class SplitStats:
    utterances: int
    hours: float
    speakers: int  # distinct "speaker" values (0 when the corpus has none)


@dataclass
class PrepareResult:
    manifests: dict[str, Path]  # split -> manifest, only the splits that got utterances
    stats: dict[str, SplitStats]
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> list[str]:
        lines = []
        for split, path in self.manifests.items():
            s = self.stats[split]
            spk = f", {s.speakers} speakers" if s.speakers else ""
            lines.append(f"{split}: {s.utterances} utterances, {s.hours:.2f} h{spk} -> {path}")
        return lines


def duration_of(path: str | Path) -> float:
    """Length in seconds from the audio header (no decoding); raises AudioError for unreadable or empty files."""
    frames, sr = audio_info(path)
    if frames <= 0:
        raise AudioError(f"{path}: audio file holds no samples")
    return frames / sr


def duration_or_skip(audio: Path, skipped: list["Skipped"]) -> float | None:
    """`duration_of`, or None after recording why the file is skipped (an unreadable or empty file)."""
    try:
        return duration_of(audio)
    except AudioError as e:
        skip(skipped, audio, str(e).removeprefix(f"{audio}: "))
        return None


def split_by_hash(key: str, dev: float = 0.1, test: float = 0.1) -> str:
    """A split for `key` from its SHA-256: the same key always lands in the same split, whatever else is in the
    corpus, so adding files never moves existing ones between train and test."""
    if not 0 <= dev + test <= 1:
        raise ValueError(f"dev + test fractions must be within [0, 1], got {dev} + {test}")
    x = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:13], 16) / 16**13
    return "test" if x < test else "dev" if x < test + dev else "train"


def find_root(data_dir: str | Path, subdirs: Sequence[str], is_root) -> Path:
    """The corpus folder: `data_dir` itself or one of `subdirs` below it (where a download extracts it), the first
    for which `is_root(path)` holds; `data_dir` if none does (the preparer then reports what is missing)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: data directory not found")
    for cand in [data_dir, *(data_dir / s for s in subdirs)]:
        if cand.is_dir() and is_root(cand):
            return cand
    return data_dir


def skip(skipped: list[Skipped], item: str | Path, reason: str) -> None:
    skipped.append(Skipped(str(item), reason))


def finish(
    out_dir: str | Path,
    splits: dict[str, list[Utterance]],
    skipped: Iterable[Skipped] = (),
    corpus: str = "",
) -> PrepareResult:
    """Write `<out_dir>/<split>.jsonl` for every non-empty split (utterances sorted by id, so reruns give identical
    files); a declared split that ended up empty gets no manifest (a stale one from an earlier run is removed)."""
    out = Path(out_dir)
    skipped = list(skipped)
    for s in skipped:
        log.warning("%sskipped %s", f"{corpus}: " if corpus else "", s)
    manifests, stats = {}, {}
    for split, utts in splits.items():
        path = out / f"{split}.jsonl"
        if not utts:
            log.warning("%s: no utterances for the %s split; no manifest written", corpus or out, split)
            if path.is_file():
                check_output(path)  # a user's file of that name is not ours to delete
                path.unlink()
            continue
        utts = sorted(utts, key=lambda u: (str(u.extra.get("id", "")), u.audio_filepath))
        write_manifest(path, utts)
        read_manifest(path)  # the checks every command runs on reading it (asr validate's): a bad line is named now
        manifests[split] = path
        speakers = {u.extra["speaker"] for u in utts if "speaker" in u.extra}
        stats[split] = SplitStats(len(utts), sum(u.duration for u in utts) / 3600, len(speakers))
    if not manifests:
        raise ValueError(f"{corpus or out}: no usable utterances found ({len(skipped)} items skipped)")
    return PrepareResult(manifests, stats, skipped)


def stats_of(manifests: dict[str, Path]) -> PrepareResult:
    """A PrepareResult for manifests written by another preparer (fsdd, synth), read back for the summary."""
    stats = {}
    for split, path in manifests.items():
        utts = read_manifest(path)
        speakers = {u.extra["speaker"] for u in utts if "speaker" in u.extra}
        stats[split] = SplitStats(len(utts), sum(u.duration for u in utts) / 3600, len(speakers))
    return PrepareResult(dict(manifests), stats, [])
