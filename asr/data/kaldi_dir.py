"""A Kaldi data directory (wav.scp, text, optional segments and utt2spk) -> one JSONL manifest.

    prepare_kaldi_dir(data_dir, out_dir, split="train") -> PrepareResult     # writes <out_dir>/<split>.jsonl

Files (each "key value" a line, the key up to the first space):

    wav.scp    <recording-id> <path>          a plain file path; command pipes ("sox ... |") and ark offsets are not
                                              supported: those lines are reported and skipped
    text       <utterance-id> <transcript>    kept as written (normalised at training and scoring)
    segments   <utterance-id> <recording-id> <start> <end>    optional; end -1 means the end of the recording
    utt2spk    <utterance-id> <speaker>       optional

Without `segments` the utterance ids are the recording ids. With it each utterance is a stretch of a recording: the
manifest stores the recording's path with "offset" (start) and "duration" (end - start) in seconds, which the
dataset and `load_audio(path, sr, offset, duration)` honour. One directory is one split: run it once per split.
"""

from __future__ import annotations

import re
from pathlib import Path

from asr.audio import AudioError
from asr.data.common import PrepareResult, Skipped, duration_of, finish, skip
from asr.data.manifest import Utterance

ARCHIVE = re.compile(r"(\.ark|:\d+(\[[^\]]*\])?)$")  # foo.ark, foo.ark:1234, foo.ark:1234[0:100]


def read_table(path: Path, skipped: list[Skipped]) -> dict[str, tuple[str, int]]:
    """key -> (rest of the line, line number); a line without a value is reported."""
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        value = value.strip()
        if key in out:
            skip(skipped, f"{path}:{lineno}", f"duplicate key {key!r} (first on line {out[key][1]}); line ignored")
            continue
        out[key] = (value, lineno)
    return out


def resolve(value: str, data_dir: Path) -> Path:
    """A wav.scp path. Relative ones are relative to where the Kaldi recipe ran, usually the data directory's
    grandparent (`s5/` for `s5/data/train`); failing that, the data directory itself."""
    p = Path(value)
    if p.is_absolute():
        return p
    candidates = [data_dir.parent.parent / p, data_dir / p]
    return next((c for c in candidates if c.is_file()), candidates[0])


def read_wav_scp(path: Path, skipped: list[Skipped]) -> dict[str, Path]:
    out = {}
    for rec, (value, lineno) in read_table(path, skipped).items():
        where = f"{path}:{lineno}"
        if not value:
            skip(skipped, where, f"no path for {rec}")
        elif value.endswith("|") or value == "-":
            skip(skipped, where, f"command pipe not supported ({rec} {value}); convert the audio to files first")
        elif ARCHIVE.search(value):
            skip(skipped, where, f"Kaldi archive (ark) entry not supported ({rec} {value})")
        else:
            out[rec] = resolve(value, path.parent)
    return out


def prepare_kaldi_dir(data_dir: str | Path, out_dir: str | Path, split: str = "train") -> PrepareResult:
    d = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d}: not a Kaldi data directory ({name} not found)")
    skipped: list[Skipped] = []
    wavs = read_wav_scp(d / "wav.scp", skipped)
    texts = read_table(d / "text", skipped)
    spk = {k: v for k, (v, _) in read_table(d / "utt2spk", skipped).items()} if (d / "utt2spk").is_file() else {}
    durations: dict[str, float | str] = {}  # recording -> seconds, or the reason it is unusable

    def rec_duration(rec: str) -> float | str:
        if rec not in durations:
            try:
                durations[rec] = duration_of(wavs[rec])
            except AudioError as e:
                durations[rec] = str(e)
                skip(skipped, wavs[rec], str(e).removeprefix(f"{wavs[rec]}: "))
        return durations[rec]

    utts = []
    if (d / "segments").is_file():
        segments = read_table(d / "segments", skipped)
        for utt, (value, lineno) in segments.items():
            where = f"{d / 'segments'}:{lineno}"
            fields = value.split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                skip(skipped, where, f"expected '<utt> <recording> <start> <end>', got {utt} {value!r}")
                continue
            if utt not in texts:
                skip(skipped, where, f"segment {utt} without transcript (not in text)")
                continue
            if rec not in wavs:
                skip(skipped, where, f"recording {rec} not in wav.scp (or its line was skipped)")
                continue
            total = rec_duration(rec)
            if isinstance(total, str):
                continue  # the recording itself was reported
            end = total if end < 0 else end
            if not 0 <= start < end:
                skip(skipped, where, f"segment {utt}: bad times {start}..{end}")
            elif end > total + 0.01:  # 10 ms slack: segment times are rounded
                skip(skipped, where, f"segment {utt} ends at {end:.2f} s, after the recording ({total:.2f} s)")
            else:
                utts.append(
                    Utterance(
                        str(wavs[rec]),
                        min(end, total) - start,
                        " ".join(texts[utt][0].split()),
                        {"id": utt, "offset": round(start, 4), "recording": rec},
                    )
                )
        for utt, (_, lineno) in texts.items():
            if utt not in segments:
                skip(skipped, f"{d / 'text'}:{lineno}", f"transcript without audio ({utt} not in segments)")
    else:
        for utt, (value, lineno) in texts.items():
            if utt not in wavs:
                skip(skipped, f"{d / 'text'}:{lineno}", f"transcript without audio ({utt} not in wav.scp, or skipped)")
                continue
            dur = rec_duration(utt)
            if not isinstance(dur, str):
                utts.append(Utterance(str(wavs[utt]), dur, " ".join(value.split()), {"id": utt}))
        for rec in wavs:
            if rec not in texts:
                skip(skipped, wavs[rec], f"audio without transcript ({rec} not in text)")
    kept = []
    for u in utts:
        if not u.text:
            skip(skipped, u.extra["id"], "empty transcript")
            continue
        if u.extra["id"] in spk:
            u.extra["speaker"] = spk[u.extra["id"]]
        kept.append(u)
    return finish(out_dir, {split: kept}, skipped, corpus=f"kaldi {d}")
