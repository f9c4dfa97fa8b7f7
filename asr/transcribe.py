"""`asr transcribe`'s files in and out: inputs found, loaded a group at a time, transcribed, written as they go.

    find_inputs(["a.wav", "folder/", "segments.jsonl"]) -> ([Input(source, name, label)], errors)
    transcribe_inputs(recognizer, inputs, options, fmt="txt", out_dir=None) -> failures

A folder is searched recursively for audio files (outputs mirror its tree); a manifest is read with the one manifest
reader (`asr.data.manifest.read_manifest`), so a Kaldi-style segment (`offset`, `duration`) decodes only its span.
Every transcription goes through `Recognizer.transcribe`. A file that fails to load is reported and skipped; the
others go on.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from asr.audio import AudioError, load_audio
from asr.data.dataset import load_utterance
from asr.data.manifest import Utterance, read_manifest
from asr.decoding.options import DecodingOptions
from asr.outputs import check_outputs, write_text
from asr.transcript import render

# Extensions picked up in folders: the audio containers libsndfile reads, and headerless .raw PCM.
AUDIO_SUFFIXES = {
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph", ".nist", ".aiff", ".aif", ".aifc", ".au", ".snd",
    ".caf", ".w64", ".rf64", ".raw",
}  # fmt: skip
GROUP_SECONDS = 600.0  # audio loaded at a time: bounds memory on big folders, and output comes as it goes
PROGRESS_MIN_FILES = 10  # fewer files get no progress bar


@dataclass
class Input:
    source: str | Utterance  # a file, or a manifest line (its offset/duration span)
    name: Path  # output file name without suffix (with --out-dir)
    label: str  # what the output calls it: the path, or a manifest segment's id

    def load(self, sample_rate: int):
        if isinstance(self.source, Utterance):
            return load_utterance(self.source, sample_rate)
        return load_audio(self.source, sample_rate)


def find_inputs(paths: list[str]) -> tuple[list[Input], list[str]]:
    """Files, folders (searched recursively) and .jsonl manifests -> the inputs, and an error for each argument
    that gave none (one bad argument does not stop the others)."""
    items: list[Input] = []
    errors: list[str] = []
    for arg in paths:
        p = Path(arg)
        try:
            if p.is_dir():
                found = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
                if not found:
                    raise ValueError(f"{p}: no audio files in this folder")
                items += [Input(str(f), f.relative_to(p).with_suffix(""), str(f)) for f in found]
            elif p.suffix.lower() == ".jsonl":
                for u in read_manifest(p, for_transcription=True):
                    segment = "offset" in u.extra or "id" in u.extra
                    items.append(Input(u, Path(u.id), u.id if segment else u.audio_filepath))
            else:  # a file, or a missing path: reported when it fails to load
                items.append(Input(arg, Path(p.stem), arg))
        except ValueError as e:  # ManifestError is one
            errors.append(str(e))
    return items, errors


def output_files(names: list[Path], out_dir: Path, fmt: str) -> list[Path]:
    """One output file per input; a name taken twice (a.wav and a.flac) gets _1, _2, ..."""
    used: set[Path] = set()
    files = []
    for name in names:
        target, k = out_dir / f"{name}.{fmt}", 0
        while target in used:
            k += 1
            target = out_dir / f"{name}_{k}.{fmt}"
        used.add(target)
        files.append(target)
    return files


def transcribe_inputs(
    recognizer,
    items: list[Input],
    options: DecodingOptions,
    fmt: str = "txt",
    out_dir: Path | None = None,
    batch_size: int | None = None,
    max_chunk_seconds: float | None = None,
) -> int:
    """Transcribe every input, printing (txt: `label<TAB>text` lines) or writing one file each to `out_dir`.
    Returns how many inputs failed to load (each reported on stderr)."""
    from tqdm import tqdm

    sr = recognizer.cfg.features.sample_rate
    targets = output_files([it.name for it in items], out_dir, fmt) if out_dir else []
    check_outputs(targets)  # before decoding anything: refusing after an hour of work would waste it
    headers = fmt in ("srt", "vtt") and out_dir is None and len(items) > 1  # which document is which
    group_files = 4 * (batch_size or recognizer.cfg.decode.batch_size)
    quiet = True if len(items) < PROGRESS_MIN_FILES else None  # None: tqdm shows the bar only on a terminal
    bar = tqdm(total=len(items), unit="file", file=sys.stderr, disable=quiet)
    pending: list[tuple[int, object]] = []  # (index in items, waveform)
    failed = 0

    def flush() -> None:
        found = recognizer.transcribe(
            [w for _, w in pending], options, sample_rate=sr, batch_size=batch_size, max_chunk_seconds=max_chunk_seconds
        )
        for (i, _), t in zip(pending, found):
            label = items[i].label
            if out_dir is not None:
                write_text(targets[i], render(t, fmt, label))
            elif fmt == "txt":
                print(f"{label}\t{t.text}", flush=True)
            else:
                print((f"==> {label} <==\n" if headers else "") + render(t, fmt, label), end="", flush=True)
        bar.update(len(pending))
        pending.clear()

    for i, item in enumerate(items):
        try:
            pending.append((i, item.load(sr)))
        except AudioError as e:  # one bad file does not stop the others; the caller's exit code says it happened
            where = f"{item.source.source}: " if isinstance(item.source, Utterance) and item.source.source else ""
            tqdm.write(f"error: {where}{e}", file=sys.stderr)
            failed += 1
            bar.update(1)
            continue
        if sum(w.numel() for _, w in pending) >= GROUP_SECONDS * sr or len(pending) >= group_files:
            flush()
    if pending:
        flush()
    bar.close()
    return failed
