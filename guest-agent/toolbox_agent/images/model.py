"""The image store's records and its one way of writing a file (atomically)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with_suppress_unlink(tmp)
        raise


def with_suppress_unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class LayerRecord:
    diff_id: str
    digest: str  # the blob as stored (compressed as pulled, or the plain tar when loaded)
    media_type: str
    size: int  # size of that blob


@dataclass
class Image:
    id: str
    config: dict[str, Any]
    layers: list[LayerRecord]
    layer_dirs: list[Path]
    repo_tags: list[str]  # familiar form: busybox:latest
    repo_digests: list[str]  # familiar form: busybox@sha256:...
    size: int
    stored_at: float
    names: list[str] = field(default_factory=list)  # fully qualified tags

    @property
    def created(self) -> str:
        return str(self.config.get("created") or "")

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]
