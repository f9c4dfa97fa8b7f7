"""Mozilla Common Voice (commonvoice.mozilla.org; manual download, one language at a time) -> JSONL manifests.

    prepare_commonvoice(data_dir, out_dir, splits=("train", "dev", "test")) -> PrepareResult

Layout of one language folder of a release (`data_dir`, e.g. `cv-corpus-17.0-2024-03-15/en/`):

    train.tsv  dev.tsv  test.tsv      tab-separated, header row: client_id, path, sentence, up_votes, ..., locale
    clips/common_voice_en_12345.mp3   48 kHz MP3 (libsndfile reads MP3; durations come from the header)

The official train/dev/test tables are used as they are (they already keep speakers apart); validated.tsv,
other.tsv and invalidated.tsv are ignored. `client_id` (an anonymous hash) becomes the speaker. Sentences are
kept as written (the recipe's normaliser, applied at training and scoring, keeps letters of any script). Clips
that cannot be read are skipped and reported with the reason.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Sequence

from asr.data.common import PrepareResult, Skipped, duration_or_skip, find_root, finish, skip
from asr.data.manifest import Utterance
from asr.text import normalize_text

REQUIRED_COLUMNS = ("client_id", "path", "sentence")


def read_table(tsv: Path, clips: Path, skipped: list[Skipped]) -> list[Utterance]:
    utts = []
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a few sentences are long; the default limit is 128 KiB
    with open(tsv, encoding="utf-8", newline="") as f:
        # QUOTE_NONE: sentences contain quote characters that are text, not TSV quoting.
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{tsv}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        for lineno, row in enumerate(reader, 2):
            where = f"{tsv}:{lineno}"
            name = (row.get("path") or "").strip()
            if not name:
                skip(skipped, where, "no clip path")
                continue
            audio = clips / name
            if not audio.is_file():
                skip(skipped, where, f"transcript without audio (clips/{name} not found)")
                continue
            # Kept as written (digits, punctuation): the recipe's normaliser reads it at training and scoring.
            text = " ".join((row.get("sentence") or "").split())
            if not normalize_text(text):
                skip(skipped, where, "empty sentence")
                continue
            duration = duration_or_skip(audio, skipped)
            if duration is None:
                continue
            extra = {"id": Path(name).stem, "speaker": row["client_id"]}
            for key in ("locale", "gender", "accents"):  # useful for per-group WER; absent in some releases
                if row.get(key):
                    extra[key] = row[key]
            utts.append(Utterance(str(audio), duration, text, extra))
    return utts


def prepare_commonvoice(
    data_dir: str | Path, out_dir: str | Path, splits: Sequence[str] = ("train", "dev", "test")
) -> PrepareResult:
    root = find_root(data_dir, [], lambda p: (p / "clips").is_dir())
    tables = {s: root / f"{s}.tsv" for s in splits}
    absent = [str(p) for p in tables.values() if not p.is_file()]
    if absent or not (root / "clips").is_dir():
        raise FileNotFoundError(
            f"{data_dir}: not a Common Voice language folder (need clips/ and {', '.join(f'{s}.tsv' for s in splits)};"
            f" missing: {', '.join(absent) or 'clips/'})"
        )
    skipped: list[Skipped] = []
    out = {s: read_table(tsv, root / "clips", skipped) for s, tsv in tables.items()}
    return finish(out_dir, out, skipped, corpus="commonvoice")
