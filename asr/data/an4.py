"""CMU AN4 (census database, ~1991: spelled letters, digit strings, control words; 16 kHz) -> JSONL manifests.

    prepare_an4(data_dir, out_dir, dev_speakers=None, n_dev_speakers=6) -> PrepareResult

Layout (`data_dir` is `an4/` or the folder holding it), as CMU distributes it in either archive:

    an4_sphere.tar.gz:           wav/an4_clstk/<speaker>/<utt>.sph     NIST SPHERE
    an4_raw.bigendian.tar.gz:    wav/an4_clstk/<speaker>/<utt>.raw     headerless 16-bit big-endian PCM
    etc/an4_train.transcription  "<s> TEXT </s> (<utt>)" a line       etc/an4_train.fileids  "an4_clstk/<spk>/<utt>"
    etc/an4_test.transcription   "TEXT (<utt>)" a line (no <s>)       wav/an4test_clstk/<speaker>/<utt>.{sph,raw}

Utterance ids look like `an251-fash-b`: the middle part is the speaker (first letter f/m: the speaker's sex).
Splits: the training part minus `dev_speakers` is train; `dev_speakers` (default: `n_dev_speakers` chosen by a
hash of their names, half female, half male) are dev, so dev voices are never heard in training; the test part
(130 utterances, 10 other speakers) is test when `wav/an4test_clstk` is present. Transcripts are kept as the corpus
writes them (spelled letters "R O W L E Y" and words), lower-cased.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Sequence

from asr.data.common import PrepareResult, Skipped, duration_or_skip, find_root, finish, skip
from asr.data.manifest import Utterance
from asr.text import normalize_text

log = logging.getLogger("asr")

LINE = re.compile(r"^(.*)\(\s*([^()\s]+)\s*\)\s*$")  # "TEXT (utt-id)", TEXT possibly wrapped in <s> ... </s>
MARKUP = {"<s>", "</s>", "<sil>"}
AUDIO_SUFFIXES = (".sph", ".raw", ".wav")
PARTS = {"train": "an4_clstk", "test": "an4test_clstk"}  # transcription part -> audio folder under wav/


def speaker_of(utt_id: str) -> str:
    parts = utt_id.split("-")
    return parts[1] if len(parts) >= 3 else parts[0]


def read_transcription(path: Path, skipped: list[Skipped]) -> dict[str, str]:
    """utt id -> lower-cased transcript; malformed lines are reported."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        m = LINE.match(line.strip())
        if not m:
            skip(skipped, f"{path}:{lineno}", f"not of the form 'TEXT (utterance-id)': {line.strip()!r}")
            continue
        words = [w for w in m.group(1).split() if w.lower() not in MARKUP]
        out[m.group(2)] = normalize_text(" ".join(words))
    return out


def read_fileids(path: Path) -> dict[str, str]:
    """utt id -> path under wav/ without extension ("an4_clstk/fash/an251-fash-b")."""
    if not path.is_file():
        return {}
    return {Path(line.strip()).name: line.strip() for line in path.read_text().splitlines() if line.strip()}


def find_audio(wav_dir: Path, rel: str) -> Path | None:
    for suffix in AUDIO_SUFFIXES:
        p = wav_dir / f"{rel}{suffix}"
        if p.is_file():
            return p
    return None


def read_part(root: Path, part: str, skipped: list[Skipped]) -> list[Utterance]:
    trans_path = root / "etc" / f"an4_{part}.transcription"
    audio_dir = root / "wav" / PARTS[part]
    texts = read_transcription(trans_path, skipped)
    fileids = read_fileids(root / "etc" / f"an4_{part}.fileids")
    utts, used = [], set()
    for utt_id, text in texts.items():
        rel = fileids.get(utt_id, f"{PARTS[part]}/{speaker_of(utt_id)}/{utt_id}")
        audio = find_audio(root / "wav", rel)
        if audio is None:
            skip(skipped, f"{trans_path.name}: {utt_id}", f"transcript without audio (wav/{rel}.sph/.raw not found)")
            continue
        used.add(audio.resolve())
        if not text:
            skip(skipped, audio, "empty transcript")
            continue
        duration = duration_or_skip(audio, skipped)
        if duration is None:
            continue
        speaker = Path(rel).parent.name or speaker_of(utt_id)
        utts.append(Utterance(str(audio), duration, text, {"id": utt_id, "speaker": speaker}))
    for audio in sorted(p for p in audio_dir.glob("*/*") if p.suffix.lower() in AUDIO_SUFFIXES):
        if audio.resolve() not in used:
            skip(skipped, audio, f"audio without transcript (not in {trans_path.name})")
    return utts


def choose_dev_speakers(speakers: Sequence[str], n: int) -> list[str]:
    """n speakers, half of them female (AN4 names start with f/m), in an order fixed by a hash of the names."""
    order = sorted(set(speakers), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    female = [s for s in order if s.startswith("f")]
    male = [s for s in order if not s.startswith("f")]
    n_f = min(n // 2, len(female))
    chosen = female[:n_f] + male[: n - n_f]
    return sorted(chosen)


def prepare_an4(
    data_dir: str | Path,
    out_dir: str | Path,
    dev_speakers: Sequence[str] | None = None,
    n_dev_speakers: int = 6,
) -> PrepareResult:
    root = find_root(data_dir, ["an4"], lambda p: (p / "etc" / "an4_train.transcription").is_file())
    if not (root / "etc" / "an4_train.transcription").is_file():
        raise FileNotFoundError(f"{data_dir}: AN4 etc/an4_train.transcription not found")
    skipped: list[Skipped] = []
    train = read_part(root, "train", skipped)
    speakers = sorted({u.extra["speaker"] for u in train})
    if dev_speakers:
        unknown = sorted(set(dev_speakers) - set(speakers))
        if unknown:
            raise ValueError(f"dev speaker(s) not in the AN4 training part: {', '.join(unknown)}")
        dev_set = set(dev_speakers)
    else:
        dev_set = set(choose_dev_speakers(speakers, n_dev_speakers))
    log.info("an4: dev speakers (held out of training): %s", ", ".join(sorted(dev_set)))
    splits = {
        "train": [u for u in train if u.extra["speaker"] not in dev_set],
        "dev": [u for u in train if u.extra["speaker"] in dev_set],
    }
    has_test = (root / "etc" / "an4_test.transcription").is_file() and (root / "wav" / PARTS["test"]).is_dir()
    if has_test:
        splits["test"] = read_part(root, "test", skipped)
    else:
        log.warning(
            "an4: the test part (etc/an4_test.transcription + wav/an4test_clstk) is not in %s; no test manifest", root
        )
    return finish(out_dir, splits, skipped, corpus="an4")
