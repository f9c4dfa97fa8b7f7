"""Self-contained files of tensors and plain values (ASR model files, LM files), written and read safely.

write_file(path, blob)                 atomic torch.save: an interrupted save never leaves a half-written file
read_file(path, fmt, what) -> dict     torch.load(weights_only=True): no pickled code runs; checks the format tag
"""

from __future__ import annotations

from pathlib import Path

import torch


def write_file(path: str | Path, blob: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def read_file(path: str | Path, fmt: str, what: str, hint: str = "") -> dict:
    """The blob saved at `path`, which must carry {"format": fmt}; errors name the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable {what} file ({e})") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise ValueError(f"{path}: not a {fmt} {what} file{hint}")
    return blob
