"""LibriSpeech (openslr.org/12) and Mini LibriSpeech (openslr.org/31) -> train/dev/test JSONL manifests.

    prepare_librispeech(data_dir, out_dir, train=None, dev=None, test=None) -> PrepareResult

Layout (as the archives extract; `data_dir` may be the `LibriSpeech/` folder or the folder holding it):

    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt    lines "<speaker>-<chapter>-<n> TEXT"
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac     16 kHz mono

Subsets are train-clean-100/360, train-other-500, dev-clean/other, test-clean/other, and Mini LibriSpeech's
train-clean-5 and dev-clean-2. By default every subset found goes to the split its name starts with (train-* ->
train, dev-* -> dev, test-* -> test); naming subsets (`train=["train-clean-100"], dev=["dev-clean"]`) uses only
those. Transcripts (upper case, apostrophes) are normalised with `normalize_text`. Audio is referenced in place.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

from asr.data.common import PrepareResult, Skipped, duration_or_skip, find_root, finish, skip
from asr.data.manifest import Utterance
from asr.text import normalize_text

log = logging.getLogger("asr")

SUBSET = re.compile(r"^(train|dev|test)-(clean|other)(-\d+)?$")


def find_subsets(data_dir: str | Path) -> dict[str, Path]:
    """Subset name -> folder, for every LibriSpeech-named folder in the corpus root (or `data_dir` itself when it
    is one subset folder)."""
    data_dir = Path(data_dir)
    if SUBSET.match(data_dir.name) and data_dir.is_dir():
        return {data_dir.name: data_dir}
    root = find_root(data_dir, ["LibriSpeech"], lambda p: any(SUBSET.match(c.name) for c in p.iterdir() if c.is_dir()))
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and SUBSET.match(p.name)}


def read_subset(subset_dir: Path, skipped: list[Skipped]) -> list[Utterance]:
    """Every utterance of one subset folder; lines without audio and audio without a line are reported."""
    utts = []
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
        chapter_dir = trans.parent
        speaker = chapter_dir.parent.name
        seen = set()
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            seen.add(utt_id)
            audio = chapter_dir / f"{utt_id}.flac"
            if not audio.is_file():
                skip(skipped, f"{trans}:{lineno}", f"transcript without audio ({audio.name} not found)")
                continue
            text = normalize_text(text)
            if not text:
                skip(skipped, f"{trans}:{lineno}", "empty transcript")
                continue
            duration = duration_or_skip(audio, skipped)
            if duration is None:
                continue
            extra = {"id": utt_id, "speaker": speaker, "chapter": chapter_dir.name, "subset": subset_dir.name}
            utts.append(Utterance(str(audio), duration, text, extra))
        for audio in sorted(chapter_dir.glob("*.flac")):
            if audio.stem not in seen:
                skip(skipped, audio, f"audio without transcript (no line in {trans.name})")
    # A chapter folder without a .trans.txt would otherwise vanish silently.
    for chapter_dir in sorted(p for p in subset_dir.glob("*/*") if p.is_dir()):
        if not list(chapter_dir.glob("*.trans.txt")) and list(chapter_dir.glob("*.flac")):
            skip(skipped, chapter_dir, "audio without transcript (no .trans.txt in the chapter folder)")
    return utts


def default_split(subset: str) -> str:
    m = SUBSET.match(subset)
    if not m:
        raise ValueError(f"{subset!r} is not a LibriSpeech subset name")
    return m.group(1)


def prepare_librispeech(
    data_dir: str | Path,
    out_dir: str | Path,
    train: Sequence[str] | None = None,
    dev: Sequence[str] | None = None,
    test: Sequence[str] | None = None,
) -> PrepareResult:
    found = find_subsets(data_dir)
    if not found:
        raise FileNotFoundError(f"{data_dir}: no LibriSpeech subset folders (train-clean-100, dev-clean, ...) found")
    if train is None and dev is None and test is None:
        plan = {s: default_split(s) for s in found}
    else:  # the user named subsets: use exactly those
        plan = {s: split for split, names in (("train", train), ("dev", dev), ("test", test)) for s in names or []}
        missing = sorted(s for s in plan if s not in found)
        if missing:
            raise FileNotFoundError(
                f"{data_dir}: subset(s) not found: {', '.join(missing)} (found: {', '.join(found)})"
            )
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    skipped: list[Skipped] = []
    for subset, split in sorted(plan.items()):
        log.info("librispeech: %s -> %s", subset, split)
        splits[split].extend(read_subset(found[subset], skipped))
    return finish(out_dir, splits, skipped, corpus="librispeech")
