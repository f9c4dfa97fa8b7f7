"""Download corpus archives: resumable HTTP(S) with a progress bar, checksum verification, safe extraction.

    download_file(url, dest, checksum="sha256:<hex>") -> dest     resumes `dest.part` with an HTTP Range request
    verify_checksum(path, "md5:<hex>")                            raises ChecksumError
    extract_archive(archive, target) -> [member names]           tar (.gz/.bz2/.xz) or zip; refuses unsafe members
    fetch(Archive(url, checksum), dest_dir) -> dest_dir           all of the above, then a marker: a rerun does nothing

The order matters: the archive is downloaded to `<name>.part`, verified against its published checksum while it is
still a .part (a mismatch deletes it and nothing is extracted), renamed, extracted, and only then is the marker
`.<name>.done` written. An archive without a known checksum is extracted with a warning that it was not verified.

Extraction checks every member before writing anything: absolute paths, `..` components, symlinks or hardlinks whose
target leaves the extraction folder (or goes through another symlink of the archive), and device, FIFO or other
special files are refused with an error naming the member. tar extraction also runs under Python's "data" filter.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

log = logging.getLogger("asr")

USER_AGENT = "speech-transformer-asr (corpus download)"


class DownloadError(RuntimeError):
    """A transfer failed; a partial `.part` file is kept so the next run resumes."""


class ChecksumError(DownloadError):
    """The downloaded file does not match its published checksum (the file is deleted)."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would write outside the target folder or is a special file; nothing was extracted."""


@dataclass(frozen=True)
class Archive:
    url: str
    checksum: str | None = None  # "sha256:<hex>" or "md5:<hex>"; None: not known, extraction warns
    filename: str = ""  # default: the last component of the URL

    @property
    def name(self) -> str:
        return self.filename or self.url.rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------------- checksums


def file_digest(path: str | Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: str | Path, checksum: str) -> None:
    """Compare a file with "algorithm:hex" (sha256, md5, ...); raises ChecksumError naming both values."""
    algorithm, _, expected = checksum.partition(":")
    if not expected or algorithm.lower() not in hashlib.algorithms_available:
        raise ValueError(f"checksum {checksum!r} is not of the form 'sha256:<hex>' or 'md5:<hex>'")
    actual = file_digest(path, algorithm.lower())
    if actual.lower() != expected.lower():
        raise ChecksumError(f"{path}: {algorithm} checksum mismatch: expected {expected}, got {actual}")


# ---------------------------------------------------------------------------------------------------- transfer


class _Incomplete(Exception):
    """The connection ended before the announced length: retry (resuming)."""


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _transfer(url: str, part: Path, progress: bool, timeout: float, chunk_size: int, label: str) -> None:
    """Fetch `url` into `part`, appending from its current size with a Range request when it already holds bytes."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after `have`: the part may already be complete
            total = (e.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and int(total) == have:
                return
            part.unlink()  # the server's file changed or the part is too long: start again
            raise _Incomplete(f"server refused to resume at byte {have}; starting again") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise _Incomplete(f"cannot connect ({getattr(e, 'reason', e)})") from None
    with resp:
        mode = "wb"
        if have and resp.status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                part.unlink()
                raise _Incomplete(f"server answered the range request with {resp.headers.get('Content-Range')!r}")
            mode = "ab"
        elif have:
            log.info("%s: the server does not support resuming; downloading from the start", url)
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
            ) as bar,
        ):
            try:
                while chunk := resp.read(chunk_size):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError) as e:  # connection reset, IncompleteRead, timeout
                raise _Incomplete(f"connection lost ({type(e).__name__}: {e})") from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Incomplete(f"connection closed after {size} of {total} bytes")


def download_file(
    url: str,
    dest: str | Path,
    checksum: str | None = None,
    *,
    retries: int = 3,
    retry_wait: float = 2.0,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 16,
) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming an existing .part (HTTP Range) and retrying a dropped
    connection `retries` times. With `checksum` the complete .part is verified before it is renamed to `dest`; on a
    mismatch it is deleted (so the next run starts clean) and ChecksumError is raised."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, progress, timeout, chunk_size, dest.name)
            break
        except _Incomplete as e:
            have = part.stat().st_size if part.is_file() else 0
            if attempt == retries:
                raise DownloadError(
                    f"{url}: download interrupted: {e}. {have} bytes are kept in {part}; run again to resume"
                ) from None
            log.warning("%s: %s; retrying from byte %d", url, e, have)
            time.sleep(retry_wait * (attempt + 1))
    if checksum:
        try:
            verify_checksum(part, checksum)
        except ChecksumError as e:
            part.unlink()
            raise ChecksumError(
                f"{e}. The download was deleted and nothing was extracted; run again to retry, or check the URL"
            ) from None
    part.replace(dest)
    return dest


# ---------------------------------------------------------------------------------------------------- extraction


def _member_parts(name: str, archive: Path) -> list[str]:
    """The path components of an archive member name; refuses absolute paths and `..`."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; nothing extracted")
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a '..' component; nothing extracted")
    return parts


def _link_target(member: str, parts: list[str], link: str, symlinks: set[str], archive: Path, kind: str) -> str:
    """Resolve a link target (relative to `parts`, the link's folder) component by component. It must stay inside
    the target folder and must not pass through a symlink of the archive (whose own target would change where
    `..` leads: the lexical path would no longer be the real one)."""
    if link.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", link):
        raise UnsafeArchiveError(
            f"{archive}: {kind} {member!r} -> {link!r} points to an absolute path; nothing extracted"
        )
    stack = list(parts)
    comps = [c for c in re.split(r"[/\\]", link) if c not in ("", ".")]
    for i, c in enumerate(comps):
        if c == "..":
            if not stack:
                raise UnsafeArchiveError(
                    f"{archive}: {kind} {member!r} -> {link!r} points outside the target folder; nothing extracted"
                )
            stack.pop()
        else:
            stack.append(c)
            if i < len(comps) - 1 and "/".join(stack) in symlinks:
                raise UnsafeArchiveError(
                    f"{archive}: {kind} {member!r} -> {link!r} goes through another symlink; nothing extracted"
                )
    return "/".join(stack)


def _through_symlink(parts: list[str], symlinks: set[str]) -> bool:
    return any("/".join(parts[:i]) in symlinks for i in range(1, len(parts)))


def check_tar_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Every member, checked; raises UnsafeArchiveError for the first unsafe one (before anything is written)."""
    members = tar.getmembers()
    symlinks = {"/".join(_member_parts(m.name, archive)) for m in members if m.issym()}
    for m in members:
        parts = _member_parts(m.name, archive)
        if m.ischr() or m.isblk() or m.isfifo():
            kind = "character device" if m.ischr() else "block device" if m.isblk() else "FIFO"
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a {kind}; nothing extracted")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} has unsupported type {m.type!r}; nothing extracted")
        if _through_symlink(parts, symlinks):
            raise UnsafeArchiveError(
                f"{archive}: member {m.name!r} would be written through a symlink; nothing extracted"
            )
        if m.issym():
            _link_target(m.name, parts[:-1], m.linkname, symlinks, archive, "symlink")
        elif m.islnk():  # hardlink targets are archive paths, relative to the archive root
            target = _link_target(m.name, [], m.linkname, symlinks, archive, "hardlink")
            if target in symlinks:
                raise UnsafeArchiveError(f"{archive}: hardlink {m.name!r} points to a symlink; nothing extracted")
    return members


def _extract_tar(archive: Path, target: Path) -> list[str]:
    with tarfile.open(archive, "r:*") as tar:
        members = check_tar_members(tar, archive)
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: a second line of defence, strips odd modes
            try:
                tar.extractall(target, members=members, filter="data")
            except tarfile.FilterError as e:
                raise UnsafeArchiveError(f"{archive}: refused by tarfile's data filter: {e}") from None
        else:
            tar.extractall(target, members=members)
    return [m.name for m in members]


def _extract_zip(archive: Path, target: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        modes = {zi.filename: zi.external_attr >> 16 for zi in infos}
        symlinks = {"/".join(_member_parts(n, archive)) for n, mode in modes.items() if stat.S_ISLNK(mode)}
        links = {}
        for zi in infos:
            parts = _member_parts(zi.filename, archive)
            mode = modes[zi.filename]
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                raise UnsafeArchiveError(f"{archive}: member {zi.filename!r} is a special file; nothing extracted")
            if _through_symlink(parts, symlinks):
                raise UnsafeArchiveError(
                    f"{archive}: member {zi.filename!r} would be written through a symlink; nothing extracted"
                )
            if stat.S_ISLNK(mode):
                link = zf.read(zi).decode("utf-8")
                _link_target(zi.filename, parts[:-1], link, symlinks, archive, "symlink")
                links[zi.filename] = link
        for zi in infos:
            dest = target.joinpath(*_member_parts(zi.filename, archive))
            if zi.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if zi.filename in links:
                if dest.is_symlink() or dest.exists():
                    dest.unlink()
                os.symlink(links[zi.filename], dest)
                continue
            with zf.open(zi) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    return [zi.filename for zi in infos]


def extract_archive(archive: str | Path, target: str | Path) -> list[str]:
    """Extract a tar (plain, .gz, .bz2, .xz) or zip archive into `target`, after checking every member."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if archive.suffix.lower() == ".zip" or (not tarfile.is_tarfile(archive) and zipfile.is_zipfile(archive)):
        return _extract_zip(archive, target)
    if tarfile.is_tarfile(archive):
        return _extract_tar(archive, target)
    raise UnsafeArchiveError(f"{archive}: not a tar or zip archive")


# ---------------------------------------------------------------------------------------------------- all together


def marker_path(dest_dir: str | Path, archive: Archive) -> Path:
    return Path(dest_dir) / f".{archive.name}.done"


def fetch(
    archive: Archive,
    dest_dir: str | Path,
    *,
    keep_archive: bool = False,
    progress: bool = True,
    retries: int = 3,
    retry_wait: float = 2.0,
) -> Path:
    """Download, verify and extract one archive into `dest_dir`; a marker makes a second call a no-op (no network)."""
    dest_dir = Path(dest_dir)
    marker = marker_path(dest_dir, archive)
    if marker.is_file():
        log.info("%s: already downloaded and extracted in %s (delete %s to redo)", archive.name, dest_dir, marker.name)
        return dest_dir
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / archive.name
    if path.is_file():  # left by an earlier run (kept, or extraction failed): verify it again, do not trust it
        if archive.checksum:
            try:
                verify_checksum(path, archive.checksum)
            except ChecksumError as e:
                path.unlink()
                raise ChecksumError(f"{e}. The file was deleted; run again to download it") from None
        log.info("%s: using the archive already in %s", archive.name, dest_dir)
    else:
        log.info("downloading %s", archive.url)
        download_file(archive.url, path, archive.checksum, retries=retries, retry_wait=retry_wait, progress=progress)
    if archive.checksum:
        log.info("%s: %s checksum verified", archive.name, archive.checksum.partition(":")[0])
    else:
        log.warning(
            "%s: no published checksum is known for %s; the archive could not be verified", archive.name, archive.url
        )
    members = extract_archive(path, dest_dir)
    marker.write_text(json.dumps({"url": archive.url, "checksum": archive.checksum, "members": len(members)}) + "\n")
    if not keep_archive:
        path.unlink()
    log.info("%s: extracted %d members into %s", archive.name, len(members), dest_dir)
    return dest_dir


def fetch_all(archives: Iterable[Archive], dest_dir: str | Path, **kw) -> Path:
    for a in archives:
        fetch(a, dest_dir, **kw)
    return Path(dest_dir)
