"""`asr validate`: every problem of a manifest at once, as Kaldi's validate_data_dir.sh reports a data folder.

    validate_manifest(path, audio=False) -> Validation        .problems: each prints as "file:line: problem"
    audio_problems(utterance, decode=False) -> list[Problem]  what is wrong with its audio (errors and warnings)

The line checks (JSON, fields, types, duplicates, empty text) are `check_manifest`'s, the ones `read_manifest` runs
for every command. With `audio=True` each utterance's file is opened too: missing or unreadable, a segment outside
the file, shorter than one analysis window, a duration that disagrees with the file, samples that do not decode.
Training runs the header checks at start-up (`load_split`) and every command reports a file that fails later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asr.audio import AudioError, audio_info, read_audio
from asr.data.manifest import ManifestError, Problem, Utterance, check_manifest

MIN_SAMPLES_16K = 400  # one 25 ms analysis window at 16 kHz: anything shorter gives no feature frame
DURATION_TOLERANCE = 0.1  # seconds (or 1%, if more) a whole-file duration may differ from the file's own


def audio_problems(u: Utterance, decode: bool = False, min_samples: int = MIN_SAMPLES_16K) -> list[Problem]:
    """What is wrong with `u`'s audio (empty when nothing), each Problem at `u.source`. Errors make it unusable;
    a duration that disagrees with the file is a warning (it only misplaces the utterance in length buckets).
    Reads the header only unless `decode` (then the samples of its span are decoded too, which finds a corrupt
    body or NaN samples)."""
    where = u.source or u.audio_filepath
    if not Path(u.audio_filepath).is_file():
        return [Problem(where, f"{u.audio_filepath}: audio file not found")]
    try:
        frames, sr = audio_info(u.audio_filepath)
    except AudioError as e:
        return [Problem(where, str(e))]
    length = frames / sr
    found = []
    if "offset" in u.extra:  # a segment: it must lie inside the file
        end = float(u.extra["offset"]) + u.duration
        if end > length + 0.01:
            return [
                Problem(where, f"segment ends at {end:.2f} s, after the end of {u.audio_filepath} ({length:.2f} s)")
            ]
        frames = int(u.duration * sr)
    elif u.duration > 0 and abs(u.duration - length) > max(DURATION_TOLERANCE, 0.01 * length):
        found.append(Problem(where, f"duration {u.duration:g} s, but {u.audio_filepath} holds {length:.2f} s", False))
    if frames * 16000 < min_samples * sr:
        return [Problem(where, f"{u.audio_filepath}: too short ({frames} samples, under one 25 ms window)")]
    if decode:
        try:
            offset = float(u.extra.get("offset", 0.0))
            read_audio(u.audio_filepath, offset, u.duration if "offset" in u.extra else None)
        except AudioError as e:
            return [Problem(where, str(e))]
    return found


@dataclass
class Validation:
    """One manifest checked: how many lines hold an utterance (good or bad), and every problem in line order."""

    path: Path
    lines: int
    problems: list[Problem]

    @property
    def bad_lines(self) -> int:
        return len({p.where for p in self.problems if p.error})

    def summary(self, audio: bool) -> str:
        warnings = sum(not p.error for p in self.problems)
        checked = "lines and audio checked" if audio else "lines checked; --audio opens the audio too"
        return f"{self.path}: {self.lines} lines, {self.bad_lines} with errors, {warnings} warnings ({checked})"


def validate_manifest(path: str | Path, audio: bool = False, for_transcription: bool = False) -> Validation:
    """All problems of one manifest (a missing manifest is one problem, not an exception)."""
    path = Path(path)
    try:
        utts, problems = check_manifest(path, for_transcription)
    except ManifestError as e:
        return Validation(path, 0, [Problem(str(path), str(e).split(": ", 1)[-1])])
    if audio:
        for u in utts:
            problems += audio_problems(u, decode=True)
        problems.sort(key=lambda p: int(p.where.rsplit(":", 1)[1]))  # stable: a line's problems keep their order
    with open(path, "rb") as f:
        lines = sum(1 for raw in f if raw.strip())
    return Validation(path, lines, problems)
