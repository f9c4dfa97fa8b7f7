"""Self-contained files of tensors and plain values (ASR model files, LM files), written and read safely.

write_file(path, blob)                      atomic torch.save: an interrupted save never leaves a half-written file
read_file(path, fmt, what) -> dict          torch.load(weights_only=True): no pickled code runs; checks the zip
                                            archive (CRCs) and the format tag
check_sizes(path, state, what, sizes, n)    the config's sizes are those of its weights (checked before building)

Errors, the documented ones (tests/test_fuzz.py feeds the loaders arbitrary bytes and mutated files): a missing file
raises FileNotFoundError; anything else wrong with a file raises ModelFileError (a ValueError). Both name the file.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch

from asr.outputs import atomic_open

ZIP_MAGIC = b"PK\x03\x04"  # torch.save has written zip archives since torch 1.6


class ModelFileError(ValueError):
    """A model or LM file is not one, or is damaged or inconsistent; the message names the file.

    A ValueError, so callers that catch ValueError (the command line) report it as before."""


def write_file(path: str | Path, blob: dict) -> Path:
    """torch.save through asr.outputs.atomic_open: not over a file asr did not write (unless --overwrite), and a
    full disk is an OutputError naming the file that leaves the previous one whole.

    Serialized in memory first: torch.save's own writer reports a full disk as a RuntimeError without an errno."""
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getbuffer())
    return Path(path)


def read_file(path: str | Path, fmt: str, what: str, hint: str = "") -> dict:
    """The blob saved at `path`, which must carry {"format": fmt}; errors name the file and what was expected.

    Raises FileNotFoundError (no file) or ModelFileError (anything else)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    _check_archive(path, what)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...): all mean this
        raise ModelFileError(f"{path}: not a readable {what} file ({describe(e)})") from None
    found = blob.get("format") if isinstance(blob, dict) else None
    if found != fmt:
        raise ModelFileError(f"{path}: {_format_problem(found, fmt, what)}{hint}")
    return blob


def _check_archive(path: Path, what: str) -> None:
    """Refuse what torch.load must not be given: a file that is not a zip archive (torch would parse it as its
    legacy format, whose pickled storage sizes it allocates before reading), compressed entries (torch.save stores
    them, and a deflated entry could expand without bound) and entries whose CRC fails (torch.load does not check
    CRCs: a flipped byte in the weights would load silently as a different model)."""
    with open(path, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise ModelFileError(f"{path}: not a {what} file (not a zip archive as torch.save writes)")
    try:
        with zipfile.ZipFile(path) as zf:
            compressed = [i.filename for i in zf.infolist() if i.compress_type != zipfile.ZIP_STORED]
            if compressed:
                raise ModelFileError(f"{path}: not a {what} file (compressed entry {compressed[0]})")
            bad = zf.testzip()
    except ModelFileError:
        raise
    except Exception as e:  # BadZipFile, EOFError, OSError, ...: a truncated or damaged archive
        raise ModelFileError(f"{path}: damaged {what} file: broken zip archive, truncated? ({describe(e)})") from None
    if bad is not None:
        raise ModelFileError(
            f"{path}: damaged {what} file: checksum mismatch in {bad} (corrupted on disk or in transfer)"
        )


def _format_problem(found: object, fmt: str, what: str) -> str:
    """Why a blob's format tag is not `fmt`: another version of the same format is said so."""
    family = fmt.rsplit("/", 1)[0]
    if isinstance(found, str) and found.rsplit("/", 1)[0] == family:
        return f"{what} file format {found!r}, but this version of the toolkit reads {fmt!r} (another version wrote it)"
    return f"not a {fmt} {what} file"


def check_sizes(path: str | Path, state: object, what: str, sizes: dict[str, int], n_layers: int) -> None:
    """Refuse a config whose sizes its own weights do not have, before a module is built from it.

    A flipped byte can make d_model 2**31 or n_layers 10**9: building that allocates (or overcommits until the OOM
    killer strikes) or loops for hours before load_state_dict could say the shapes differ. Each of `sizes` (name ->
    value) must be a dimension of some weight, and each layer has weights, so `n_layers` is at most the number of
    tensors: a built module is then about the size of the file. Shapes are checked exactly by load_state_dict."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: damaged {what} file: state_dict is not a dict of tensors")
    if n_layers > len(state):
        raise ModelFileError(
            f"{path}: damaged {what} file: the config asks for {n_layers} layers, the weights hold {len(state)} tensors"
        )
    dims = {d for v in state.values() for d in v.shape}
    for name, value in sizes.items():
        if value not in dims:
            raise ModelFileError(f"{path}: damaged {what} file: {name} is {value}, a size none of its weights has")


def describe(e: BaseException) -> str:
    """An exception as one line for a message: its type (KeyError 'config' says little alone) and text."""
    text = " ".join(str(e).split())  # load_state_dict's list of mismatches comes as tab-indented lines
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
