"""Corpus downloads against a local HTTP server (127.0.0.1, Range support) serving archives built here: download +
verify + extract + marker, resume after a cut connection, wrong checksum, and malicious archive members."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from asr.data.download import (
    Archive,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_file,
    extract_archive,
    fetch,
    marker_path,
)


class Handler(BaseHTTPRequestHandler):
    """Serves `server.files`; honours "Range: bytes=N-"; `server.cut_once[path] = n` sends only n body bytes (after
    announcing the full length) and drops the connection, once."""

    def do_GET(self) -> None:
        srv = self.server
        data = srv.files.get(self.path)
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = srv.cut_once.pop(self.path, None)
        self.wfile.write(body if cut is None else body[:cut])  # HTTP/1.0: the connection closes after this

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.cut_once, srv.requests = {}, {}, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_download_verify_extract_then_marker_makes_rerun_a_noop(server, tmp_path):
    data = tar_gz({"corpus/a.txt": b"alpha", "corpus/sub/b.txt": b"beta"})
    server.files["/c.tar.gz"] = data
    archive = Archive(f"{server.url}/c.tar.gz", sha256(data))
    dest = tmp_path / "raw"
    assert fetch(archive, dest, progress=False) == dest
    assert (dest / "corpus" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "corpus" / "sub" / "b.txt").read_bytes() == b"beta"
    assert marker_path(dest, archive).is_file()
    assert not (dest / "c.tar.gz").exists() and not (dest / "c.tar.gz.part").exists()  # archive removed
    n = len(server.requests)
    del server.files["/c.tar.gz"]  # a second run must not even ask the server
    (dest / "corpus" / "a.txt").write_bytes(b"edited")
    fetch(archive, dest, progress=False)
    assert len(server.requests) == n
    assert (dest / "corpus" / "a.txt").read_bytes() == b"edited"  # nothing re-extracted


def test_zip_with_md5_and_keep_archive(server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("repo-master/recordings/0_x_0.wav", b"RIFF")
        zf.writestr("repo-master/README.md", b"hi")
    data = buf.getvalue()
    server.files["/master.zip"] = data
    archive = Archive(f"{server.url}/master.zip", "md5:" + hashlib.md5(data).hexdigest(), filename="repo.zip")
    fetch(archive, tmp_path, progress=False, keep_archive=True)
    assert (tmp_path / "repo-master" / "recordings" / "0_x_0.wav").read_bytes() == b"RIFF"
    assert (tmp_path / "repo.zip").read_bytes() == data


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    data = bytes(range(256)) * 800  # 200 kB
    server.files["/big.bin"] = data
    server.cut_once["/big.bin"] = 50_000
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match="resume"):
        download_file(f"{server.url}/big.bin", dest, sha256(data), retries=0, progress=False)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == 50_000 and not dest.exists()
    download_file(f"{server.url}/big.bin", dest, sha256(data), retries=0, progress=False)
    assert server.requests[-1] == ("/big.bin", "bytes=50000-")
    assert dest.read_bytes() == data and not part.exists()

    # Within one call: the dropped connection is retried from where it stopped.
    server.cut_once["/big.bin"] = 123_456
    again = tmp_path / "again.bin"
    download_file(f"{server.url}/big.bin", again, sha256(data), retries=2, retry_wait=0, progress=False)
    assert again.read_bytes() == data
    assert server.requests[-1] == ("/big.bin", "bytes=123456-")


def test_complete_part_file_is_not_downloaded_again(server, tmp_path):
    data = b"x" * 1000
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data)  # e.g. stopped between the last byte and the rename
    download_file(f"{server.url}/f.bin", tmp_path / "f.bin", sha256(data), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data


def test_wrong_checksum_extracts_nothing(server, tmp_path):
    data = tar_gz({"corpus/a.txt": b"alpha"})
    server.files["/c.tar.gz"] = data
    archive = Archive(f"{server.url}/c.tar.gz", "sha256:" + "0" * 64)
    dest = tmp_path / "raw"
    with pytest.raises(ChecksumError, match="checksum mismatch.*deleted and nothing was extracted"):
        fetch(archive, dest, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == []  # no archive, no .part, no corpus/, no marker
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{server.url}/missing.tar.gz", tmp_path / "m.tar.gz", progress=False)


def test_unknown_checksum_warns(server, tmp_path, caplog):
    data = tar_gz({"a.txt": b"a"})
    server.files["/c.tar.gz"] = data
    with caplog.at_level("WARNING", logger="asr"):
        fetch(Archive(f"{server.url}/c.tar.gz", None), tmp_path, progress=False)
    assert "could not be verified" in caplog.text
    assert (tmp_path / "a.txt").read_bytes() == b"a"


def _tar_with(*infos: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        good = tarfile.TarInfo("good.txt")  # a harmless member first: it must not be written either
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        for info, data in infos:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, type_: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, linkname
    return info


MALICIOUS = {
    "absolute path": (_tar_with((_info("/tmp/asr-evil.txt"), b"x")), "absolute path"),
    "dot-dot escape": (_tar_with((_info("corpus/../../evil.txt"), b"x")), "'..' component"),
    "symlink escaping": (
        _tar_with((_info("corpus/link", tarfile.SYMTYPE, "../../outside"), None)),
        "outside the target",
    ),
    "absolute symlink": (_tar_with((_info("link", tarfile.SYMTYPE, "/etc"), None)), "absolute path"),
    "symlink then write through it": (
        _tar_with((_info("lnk", tarfile.SYMTYPE, "sub"), None), (_info("lnk/evil.txt"), b"x")),
        "through a symlink",
    ),
    "symlink chain": (  # d -> "." then x -> "d/..": lexically inside, really the parent folder
        _tar_with((_info("d", tarfile.SYMTYPE, "."), None), (_info("x", tarfile.SYMTYPE, "d/.."), None)),
        "through another symlink",
    ),
    "hardlink escaping": (_tar_with((_info("hard", tarfile.LNKTYPE, "../outside.txt"), None)), "outside the target"),
    "character device": (_tar_with((_info("dev/null", tarfile.CHRTYPE), None)), "character device"),
    "block device": (_tar_with((_info("dev/sda", tarfile.BLKTYPE), None)), "block device"),
    "fifo": (_tar_with((_info("pipe", tarfile.FIFOTYPE), None)), "FIFO"),
}


@pytest.mark.parametrize("case", list(MALICIOUS))
def test_malicious_tar_members_are_refused(tmp_path, case):
    data, message = MALICIOUS[case]
    archive = tmp_path / "evil.tar"
    archive.write_bytes(data)
    target = tmp_path / "out" / "target"
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_archive(archive, target)
    assert list(target.iterdir()) == []  # not even good.txt
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.tar", "out", "target"]  # nothing outside
    assert not Path("/tmp/asr-evil.txt").exists()


@pytest.mark.parametrize("name, message", [("../evil.txt", "'..' component"), ("/abs/evil.txt", "absolute path")])
def test_malicious_zip_members_are_refused(tmp_path, name, message):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.txt", b"ok")
        zf.writestr(zipfile.ZipInfo(name), b"x")
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_archive(archive, target)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_fetch_refuses_a_malicious_archive_without_marker(server, tmp_path):
    data = MALICIOUS["dot-dot escape"][0]
    server.files["/evil.tar"] = data
    archive = Archive(f"{server.url}/evil.tar", sha256(data))
    with pytest.raises(UnsafeArchiveError):
        fetch(archive, tmp_path / "raw", progress=False)
    assert not marker_path(tmp_path / "raw", archive).exists()
    assert not (tmp_path / "evil.txt").exists()


def test_registry_download_specs_are_well_formed():
    from asr.data.corpora import CORPORA, download_corpus

    for corpus in CORPORA.values():
        assert set(corpus.default_parts) <= set(corpus.archives), corpus.name
        for a in corpus.archives.values():
            assert a.url.startswith(("https://", "http://")) and a.name
            if a.checksum:
                algo, _, hexdigest = a.checksum.partition(":")
                assert algo in ("sha256", "md5") and len(hexdigest) == {"sha256": 64, "md5": 32}[algo]
    with pytest.raises(ValueError, match="cannot be downloaded automatically"):
        download_corpus("commonvoice", "unused")


def test_safe_links_are_extracted(tmp_path):
    data = _tar_with(
        (_info("sub/", tarfile.DIRTYPE), None),
        (_info("sub/a.txt"), b"A"),
        (_info("sub/link", tarfile.SYMTYPE, "a.txt"), None),
        (_info("up", tarfile.SYMTYPE, "sub/../good.txt"), None),
        (_info("hard", tarfile.LNKTYPE, "sub/a.txt"), None),
    )
    archive = tmp_path / "ok.tar"
    archive.write_bytes(data)
    extract_archive(archive, tmp_path / "t")
    assert (tmp_path / "t" / "sub" / "link").read_bytes() == b"A"
    assert (tmp_path / "t" / "up").read_bytes() == b"ok"
    assert (tmp_path / "t" / "hard").read_bytes() == b"A"


def test_cli_prepare_download_then_prepare(server, tmp_path, monkeypatch, capsys):
    """`asr prepare yesno --download` with the registry's archive pointed at the local server."""
    import dataclasses

    import numpy as np
    import soundfile as sf

    from asr.cli import main
    from asr.data.corpora import CORPORA

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ["0_0_1_1_0_0_1_1", "1_1_0_0_1_1_0_0", "0_1_0_1_0_1_0_1"]:
            wav = io.BytesIO()
            sf.write(wav, np.zeros(4000, dtype=np.float32) + 0.01, 8000, format="WAV")
            info = tarfile.TarInfo(f"waves_yesno/{name}.wav")
            info.size = len(wav.getvalue())
            tar.addfile(info, io.BytesIO(wav.getvalue()))
    data = buf.getvalue()
    server.files["/resources/1/waves_yesno.tar.gz"] = data
    local = Archive(f"{server.url}/resources/1/waves_yesno.tar.gz", sha256(data))
    monkeypatch.setitem(CORPORA, "yesno", dataclasses.replace(CORPORA["yesno"], archives={"waves_yesno": local}))
    args = [
        "prepare",
        "yesno",
        "--data-dir",
        str(tmp_path / "raw"),
        "--out",
        str(tmp_path / "out"),
        "--download",
        "--dev-fraction",
        "0",
        "--test-fraction",
        "0",
    ]
    assert main(args) == 0
    assert "train: 3 utterances" in capsys.readouterr().out
    n = len(server.requests)
    assert main(args) == 0 and len(server.requests) == n  # the marker: no second download
