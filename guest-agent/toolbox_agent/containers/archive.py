"""`docker cp`: paths inside a container's root filesystem, their stat, tar out, tar in.

Paths are resolved component by component with symlinks followed *inside* the rootfs
(an absolute link target starts again at the rootfs), so nothing outside it is reached.
"""

from __future__ import annotations

import datetime
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

MAX_LINKS = 40
# Go's os.FileMode bits, which the docker CLI reads from the stat header
GO_DIR, GO_SYMLINK = 1 << 31, 1 << 27


class PathError(Exception):
    """No such path in the container (404), or it cannot be used so (400)."""

    def __init__(self, message: str, missing: bool = True) -> None:
        super().__init__(message)
        self.missing = missing


def secure_join(root: Path, path: str, follow_last: bool = True) -> Path:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    current = root
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink() and (parts or follow_last):
            links += 1
            if links > MAX_LINKS:
                raise PathError(f"too many levels of symbolic links: {path}", missing=False)
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        current = candidate
    return current


def stat_doc(root: Path, path: str) -> dict[str, Any]:
    full = secure_join(root, path, follow_last=False)
    try:
        st = full.lstat()
    except FileNotFoundError:
        raise PathError(f"Could not find the file {path} in container") from None
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        mode |= GO_DIR
    link = ""
    if stat.S_ISLNK(st.st_mode):
        mode |= GO_SYMLINK
        link = os.readlink(full)
    mtime = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    return {"name": os.path.basename(path.rstrip("/")) or "/", "size": st.st_size, "mode": mode, "mtime": mtime, "linkTarget": link}


def tar_path(root: Path, path: str) -> bytes:
    """A tar of the path, its members named from its base name (as `docker cp` expects)."""
    full = secure_join(root, path)
    if not full.exists() and not full.is_symlink():
        raise PathError(f"Could not find the file {path} in container")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(str(full), arcname=os.path.basename(path.rstrip("/")) or ".", recursive=True)
    return buf.getvalue()


def extract(root: Path, path: str, data: bytes) -> None:
    """Unpack a tar into the directory at path; members may not climb out of it."""
    dest = secure_join(root, path)
    if not dest.is_dir():
        raise PathError(f"Could not find the file {path} in container" if not dest.exists() else f"{path} is not a directory",
                        missing=not dest.exists())  # fmt: skip
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            members = []
            for m in tf.getmembers():
                name = os.path.normpath(m.name).lstrip("/")
                if name.startswith("..") or (m.islnk() and os.path.normpath(m.linkname).startswith("..")):
                    raise PathError(f"unsafe path in archive: {m.name}", missing=False)
                if m.isdev():
                    continue
                m.name = name
                members.append(m)
            tf.extractall(str(dest), members=members)  # noqa: S202 - names checked above
    except tarfile.TarError as exc:
        raise PathError(f"bad archive: {exc}", missing=False) from None
