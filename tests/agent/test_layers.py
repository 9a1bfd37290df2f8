"""Layer extraction: confinement, whiteouts, compression, diff_id."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from e2e.registry import Entry, tar_layer

from toolbox_agent.images.layers import OPAQUE_XATTR, LayerError, extract_layer


def blob(tmp_path: Path, data: bytes, compression: str = "none") -> Path:
    if compression == "gzip":
        data = gzip.compress(data)
    elif compression == "zstd":
        data = subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout
    path = tmp_path / f"blob-{compression}"
    path.write_bytes(data)
    return path


def raw_tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_diff_id_and_size(tmp_path: Path, compression: str) -> None:
    data = tar_layer([Entry("etc", kind="dir"), Entry("etc/a", b"12345"), Entry("etc/l", kind="symlink", target="a")])
    dest = tmp_path / "root"
    dest.mkdir()
    info = extract_layer(blob(tmp_path, data, compression), dest)
    assert info.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert info.tar_size == len(data) and info.size == 5
    assert (dest / "etc/a").read_bytes() == b"12345" and os.readlink(dest / "etc/l") == "a"


def test_whiteouts(tmp_path: Path) -> None:
    data = tar_layer([Entry("d", kind="opaque"), Entry("gone", kind="whiteout"), Entry("x/y/gone2", kind="whiteout")])
    dest = tmp_path / "root"
    dest.mkdir()
    extract_layer(blob(tmp_path, data), dest)
    assert os.getxattr(dest / "d", OPAQUE_XATTR) == b"y"
    for name in ("gone", "x/y/gone2"):
        st = os.lstat(dest / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert sorted(p.name for p in dest.rglob("*")) == ["d", "gone", "gone2", "x", "y"]


def refused(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    (tmp_path / "outside").mkdir()
    dest = tmp_path / "root"
    dest.mkdir()
    with pytest.raises(LayerError):
        extract_layer(blob(tmp_path, raw_tar(members)), dest)
    assert list((tmp_path / "outside").iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_dotdot_refused(tmp_path: Path) -> None:
    refused(tmp_path, [(tarfile.TarInfo("../evil"), b""), (tarfile.TarInfo("a/../../evil"), b"")])


def test_symlinked_parent_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path / "outside")
    refused(tmp_path, [(link, b""), (tarfile.TarInfo("link/file"), b"")])


def test_hardlink_outside_refused(tmp_path: Path) -> None:
    hard = tarfile.TarInfo("h")
    hard.type, hard.linkname = tarfile.LNKTYPE, "../../etc/passwd"
    refused(tmp_path, [(hard, b"")])


def test_hardlink_through_symlink_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path / "outside")
    hard = tarfile.TarInfo("h")
    hard.type, hard.linkname = tarfile.LNKTYPE, "link/secret"
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    dest = tmp_path / "root"
    dest.mkdir()
    with pytest.raises(LayerError):
        extract_layer(blob(tmp_path, raw_tar([(link, b""), (hard, b"")])), dest)
    assert not (dest / "h").exists()


def test_absolute_names_stay_inside(tmp_path: Path) -> None:
    info = tarfile.TarInfo("/etc/abs")
    info.size = 2
    dest = tmp_path / "root"
    dest.mkdir()
    extract_layer(blob(tmp_path, raw_tar([(info, b"ok")])), dest)
    assert (dest / "etc/abs").read_bytes() == b"ok"


def test_not_a_tar(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    dest.mkdir()
    with pytest.raises(LayerError):
        extract_layer(blob(tmp_path, b"garbage" * 100, "gzip"), dest)
