"""yesno (openslr.org/1: one speaker saying eight Hebrew words "ken"/"lo", 60 files, 8 kHz) -> JSONL manifests.

    prepare_yesno(data_dir, out_dir, dev=0.1, test=0.2) -> PrepareResult

Layout (`data_dir` is `waves_yesno/` or the folder holding it): `waves_yesno/0_1_0_0_1_0_1_1.wav`, the name spelling
the eight words in order (0 = "no", 1 = "yes"), so the transcript is "no yes no no yes no yes yes". Split: by a hash
of the file name (`split_by_hash`), so it is deterministic and does not depend on which other files are present.
"""

from __future__ import annotations

import re
from pathlib import Path

from asr.data.common import PrepareResult, Skipped, duration_or_skip, find_root, finish, skip, split_by_hash
from asr.data.manifest import Utterance

NAME = re.compile(r"^[01](_[01])+$")
WORDS = {"0": "no", "1": "yes"}


def prepare_yesno(data_dir: str | Path, out_dir: str | Path, dev: float = 0.1, test: float = 0.2) -> PrepareResult:
    root = find_root(data_dir, ["waves_yesno"], lambda p: any(NAME.match(f.stem) for f in p.glob("*.wav")))
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    skipped: list[Skipped] = []
    for audio in sorted(root.glob("*.wav")):
        if not NAME.match(audio.stem):
            skip(skipped, audio, "name does not spell the words (expected e.g. 0_1_0_0_1_0_1_1.wav)")
            continue
        duration = duration_or_skip(audio, skipped)
        if duration is None:
            continue
        text = " ".join(WORDS[c] for c in audio.stem.split("_"))
        split = split_by_hash(audio.stem, dev=dev, test=test)
        splits[split].append(Utterance(str(audio), duration, text, {"id": audio.stem}))
    if not any(splits.values()) and not skipped:
        raise FileNotFoundError(f"{data_dir}: no yesno recordings (waves_yesno/0_1_..._1.wav) found")
    return finish(out_dir, splits, skipped, corpus="yesno")
