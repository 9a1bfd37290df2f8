"""A container's root filesystem (overlayfs of the image layers under its own upper dir)
and its per-container /etc files."""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from toolbox_agent.network.etc import hosts_file

log = logging.getLogger("toolbox_agent.containers")
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)

RESOLV_SOURCE = Path("/etc/resolv.conf")
FALLBACK_RESOLV = "nameserver 10.0.2.3\n"


def is_mounted(path: Path) -> bool:
    return os.path.ismount(path)


async def mount(layer_dirs: list[Path], cdir: Path) -> Path:
    """Mount the overlay at cdir/rootfs (idempotent); the image's top layer first in lowerdir."""
    target, upper, work = cdir / "rootfs", cdir / "upper", cdir / "work"
    for d in (target, upper, work):
        d.mkdir(exist_ok=True)
    if is_mounted(target):
        return target
    lowers = [str(p) for p in reversed(layer_dirs)]
    if not lowers:
        empty = cdir / "empty"
        empty.mkdir(exist_ok=True)
        lowers = [str(empty)]
    options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    log.debug("mount overlay %s (%s)", target, options)
    # mount(2) directly: a `mount` process costs a second under TCG
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, options.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mounting the container's root filesystem failed: {os.strerror(err)}")
    return target


async def unmount(cdir: Path) -> None:
    target = cdir / "rootfs"
    if is_mounted(target) and _libc.umount2(os.fsencode(target), 0) != 0:
        log.warning("umount %s: %s; detaching it", target, os.strerror(ctypes.get_errno()))
        _libc.umount2(os.fsencode(target), MNT_DETACH)


def write_etc_files(cdir: Path, hostname: str, extra_hosts: list[str]) -> tuple[Path, Path, Path]:
    """DIR/hosts, DIR/hostname, DIR/resolv.conf (bind-mounted over the image's)."""
    hosts = cdir / "hosts"
    hosts.write_text(hosts_file(hostname, "", extra_hosts, ""))  # the network engine rewrites it with the address
    hostname_file = cdir / "hostname"
    hostname_file.write_text(hostname + "\n")
    resolv = cdir / "resolv.conf"
    try:
        text = RESOLV_SOURCE.read_text()
    except OSError:
        text = ""
    resolv.write_text(text if "nameserver" in text else FALLBACK_RESOLV)
    return hosts, hostname_file, resolv


def read_file(rootfs: Path, path: str) -> str:
    """A text file of the container's filesystem, without following links out of it."""
    try:
        full = rootfs / path.lstrip("/")
        if full.is_symlink():
            return ""
        return full.read_text(errors="replace")
    except OSError:
        return ""
