"""The local driver's options (type, device, o): what to mount on a volume's _data."""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger("toolbox_agent.volumes")
_libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC = 1, 2, 4, 8, 4096, 16384
MNT_DETACH = 2
_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "bind": MS_BIND, "rbind": MS_BIND | MS_REC}
VALID_KEYS = ("type", "device", "o", "size")


def validate(options: dict[str, str]) -> None:
    for key in options:
        if key not in VALID_KEYS:
            raise ValueError(f'invalid option key: "{key}"')
    if options and "device" not in options and options.get("type") != "tmpfs":
        raise ValueError("missing required option: \"device\"")


def mount(options: dict[str, str], target: Path) -> None:
    """mount -t TYPE -o O DEVICE TARGET, as the local driver does."""
    if not options.get("type") and not options.get("device"):
        return
    flags, data = 0, []
    for opt in (options.get("o") or "").split(","):
        if opt in _FLAGS:
            flags |= _FLAGS[opt]
        elif opt:
            data.append(opt)
    fstype = options.get("type") or "none"
    device = options.get("device") or fstype
    if flags & MS_BIND:
        fstype = "none"
    log.info("mount %s (%s) on %s", device, fstype, target)
    rc = _libc.mount(device.encode(), os.fsencode(target), fstype.encode(), flags, ",".join(data).encode() or None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def unmount(target: Path) -> None:
    if os.path.ismount(target):
        _libc.umount2(os.fsencode(target), MNT_DETACH)
