"""Outputs: every file is written atomically, and never over a file the toolkit did not write itself.

    with atomic_path("exp/a/model.pt") as tmp: torch.save(blob, tmp)   # tmp sits in the same folder; renamed on success
    with atomic_open("hyps.jsonl") as f: f.write(...)
    check_output("hyps.jsonl")          # before a long job: OutputExistsError now rather than after an hour
    check_outputs([...])                # many at once, one error naming them
    with allow_overwrite(args.overwrite): ...                          # what a command's --overwrite turns on

Atomic: the data goes to a temporary file beside the target, which is renamed over it only once complete, so a
crash, a kill or a full disk leaves either the old file or the new one, never half of one (and no temporary file).

Ownership: each file written here is recorded in its folder's `.asr-outputs` (name -> size and modification
time). An existing file counts as the toolkit's own when that record still matches it; anything else -- a user's
file, or one of ours edited since -- is refused with `OutputExistsError` unless overwriting is allowed.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import errno
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

LEDGER = ".asr-outputs"  # JSON; no .json suffix, so globs for outputs (*.json, *.jsonl) do not pick it up

_overwrite = contextvars.ContextVar("asr_overwrite", default=False)


class OutputExistsError(FileExistsError):
    """An output path holds a file the toolkit did not write (or one changed since); the message names it."""


class OutputError(OSError):
    """An output could not be written (disk full, no permission, ...); nothing was replaced. Names the file."""


@contextlib.contextmanager
def allow_overwrite(allowed: bool = True) -> Iterator[None]:
    """Within this block, outputs may replace any existing file (a command's --overwrite)."""
    token = _overwrite.set(bool(allowed))
    try:
        yield
    finally:
        _overwrite.reset(token)


def overwrite_allowed() -> bool:
    return _overwrite.get()


class _Ledger:
    """One folder's record of the files written through this module; saved at most once a second (and at exit),
    merged with what other processes recorded meanwhile. A record lost to a kill only makes a later run ask for
    --overwrite: the safe direction."""

    def __init__(self, folder: Path):
        self.path = folder / LEDGER
        self.entries = self._read()
        self.dirty: dict[str, list[int]] = {}
        self.saved_at = 0.0

    def _read(self) -> dict[str, list[int]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 2}
        except (OSError, ValueError, AttributeError):
            return {}

    def owns(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        return self.entries.get(path.name) == [st.st_size, st.st_mtime_ns]

    def record(self, path: Path) -> None:
        st = path.stat()
        self.entries[path.name] = self.dirty[path.name] = [st.st_size, st.st_mtime_ns]
        if time.monotonic() - self.saved_at > 1.0:
            self.save()

    def save(self) -> None:
        if not self.dirty:
            return
        merged = {**self._read(), **self.dirty}
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=LEDGER + ".", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(merged, f, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError:  # a full disk must not turn a written output into an error; the record is only a courtesy
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return
        self.entries, self.dirty, self.saved_at = merged, {}, time.monotonic()


_ledgers: dict[Path, _Ledger] = {}


def _ledger(path: Path) -> _Ledger:
    folder = path.parent.resolve()
    if folder not in _ledgers:
        _ledgers[folder] = _Ledger(folder)
    return _ledgers[folder]


@atexit.register
def flush() -> None:
    """Save every folder's pending records (also run at exit)."""
    for ledger in _ledgers.values():
        ledger.save()


def check_output(path: str | Path, overwrite: bool | None = None) -> Path:
    """`path` may be written: it does not exist, or the toolkit wrote it and it is unchanged, or overwriting is
    allowed. Otherwise OutputExistsError naming it. A folder in the way is always an error."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path}: is a folder, not a file this command can write")
    if not path.exists() and not path.is_symlink():
        return path
    if (overwrite if overwrite is not None else _overwrite.get()) or _ledger(path).owns(path):
        return path
    raise OutputExistsError(
        f"{path}: already exists and was not written by asr (or was changed since); pass --overwrite to replace it"
    )


def check_outputs(paths: list[Path], overwrite: bool | None = None) -> None:
    """check_output for many files (a command's --out-dir): one OutputExistsError naming the first few."""
    refused = []
    for p in paths:
        try:
            check_output(p, overwrite)
        except OutputExistsError as e:
            refused.append((p, e))
    if len(refused) == 1:
        raise refused[0][1]
    if refused:
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        names = ", ".join(str(p) for p, _ in refused[:5]) + more
        raise OutputExistsError(
            f"{len(refused)} output files already exist and were not written by asr (or were changed since): {names}; "
            "pass --overwrite to replace them"
        )


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool | None = None) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so libraries that go by it still work) to write to; renamed to
    `path` when the block ends without an error, removed otherwise."""
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; an output gets the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and not isinstance(e, (OutputError, FileExistsError, FileNotFoundError)):
            reason = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise OutputError(e.errno, f"{path}: cannot write it ({reason}); nothing was replaced") from None
        raise
    _ledger(path).record(path)


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None, **kw
) -> Iterator[IO]:
    """open() for writing, atomically (see atomic_path); text mode by default."""
    if "b" in mode:
        encoding = None
    with atomic_path(path, **kw) as tmp, open(tmp, mode, encoding=encoding, newline=newline) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename, so a power cut cannot leave an empty file under the name


def write_text(path: str | Path, text: str, **kw) -> Path:
    with atomic_open(path, **kw) as f:
        f.write(text)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (model files, manifests, exported graphs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
