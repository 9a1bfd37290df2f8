"""Layer tars: decompress (gzip, zstd, none), extract safely, convert whiteouts for overlayfs.

Extraction writes each member itself (no tarfile.extractall): names are confined to the
layer directory, no path component may be a symlink, and AUFS-style whiteouts become what
overlayfs reads: `.wh.x` -> a 0:0 character device `x`, `.wh..wh..opq` -> the
`trusted.overlay.opaque=y` xattr on the directory. The sha256 of the whole uncompressed
stream is the layer's diff_id, checked by the caller against the image config.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from toolbox_agent.lean import sha256

from .errors import ImageError

if TYPE_CHECKING:  # gzip and tarfile load on a layer's first use (lean.py)
    import tarfile

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
        self.hash = sha256()
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
        import gzip

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
    """Extract a tar stream into the empty directory dest; returns the bytes of file content."""
    import tarfile

    ex = _Extractor(str(dest))
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:  # type: ignore[call-overload]
            for member in tf:
                ex.member(tf, member)
    except tarfile.TarError as exc:
        raise LayerError(f"bad layer tar: {exc}") from exc
    for path, member in reversed(ex.dirs):
        _apply_attrs(path, member)
    return ex.size


def _clean_name(name: str) -> str:
    rel = posixpath.normpath(name.lstrip("/"))
    if rel == ".." or rel.startswith("../") or "\x00" in rel:
        raise LayerError(f"layer member escapes its directory: {name!r}")
    return "" if rel == "." else rel


class _Extractor:
    """Writes members under root, which starts empty. `kinds` records every path made so far
    ("dir" or "other"), so the file system need not be asked: a member may only go under
    a recorded directory (never under a symlink), and only recorded paths need replacing."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.kinds: dict[str, str] = {}
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []
        self.size = 0

    def _parent(self, rel: str) -> str:
        parent = rel.rpartition("/")[0]
        if not parent:
            return self.root
        kind = self.kinds.get(parent)
        if kind is None:
            self._parent(parent)
            os.mkdir(f"{self.root}/{parent}", 0o755)
            self.kinds[parent] = "dir"
        elif kind != "dir":
            raise LayerError(f"layer member {rel!r} lies under a non-directory")
        return f"{self.root}/{parent}"

    def _replace(self, rel: str) -> None:
        kind = self.kinds.pop(rel, None)
        if kind == "dir":
            shutil.rmtree(f"{self.root}/{rel}")
            prefix = rel + "/"
            for key in [k for k in self.kinds if k.startswith(prefix)]:
                del self.kinds[key]
            self.dirs = [(p, m) for p, m in self.dirs if p != f"{self.root}/{rel}" and not p.startswith(f"{self.root}/{prefix}")]
        elif kind is not None:
            os.unlink(f"{self.root}/{rel}")

    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = _clean_name(m.name)
        if not rel:
            return
        parent = self._parent(rel)
        base = rel.rpartition("/")[2]
        if base == OPAQUE:
            _set_xattr(parent, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT + WHITEOUT):
            return  # other AUFS metadata (.wh..wh.plnk ...): nothing for overlayfs
        if base.startswith(WHITEOUT):
            target = rel[: len(rel) - len(base)] + base[len(WHITEOUT) :]
            self._replace(target)
            os.mknod(f"{self.root}/{target}", stat.S_IFCHR | 0o000, os.makedev(0, 0))
            self.kinds[target] = "other"
            return
        path = f"{self.root}/{rel}"
        if m.isdir():
            if self.kinds.get(rel) != "dir":
                self._replace(rel)
                os.mkdir(path, 0o755)
                self.kinds[rel] = "dir"
            self.dirs.append((path, m))
            return
        self._replace(rel)
        if m.islnk():
            target = _clean_name(m.linkname)
            if self.kinds.get(target) != "other":
                raise LayerError(f"hard link {rel!r} to {m.linkname!r}, which this layer does not hold")
            os.link(f"{self.root}/{target}", path, follow_symlinks=False)
            self.kinds[rel] = "other"
            return
        if m.isreg():
            src = tf.extractfile(m)
            assert src is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            self.size += m.size
        elif m.issym():
            os.symlink(m.linkname, path)
        elif m.ischr() or m.isblk():
            os.mknod(path, (stat.S_IFCHR if m.ischr() else stat.S_IFBLK) | 0o600, os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mkfifo(path, 0o600)
        else:
            return
        self.kinds[rel] = "other"
        _apply_attrs(path, m)


def _apply_attrs(path: str, m: tarfile.TarInfo) -> None:
    if os.geteuid() == 0:
        os.lchown(path, m.uid, m.gid)
    if not m.issym():
        os.chmod(path, m.mode & 0o7777)
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            _set_xattr(path, key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape"))
    os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)


def _set_xattr(path: str, name: str, value: bytes) -> None:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as exc:
        if name == OPAQUE_XATTR:
            raise LayerError(f"cannot mark {path} opaque: {exc}") from exc
