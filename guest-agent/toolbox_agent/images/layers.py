"""Layer tars: decompress (gzip, zstd, none), extract safely, convert whiteouts for overlayfs.

Extraction writes each member itself (no tarfile.extractall): names are confined to the
layer directory, no path component may be a symlink, and AUFS-style whiteouts become what
overlayfs reads: `.wh.x` -> a 0:0 character device `x`, `.wh..wh..opq` -> the
`trusted.overlay.opaque=y` xattr on the directory. The sha256 of the whole uncompressed
stream is the layer's diff_id, checked by the caller against the image config.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import ImageError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1024 * 1024


class LayerError(ImageError):
    """A layer that cannot be read or would escape its directory."""


@dataclass(frozen=True)
class LayerInfo:
    diff_id: str  # sha256 of the uncompressed tar
    tar_size: int  # length of the uncompressed tar
    size: int  # bytes of file content (Docker's layer size)


class HashingReader:
    """A read-only file object that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def compression_of(path: Path) -> str:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(GZIP_MAGIC):
        return "gzip"
    if magic == ZSTD_MAGIC:
        return "zstd"
    return "none"


@contextlib.contextmanager
def open_uncompressed(path: Path) -> Iterator[BinaryIO]:
    """The layer's tar stream, whatever its compression (zstd through the `zstd` binary)."""
    kind = compression_of(path)
    if kind == "gzip":
        with gzip.open(path, "rb") as f:
            yield f  # type: ignore[misc]
    elif kind == "zstd":
        proc = subprocess.Popen(["zstd", "-dcq", "--", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            yield proc.stdout  # type: ignore[misc]
            proc.stdout.read()
        finally:
            proc.stdout.close()
            err = proc.stderr.read() if proc.stderr else b""
            if proc.wait() != 0:
                raise LayerError(f"zstd failed on {path.name}: {err.decode(errors='replace').strip()}")
    else:
        with open(path, "rb") as f:
            yield f


def extract_layer(blob: Path, dest: Path) -> LayerInfo:
    """Extract blob (any compression) into the empty directory dest; return its diff_id."""
    with open_uncompressed(blob) as raw:
        reader = HashingReader(raw)
        size = extract_tar(reader, dest)
        reader.drain()
    return LayerInfo("sha256:" + reader.hash.hexdigest(), reader.count, size)


def hash_tar(blob: Path) -> LayerInfo:
    """diff_id and length of a layer without extracting it."""
    with open_uncompressed(blob) as raw:
        reader = HashingReader(raw)
        reader.drain()
    return LayerInfo("sha256:" + reader.hash.hexdigest(), reader.count, 0)


def extract_tar(stream: HashingReader | BinaryIO, dest: Path) -> int:
    size = 0
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:  # type: ignore[call-overload]
            for member in tf:
                size += _extract_member(tf, member, dest, dirs)
    except tarfile.TarError as exc:
        raise LayerError(f"bad layer tar: {exc}") from exc
    for path, member in reversed(dirs):
        _apply_attrs(path, member)
    return size


def _clean_name(name: str) -> str:
    rel = posixpath.normpath(name.lstrip("/"))
    if rel == ".." or rel.startswith("../") or "\x00" in rel:
        raise LayerError(f"layer member escapes its directory: {name!r}")
    return "" if rel == "." else rel


def _parent(dest: Path, rel: str) -> Path:
    """Create missing parents of rel under dest, refusing symlinked components."""
    cur = dest
    for part in rel.split("/")[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise LayerError(f"layer member {rel!r} lies under a non-directory")
    return cur


def _check_no_symlink_parents(dest: Path, rel: str) -> None:
    cur = dest
    for part in rel.split("/")[:-1]:
        cur = cur / part
        if os.path.islink(cur):
            raise LayerError(f"hard link target {rel!r} lies under a symlink")


def _remove(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _extract_member(tf: tarfile.TarFile, m: tarfile.TarInfo, dest: Path, dirs: list[tuple[Path, tarfile.TarInfo]]) -> int:
    rel = _clean_name(m.name)
    if not rel:
        return 0
    parent = _parent(dest, rel)
    base = rel.rsplit("/", 1)[-1]
    if base == OPAQUE:
        _set_xattr(parent, OPAQUE_XATTR, b"y")
        return 0
    if base.startswith(WHITEOUT + WHITEOUT):
        return 0  # other AUFS metadata (.wh..wh.plnk ...): nothing for overlayfs
    if base.startswith(WHITEOUT):
        target = parent / base[len(WHITEOUT) :]
        _remove(target)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return 0
    path = dest / rel
    if m.isdir():
        if not path.is_dir() or path.is_symlink():
            _remove(path)
            os.mkdir(path, 0o755)
        dirs.append((path, m))
        return 0
    _remove(path)
    size = 0
    if m.isreg():
        src = tf.extractfile(m)
        assert src is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        size = m.size
    elif m.issym():
        os.symlink(m.linkname, path)
    elif m.islnk():
        link_rel = _clean_name(m.linkname)
        _check_no_symlink_parents(dest, link_rel)
        target = dest / link_rel
        if not link_rel or not os.path.lexists(target):
            raise LayerError(f"hard link {rel!r} to missing {m.linkname!r}")
        os.link(target, path, follow_symlinks=False)
        return 0
    elif m.ischr() or m.isblk():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(path, kind | 0o600, os.makedev(m.devmajor, m.devminor))
    elif m.isfifo():
        os.mkfifo(path, 0o600)
    else:
        return 0
    _apply_attrs(path, m)
    return size


def _apply_attrs(path: Path, m: tarfile.TarInfo) -> None:
    if os.geteuid() == 0:
        os.lchown(path, m.uid, m.gid)
    if not m.issym():
        os.chmod(path, m.mode & 0o7777)
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            _set_xattr(path, key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape"))
    os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)


def _set_xattr(path: Path, name: str, value: bytes) -> None:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as exc:
        if name == OPAQUE_XATTR:
            raise LayerError(f"cannot mark {path} opaque: {exc}") from exc
