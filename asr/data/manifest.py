"""Manifests: JSONL, one utterance a line, the NeMo convention.

    {"audio_filepath": "wavs/a.wav", "duration": 1.93, "text": "call mom", "speaker": "f2"}

`audio_filepath` may be relative: it resolves against the manifest's folder. Extra fields (speaker, ...) are kept.
`read_manifest` checks every line (`check_manifest`) and raises one `ManifestError` listing each bad line as
`file:line: problem`; `Utterance.source` keeps that "file:line" so later errors (unreadable audio) can name it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from asr.outputs import atomic_open

REQUIRED = ("audio_filepath", "duration", "text")
MAX_LISTED = 10  # problems a ManifestError lists; `asr validate` shows them all

log = logging.getLogger("asr")


class ManifestError(ValueError):
    """A manifest line is malformed; the message names the file and the line."""


@dataclass
class Utterance:
    audio_filepath: str  # absolute, resolved
    duration: float  # seconds
    text: str
    extra: dict = field(default_factory=dict)  # any other fields of the line (speaker, offset, ...)
    source: str = field(default="", compare=False)  # "manifest:line" it was read from, for error messages

    @property
    def id(self) -> str:
        return str(self.extra.get("id") or Path(self.audio_filepath).stem)


@dataclass
class Problem:
    """One thing wrong with a manifest line: `where` is "file:line". Errors stop reading; warnings are reported."""

    where: str
    message: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.where}: {'' if self.error else 'warning: '}{self.message}"


def _number(value, positive: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        x = float(value)  # JSON integers are unbounded: 10**400 does not fit a float
    except OverflowError:
        return False
    return math.isfinite(x) and (x > 0 if positive else x >= 0)


def _check_line(item: object, where: str, for_transcription: bool) -> list[Problem]:
    """The cheap checks of one parsed line (no audio is opened): shape, required keys, types, values."""
    if not isinstance(item, dict):
        return [Problem(where, f"expected a JSON object, got {type(item).__name__}")]
    required = REQUIRED if not for_transcription else ("audio_filepath",) + ("duration",) * ("offset" in item)
    missing = [k for k in required if k not in item]
    problems = [Problem(where, f"missing field(s) {', '.join(missing)}")] if missing else []
    audio, text = item.get("audio_filepath", "x"), item.get("text", "")
    if not isinstance(audio, str) or not audio.strip():
        problems.append(Problem(where, f"audio_filepath must be a non-empty string, got {audio!r}"))
    if "duration" in item and not _number(item["duration"], positive=True):
        problems.append(Problem(where, f"duration must be a positive number, got {item['duration']!r}"))
    if "offset" in item and not _number(item["offset"], positive=False):
        problems.append(Problem(where, f"offset must be a number >= 0, got {item['offset']!r}"))
    if not isinstance(text, str):
        problems.append(Problem(where, f"text must be a string, got {type(text).__name__}"))
    elif not for_transcription and "text" in item:
        if not text.strip():
            problems.append(Problem(where, "empty text (training skips it; a score needs a reference)", error=False))
        elif any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
            bad = next(c for c in text if unicodedata.category(c) in ("Cc", "Cf"))
            problems.append(Problem(where, f"text holds control character U+{ord(bad):04X}", error=False))
    if "id" in item and (not isinstance(item["id"], (str, int)) or isinstance(item["id"], bool) or item["id"] == ""):
        problems.append(Problem(where, f"id must be a non-empty string or integer, got {item['id']!r}"))
    return problems


def check_manifest(path: str | Path, for_transcription: bool = False) -> tuple[list[Utterance], list[Problem]]:
    """Every line of a manifest checked: (the utterances of the good lines, every problem found). The checks of
    Kaldi's validate_data_dir.sh that need no audio: UTF-8, JSON objects, required fields and their types, positive
    finite durations, offsets >= 0, duplicate ids (not for transcription, where ids are not scored); warnings for
    the same audio span listed twice and for empty or odd text. `asr validate --audio` adds the audio checks
    (asr/data/validate.py)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    base = path.resolve().parent
    utts: list[Utterance] = []
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is an error naming its line, not a codec crash
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM on the first line is allowed
            except UnicodeDecodeError as e:
                problems.append(Problem(where, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"))
                continue
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (ValueError, RecursionError) as e:  # JSONDecodeError, a 5000-digit number, deep nesting
                msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e).split(";")[0] or "nested too deeply"
                problems.append(Problem(where, f"invalid JSON ({msg})"))
                continue
            found = _check_line(item, where, for_transcription)
            problems += found
            if any(p.error for p in found):
                continue
            extra = {k: v for k, v in item.items() if k not in REQUIRED}
            u = Utterance(str(base / item["audio_filepath"]), float(item.get("duration", 0.0)), item.get("text", ""))
            u.extra, u.source = extra, where
            if not for_transcription:
                key = u.id if "id" in extra else f"{u.audio_filepath}@{extra.get('offset', 0)}"  # same file and span
                if key in first_line and "id" in extra:  # ids name hypotheses and scores: they must be unique
                    problems.append(Problem(where, f"duplicate id {u.id!r} (first on line {first_line[key]})"))
                    continue
                if key in first_line:  # the same recording twice: legal, but it counts twice in training and scores
                    msg = f"audio {item['audio_filepath']!r} listed again (first on line {first_line[key]})"
                    problems.append(Problem(where, msg, error=False))
                first_line[key] = lineno
            utts.append(u)
    return utts, problems


def read_manifest(path: str | Path, for_transcription: bool = False) -> list[Utterance]:
    """Every line of a JSONL manifest -> Utterance. `for_transcription`: only `audio_filepath` is required (there
    is no text yet; `duration` only with an `offset`, as a Kaldi segment has); missing text is "", a missing
    duration 0.0 (the whole file). Any error -> one ManifestError listing every bad line as file:line (the first
    ten); warnings are logged."""
    utts, problems = check_manifest(path, for_transcription)
    errors = [p for p in problems if p.error]
    warnings = [p for p in problems if not p.error]
    for w in warnings[:MAX_LISTED]:
        log.warning("%s", w)
    if len(warnings) > MAX_LISTED:
        log.warning(
            "%s: ... and %d more warnings (asr validate %s lists them all)", path, len(warnings) - MAX_LISTED, path
        )
    if errors:
        lines = [str(p) for p in errors[:MAX_LISTED]]
        if len(errors) > MAX_LISTED:
            lines.append(f"{path}: ... and {len(errors) - MAX_LISTED} more errors (asr validate {path} lists them all)")
        raise ManifestError("\n".join(lines))
    return utts


def write_manifest(path: str | Path, utts: Iterable[Utterance]) -> int:
    """Write utterances as JSONL; audio paths inside the manifest's folder are stored relative to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    n = 0
    with atomic_open(path) as f:  # a crash leaves the old manifest or the new one, never half of one
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
