"""Manifests: JSONL, one utterance a line, the NeMo convention.

    {"audio_filepath": "wavs/a.wav", "duration": 1.93, "text": "call mom", "speaker": "f2"}

`audio_filepath` may be relative: it resolves against the manifest's folder. Extra fields (speaker, ...) are kept.
`read_manifest` validates every line and raises `ManifestError` naming the file and line number of a bad one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

REQUIRED = ("audio_filepath", "duration", "text")


class ManifestError(ValueError):
    """A manifest line is malformed; the message names the file and the line."""


@dataclass
class Utterance:
    audio_filepath: str  # absolute, resolved
    duration: float  # seconds
    text: str
    extra: dict = field(default_factory=dict)  # any other fields of the line (speaker, offset, ...)

    @property
    def id(self) -> str:
        return str(self.extra.get("id") or Path(self.audio_filepath).stem)


def read_manifest(path: str | Path, for_transcription: bool = False) -> list[Utterance]:
    """Every line of a JSONL manifest -> Utterance. `for_transcription`: only `audio_filepath` is required (there
    is no text yet; `duration` only with an `offset`, as a Kaldi segment has); missing text is "", a missing
    duration 0.0 (the whole file)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    base = path.resolve().parent
    utts = []
    with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is an error naming its line, not a codec crash
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM on the first line is allowed
            except UnicodeDecodeError as e:
                raise ManifestError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: invalid JSON ({e.msg})") from None
            if not isinstance(item, dict):
                raise ManifestError(f"{where}: expected a JSON object, got {type(item).__name__}")
            required = REQUIRED if not for_transcription else ("audio_filepath",) + ("duration",) * ("offset" in item)
            missing = [k for k in required if k not in item]
            if missing:
                raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
            audio, duration, text = item["audio_filepath"], item.get("duration", 0.0), item.get("text", "")
            if not isinstance(audio, str) or not audio:
                raise ManifestError(f"{where}: audio_filepath must be a non-empty string")
            if "duration" in item and (
                isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0
            ):
                raise ManifestError(f"{where}: duration must be a positive number, got {duration!r}")
            if not isinstance(text, str):
                raise ManifestError(f"{where}: text must be a string, got {type(text).__name__}")
            offset = item.get("offset", 0.0)
            if isinstance(offset, bool) or not isinstance(offset, (int, float)) or offset < 0:
                raise ManifestError(f"{where}: offset must be a number >= 0, got {offset!r}")
            extra = {k: v for k, v in item.items() if k not in REQUIRED}
            utts.append(Utterance(str(base / audio), float(duration), text, extra))
    return utts


def write_manifest(path: str | Path, utts: Iterable[Utterance]) -> int:
    """Write utterances as JSONL; audio paths inside the manifest's folder are stored relative to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for u in utts:
            audio = Path(u.audio_filepath).resolve()
            try:
                rel = os.path.relpath(audio, base)
                audio_str = rel if not rel.startswith("..") else str(audio)
            except ValueError:  # other drive on Windows
                audio_str = str(audio)
            line = {"audio_filepath": audio_str, "duration": round(u.duration, 4), "text": u.text, **u.extra}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1
    return n
