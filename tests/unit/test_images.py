"""images.py: resolve, download with resume and verification, the cache, ISO extraction."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_http import FileServer

from toolbox import images
from toolbox.errors import ChecksumMismatch, DownloadError, UsageError
from toolbox.images import ImageSource

PAYLOAD = bytes(range(256)) * 8192  # 2 MiB: several chunks


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOOLBOX_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(images.time, "sleep", lambda s: None)  # no back-off waits in tests
    return tmp_path / "home"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "srv"
    root.mkdir()
    (root / "toolbox.iso").write_bytes(PAYLOAD)
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    (root / "SHA256SUMS").write_text(f"{sha}  toolbox.iso\n")
    manifest = {"format": 1, "name": "toolbox", "version": "9.9", "arch": "x86_64", "cmdline": "console=ttyS0",
                "files": {"toolbox.iso": {"sha256": sha, "size": len(PAYLOAD)}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    server = FileServer(root)
    yield server
    server.close()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_resolve_manifest(served: FileServer) -> None:
    r = images.resolve(ImageSource(manifest_url=served.url + "/manifest.json"))
    assert (r.version, r.sha256, r.size, r.url) == ("9.9", SHA, len(PAYLOAD), served.url + "/toolbox.iso")


def test_resolve_iso_url_uses_sha256sums(served: FileServer) -> None:
    assert images.resolve(ImageSource(iso_url=served.url + "/toolbox.iso")).sha256 == SHA


def test_iso_url_without_any_sha256_is_refused(served: FileServer) -> None:
    (served.root / "SHA256SUMS").unlink()
    with pytest.raises(DownloadError, match="no sha256") as err:
        images.resolve(ImageSource(iso_url=served.url + "/toolbox.iso"))
    assert "--sha256" in (err.value.hint or "")


def test_bad_manifest(served: FileServer) -> None:
    (served.root / "manifest.json").write_text('{"format": 2}')
    with pytest.raises(DownloadError, match="not a toolbox release manifest"):
        images.resolve(ImageSource(manifest_url=served.url + "/manifest.json"))


def test_download_verifies_and_caches(served: FileServer) -> None:
    r = images.resolve(ImageSource(manifest_url=served.url + "/manifest.json"))
    dest = Path(images.cache_dir() / SHA / "toolbox.iso")
    images.download(r.url, dest, r.sha256, r.size)
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("toolbox.iso.part").exists()


def test_interrupted_download_resumes_with_range(served: FileServer, tmp_path: Path) -> None:
    served.faults.truncate_next = 1
    dest = tmp_path / "out" / "toolbox.iso"
    images.download(served.url + "/toolbox.iso", dest, SHA, len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert served.faults.ranges == [f"bytes={len(PAYLOAD) // 2}-"]


def test_part_left_by_an_earlier_run_is_resumed(served: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "toolbox.iso"
    dest.with_name("toolbox.iso.part").write_bytes(PAYLOAD[:1000])
    images.download(served.url + "/toolbox.iso", dest, SHA, len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and served.faults.ranges == ["bytes=1000-"]


def test_server_ignoring_range_restarts_cleanly(served: FileServer, tmp_path: Path) -> None:
    served.faults.ignore_range = True
    dest = tmp_path / "toolbox.iso"
    dest.with_name("toolbox.iso.part").write_bytes(b"junk" * 100)
    images.download(served.url + "/toolbox.iso", dest, SHA, len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_with_unknown_size_gets_416_and_is_verified(served: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "toolbox.iso"
    dest.with_name("toolbox.iso.part").write_bytes(PAYLOAD)
    images.download(served.url + "/toolbox.iso", dest, SHA, None)
    assert dest.read_bytes() == PAYLOAD


def test_corrupted_download_is_refused_and_not_cached(served: FileServer) -> None:
    served.faults.corrupt = True
    r = images.resolve(ImageSource(manifest_url=served.url + "/manifest.json"))
    with pytest.raises(ChecksumMismatch):
        images.ensure_cached(r)
    assert not (images.cache_dir() / SHA).exists()


def test_connection_lost_every_time_keeps_the_part_for_later(served: FileServer, tmp_path: Path) -> None:
    served.faults.truncate_next = 99
    dest = tmp_path / "toolbox.iso"
    with pytest.raises(DownloadError, match="connection lost") as err:
        images.download(served.url + "/toolbox.iso", dest, SHA, len(PAYLOAD))
    assert "resumes" in (err.value.hint or "")
    assert dest.with_name("toolbox.iso.part").stat().st_size > 0 and not dest.exists()


@pytest.mark.parametrize(("status", "needle"), [(404, "HTTP 404"), (500, "HTTP 500")])
def test_http_errors(served: FileServer, status: int, needle: str) -> None:
    served.faults.status = status
    with pytest.raises(DownloadError, match=needle) as err:
        images.resolve(ImageSource(manifest_url=served.url + "/manifest.json"))
    assert err.value.hint


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="connection refused"):
        images.resolve(ImageSource(manifest_url=f"http://127.0.0.1:{port}/manifest.json"))


def test_bad_url() -> None:
    with pytest.raises(DownloadError, match="scheme"):
        images.resolve(ImageSource(manifest_url="ftp://127.0.0.1/manifest.json"))
    with pytest.raises(DownloadError):
        images.resolve(ImageSource(manifest_url="http://:99999/x"))


def test_full_disk_keeps_nothing(served: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = Path.open

    class Full:
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *a: object) -> None:
            self.fh.close()

        def write(self, data: bytes) -> int:
            self.fh.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(self: Path, mode: str = "r", *a: Any, **k: Any) -> Any:
        fh = real_open(self, mode, *a, **k)
        return Full(fh) if self.name.endswith(".part") and mode in ("ab", "wb") else fh

    monkeypatch.setattr(Path, "open", fake_open)
    r = images.resolve(ImageSource(manifest_url=served.url + "/manifest.json"))
    with pytest.raises(DownloadError, match="no space left"):
        images.ensure_cached(r)
    assert not (images.cache_dir() / SHA).exists()


def _make_iso(tmp_path: Path) -> Path:
    src = tmp_path / "isosrc" / "boot"
    src.mkdir(parents=True)
    (src / "vmlinuz").write_bytes(b"KERNEL")
    (src / "initrd.img").write_bytes(b"INITRD")
    (src / "cmdline.txt").write_text("console=ttyS0 quiet\n")
    iso = tmp_path / "t.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-V", "TOOLBOX", "-o", str(iso), str(src.parent)],
                   check=True, capture_output=True)
    return iso


@pytest.mark.skipif(not shutil.which("xorriso"), reason="needs xorriso")
def test_local_iso_is_hashed_cached_and_extracted(tmp_path: Path) -> None:
    iso = _make_iso(tmp_path)
    r = images.resolve(ImageSource(iso_path=iso))
    img = images.ensure_cached(r)
    assert img.iso.read_bytes() == iso.read_bytes()
    assert img.kernel is not None and img.kernel.read_bytes() == b"KERNEL"
    assert img.initrd is not None and img.initrd.read_bytes() == b"INITRD"
    assert img.cmdline == "console=ttyS0 quiet"


def test_local_iso_with_wrong_sha256(tmp_path: Path) -> None:
    f = tmp_path / "x.iso"
    f.write_bytes(b"x")
    with pytest.raises(ChecksumMismatch):
        images.resolve(ImageSource(iso_path=f, sha256="0" * 64))
    with pytest.raises(UsageError):
        images.resolve(ImageSource(iso_path=tmp_path / "missing.iso"))
