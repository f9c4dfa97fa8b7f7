"""A folder of audio files with same-named .txt transcripts (searched recursively) -> JSONL manifests.

    prepare_folder(data_dir, out_dir, split=None, dev=0.1, test=0.1) -> PrepareResult

    my_corpus/alice/take1.wav + my_corpus/alice/take1.txt ("Turn the lights on.")
    my_corpus/bob/2024/clip.flac + my_corpus/bob/2024/clip.txt

Audio is anything `asr.audio` reads (wav, flac, ogg, opus, mp3, sph, raw). Transcripts are kept as written
(normalised at training and scoring). With `split="train"` everything goes to that one manifest; otherwise each
file is assigned by a hash of its path relative to `data_dir` (`split_by_hash`: deterministic, unaffected by
adding other files). The speaker is the name of the top-level folder below `data_dir`, when there is one.
"""

from __future__ import annotations

from pathlib import Path

from asr.data.common import AUDIO_EXTENSIONS, PrepareResult, Skipped, duration_or_skip, finish, skip, split_by_hash
from asr.data.manifest import Utterance
from asr.text import normalize_text


def prepare_folder(
    data_dir: str | Path, out_dir: str | Path, split: str | None = None, dev: float = 0.1, test: float = 0.1
) -> PrepareResult:
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data directory not found")
    skipped: list[Skipped] = []
    splits: dict[str, list[Utterance]] = {split: []} if split else {"train": [], "dev": [], "test": []}
    audio_stems = set()
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()):
        audio_stems.add(audio.with_suffix(""))
        txt = audio.with_suffix(".txt")
        if not txt.is_file():
            skip(skipped, audio, f"audio without transcript ({txt.name} not found)")
            continue
        # Kept as written: the recipe's normaliser reads digits and punctuation at training and scoring.
        text = " ".join(txt.read_text(encoding="utf-8", errors="replace").split())
        if not normalize_text(text):
            skip(skipped, txt, "empty transcript")
            continue
        duration = duration_or_skip(audio, skipped)
        if duration is None:
            continue
        rel = audio.relative_to(root)
        extra = {"id": rel.with_suffix("").as_posix().replace("/", "-")}
        if len(rel.parts) > 1:
            extra["speaker"] = rel.parts[0]
        target = split or split_by_hash(rel.as_posix(), dev=dev, test=test)
        splits[target].append(Utterance(str(audio), duration, text, extra))
    for txt in sorted(root.rglob("*.txt")):
        if txt.with_suffix("") not in audio_stems:
            skip(skipped, txt, "transcript without audio (no audio file of the same name)")
    return finish(out_dir, splits, skipped, corpus=f"folder {root}")
