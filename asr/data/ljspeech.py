"""LJSpeech 1.1 (keithito.com/LJ-Speech-Dataset: one speaker, 13,100 clips, ~24 h) -> train/dev/test manifests.

    prepare_ljspeech(data_dir, out_dir, n_dev=250, n_test=250) -> PrepareResult

Layout (`data_dir` is `LJSpeech-1.1/` or the folder holding it):

    LJSpeech-1.1/metadata.csv     lines "LJ001-0001|raw text|normalised text" (pipe-separated, no quoting)
    LJSpeech-1.1/wavs/LJ001-0001.wav    22,050 Hz mono

The third column is used: it spells out numbers and abbreviations ("1869" -> "eighteen sixty-nine"), which a
character model can learn; it is then normalised with `normalize_text`. Split, in utterance-id order (the ids follow
the books): the last `n_dev + n_test` utterances are held out, the first `n_dev` of them as dev and the rest as
test, everything before as train: with the defaults (250 + 250) this is the split of ESPnet's egs2/ljspeech recipe.
Held-out text comes from the last book (LJ050), passages never seen in training; the voice is the same.
"""

from __future__ import annotations

import csv
from pathlib import Path

from asr.data.common import PrepareResult, Skipped, duration_or_skip, find_root, finish, skip
from asr.data.manifest import Utterance
from asr.text import normalize_text


def prepare_ljspeech(data_dir: str | Path, out_dir: str | Path, n_dev: int = 250, n_test: int = 250) -> PrepareResult:
    root = find_root(data_dir, ["LJSpeech-1.1"], lambda p: (p / "metadata.csv").is_file())
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{data_dir}: LJSpeech metadata.csv not found (expected LJSpeech-1.1/metadata.csv)")
    skipped: list[Skipped] = []
    utts = []
    listed = set()
    with open(meta, encoding="utf-8", newline="") as f:
        # QUOTE_NONE: transcripts contain double quotes that are text, not CSV quoting.
        for lineno, row in enumerate(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE), 1):
            if not row or not row[0].strip():
                continue
            where = f"{meta}:{lineno}"
            if len(row) < 2:
                skip(skipped, where, f"expected id|text|normalised text, got {len(row)} field(s)")
                continue
            utt_id = row[0].strip()
            listed.add(utt_id)
            text = normalize_text(row[2] if len(row) > 2 and row[2].strip() else row[1])
            audio = root / "wavs" / f"{utt_id}.wav"
            if not audio.is_file():
                skip(skipped, where, f"transcript without audio (wavs/{utt_id}.wav not found)")
                continue
            if not text:
                skip(skipped, where, "empty transcript")
                continue
            duration = duration_or_skip(audio, skipped)
            if duration is None:
                continue
            utts.append(Utterance(str(audio), duration, text, {"id": utt_id, "speaker": "LJ"}))
    for audio in sorted((root / "wavs").glob("*.wav")):
        if audio.stem not in listed:
            skip(skipped, audio, "audio without transcript (not in metadata.csv)")
    utts.sort(key=lambda u: u.extra["id"])
    n_held = min(n_dev + n_test, len(utts))
    cut = len(utts) - n_held
    mid = cut + min(n_dev, n_held)
    splits = {"train": utts[:cut], "dev": utts[cut:mid], "test": utts[mid:]}
    return finish(out_dir, splits, skipped, corpus="ljspeech")
