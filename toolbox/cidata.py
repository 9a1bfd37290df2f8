"""The config drive: an ISO9660 volume labelled `cidata` that tells the guest who it is.

Written in pure Python with pycdlib (a Mac has no mkisofs). The guest's init reads it on
every boot; its format is documented in vm-image/README.md. Files at the root, with Rock
Ridge and Joliet names:

    version                      "1"
    hostname                     one line
    user                         "toolbox UID GID" (the host user's ids, so shared files match)
    authorized_keys              the instance's login key
    ssh_host_ed25519_key(.pub)   the guest's host key, made on the host and pinned there
    mounts                       "TYPE TAG GUEST_PATH rw|ro" per line (TYPE 9p or vboxsf)
    agent.json                   settings for the guest agent
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
VOLUME_LABEL = "cidata"
LOGIN_USER = "toolbox"


@dataclass(frozen=True)
class DriveMount:
    type: str  # "9p" or "vboxsf"
    tag: str  # 9p mount_tag or vboxsf share name
    guest_path: str
    writable: bool = True


@dataclass(frozen=True)
class ConfigDrive:
    hostname: str
    uid: int
    gid: int
    authorized_keys: Sequence[str]
    host_private_key: str
    host_public_key: str
    mounts: Sequence[tuple[str, str, str, bool] | DriveMount] = ()
    agent: dict[str, Any] = field(default_factory=dict)


def _mount(entry: tuple[str, str, str, bool] | DriveMount) -> DriveMount:
    return entry if isinstance(entry, DriveMount) else DriveMount(*entry)


def render_files(drive: ConfigDrive) -> dict[str, tuple[bytes, int]]:
    """The drive's files: name -> (content, mode). Pure, so tests can read it directly."""
    return {
        "version": (f"{FORMAT_VERSION}\n".encode(), 0o644),
        "hostname": (f"{drive.hostname}\n".encode(), 0o644),
        "user": (f"{LOGIN_USER} {drive.uid} {drive.gid}\n".encode(), 0o644),
        "authorized_keys": ("".join(k.strip() + "\n" for k in drive.authorized_keys).encode(), 0o644),
        "ssh_host_ed25519_key": (drive.host_private_key.encode(), 0o600),
        "ssh_host_ed25519_key.pub": (drive.host_public_key.strip().encode() + b"\n", 0o644),
        "mounts": (mounts_file(drive.mounts), 0o644),
        "agent.json": (json.dumps(drive.agent, indent=2, sort_keys=True).encode() + b"\n", 0o644),
    }


def mounts_file(mounts: Sequence[tuple[str, str, str, bool] | DriveMount]) -> bytes:
    """The `mounts` file: "TYPE TAG GUEST_PATH rw|ro" per line, in the order given."""
    lines = []
    for m in map(_mount, mounts):
        if m.type not in ("9p", "vboxsf") or any(c.isspace() for c in m.tag + m.guest_path):
            raise ValueError(f"mount {m} cannot be written: type must be 9p or vboxsf, no spaces in tag or path")
        lines.append(f"{m.type} {m.tag} {m.guest_path} {'rw' if m.writable else 'ro'}\n")
    return "".join(lines).encode()


def write_config_drive(path: Path, drive: ConfigDrive) -> None:
    """Write the config drive to `path` atomically (a temp file renamed into place)."""
    write_files(path, render_files(drive))


def read_files(path: Path) -> dict[str, tuple[bytes, int]]:
    """A config drive's files, name -> (content, mode), as render_files gives them."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        files = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dir() or child.rock_ridge is None:
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = (out.getvalue(), child.rock_ridge.get_file_mode() & 0o7777)
        return files
    finally:
        iso.close()


def replace_mounts(path: Path, mounts: Sequence[tuple[str, str, str, bool] | DriveMount]) -> None:
    """Rewrite an existing drive's `mounts` file and keep everything else (the guest's
    host key exists only there)."""
    files = read_files(path)
    files["mounts"] = (mounts_file(mounts), 0o644)
    write_files(path, files)


def write_files(path: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """An ISO holding `files` at its root, written to `path` atomically."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_LABEL, rock_ridge="1.09", joliet=3)
    for index, (name, (content, mode)) in enumerate(sorted(files.items())):
        # ISO9660's own names are 8.3 upper case; the guest reads the Rock Ridge names.
        iso.add_fp(
            io.BytesIO(content),
            len(content),
            f"/F{index}.;1",
            rr_name=name,
            joliet_path=f"/{name}",
            file_mode=0o100000 | mode,
        )
    tmp = path.with_name(path.name + ".tmp")
    try:
        iso.write(str(tmp))
        iso.close()
        os.chmod(tmp, 0o600)  # it holds the guest's private host key
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
