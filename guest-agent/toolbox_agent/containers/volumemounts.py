"""The engine's side of mounts: a container's mount points resolved at create (volumes made on
first use, anonymous ones for VOLUMEs), mounted at start (copy-up from the image into an empty
volume, as Docker does), released at exit and removal. Kept as DIR/mounts.json."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import posixpath
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from toolbox_agent.containers import archive
from toolbox_agent.containers.errors import InvalidParameter
from toolbox_agent.containers.model import Container
from toolbox_agent.containers.mounts import (
    MountError, MountPoint, inherit, oci_entry, parse_bind, parse_volumes_from, plan, tmpfs_entries,
)
from toolbox_agent.containers.runtime import run_command
from toolbox_agent.volumes import InvalidVolume, VolumeInUse, VolumeStore

log = logging.getLogger("toolbox_agent.containers")
MOUNTS_FILE = "mounts.json"
MS_BIND, MS_REC, MNT_DETACH = 4096, 16384, 2
_libc = ctypes.CDLL(None, use_errno=True)


class ReadOnlyTarget(Exception):
    """`docker cp` into a read-only volume or root filesystem (Docker answers it with a 500)."""


class ContainerMounts:
    def __init__(self, volumes: VolumeStore, get: Callable[[str], Container], everyone: Callable[[], Iterable[Container]]) -> None:
        self.volumes, self._get, self._everyone = volumes, get, everyone
        self._cache: dict[str, list[MountPoint]] = {}
        volumes.users = self.users

    # ---- records -----------------------------------------------------------------------
    def of(self, c: Container) -> list[MountPoint]:
        if c.id not in self._cache:
            self._cache[c.id] = load(c)
        return self._cache[c.id]

    def save(self, c: Container, mps: list[MountPoint]) -> None:
        tmp = c.dir / (MOUNTS_FILE + ".tmp")
        tmp.write_text(json.dumps([mp.to_dict() for mp in mps], indent=1))
        os.replace(tmp, c.dir / MOUNTS_FILE)
        self._cache[c.id] = mps

    def users(self, volume: str) -> list[str]:
        """The containers naming this volume (running or not): it may not be removed."""
        return [c.id for c in self._everyone() if any(mp.type == "volume" and mp.name == volume for mp in self.of(c))]

    def inspect(self, c: Container) -> list[dict[str, Any]]:
        return [mp.inspect() for mp in self.of(c)]

    # ---- create ------------------------------------------------------------------------
    def prepare(self, host_config: dict[str, Any], config: dict[str, Any]) -> list[MountPoint]:
        """Validate every mount of a new container and make the volumes it names."""
        try:
            inherited: list[MountPoint] = []
            for spec in host_config.get("VolumesFrom") or []:
                ref, mode = parse_volumes_from(str(spec))
                inherited += inherit(self.of(self._get(ref)), mode)  # NoSuchContainer: 404, as Docker
            mps = plan(host_config, config, inherited)
            tmpfs_entries(host_config)
        except MountError as exc:
            raise InvalidParameter(str(exc)) from None
        made: list[str] = []
        try:
            for mp in mps:
                if mp.type == "volume":
                    existed = mp.name in self.volumes.volumes
                    vol = self.volumes.create(mp.name, labels=mp.volume_labels, options=mp.volume_options)
                    if not existed:
                        made.append(vol.name)
                    mp.name, mp.source = vol.name, str(vol.mountpoint)
        except InvalidVolume as exc:
            for name in made:
                self.volumes.remove(name, force=True)
            raise InvalidParameter(str(exc)) from None
        return mps

    # ---- start, exit, remove -----------------------------------------------------------
    async def start(self, c: Container, root: Path) -> list[dict[str, Any]]:
        """The runtime's mounts for this start; volumes mounted (and filled from the image)."""
        entries = []
        try:
            for mp in self.of(c):
                if mp.type == "bind" and not os.path.lexists(mp.source):
                    if not mp.create_source:
                        raise InvalidParameter(f'invalid mount config for type "bind": bind source path does not exist: {mp.source}')
                    os.makedirs(mp.source, 0o755, exist_ok=True)
                elif mp.type == "volume":
                    if mp.name not in self.volumes.volumes:  # removed behind our back: make it again
                        self.volumes.create(mp.name)
                    path = self.volumes.mount(mp.name, c.id, mp.destination, mp.rw)
                    mp.source = str(path)
                    if mp.copy_data:
                        await copy_up(root, mp.destination, path)
                entries.append(oci_entry(mp))
            return entries + tmpfs_entries(c.host_config)
        except (InvalidVolume, MountError) as exc:
            self.stop(c)
            raise InvalidParameter(str(exc)) from None

    def reattach(self, c: Container) -> None:
        """A container still running after an agent restart: count its volumes as mounted again."""
        for mp in self.of(c):
            if mp.type == "volume" and mp.name in self.volumes.volumes:
                self.volumes.mount(mp.name, c.id, mp.destination, mp.rw, quiet=True)

    def stop(self, c: Container) -> None:
        for mp in self.of(c):
            if mp.type == "volume":
                self.volumes.unmount(mp.name, c.id)

    def release(self, c: Container, remove_anonymous: bool) -> None:
        """The container is gone; with `rm -v` (or --rm) its anonymous volumes go too."""
        mps = self.of(c)
        self.stop(c)
        self._cache.pop(c.id, None)
        if not remove_anonymous:
            return
        for mp in mps:
            vol = self.volumes.volumes.get(mp.name) if mp.type == "volume" else None
            if vol is not None and vol.anonymous:
                try:
                    self.volumes.remove(vol.name)
                except VolumeInUse:
                    pass  # shared by --volumes-from: the last user's removal takes it

    def check_writable(self, c: Container, path: str) -> None:
        """Docker's check before `docker cp` writes at path: the mount it falls in (the deepest),
        else the root filesystem, must be writable."""
        target = posixpath.normpath(posixpath.join("/", path))
        inside = [mp for mp in self.of(c) if target == mp.destination or target.startswith(mp.destination.rstrip("/") + "/")]
        if inside:
            if not max(inside, key=lambda mp: len(mp.destination)).rw:
                raise ReadOnlyTarget("mounted volume is marked read-only")
        elif c.host_config.get("ReadonlyRootfs"):
            raise ReadOnlyTarget("container rootfs is marked read-only")

    def paths(self, c: Container) -> list[tuple[str, str]]:
        """(destination, host source) of the binds and volumes, for `docker cp` of a stopped container."""
        return [(mp.destination, mp.source) for mp in self.of(c) if mp.type in ("bind", "volume") and mp.source]


def load(c: Container) -> list[MountPoint]:
    """The container's mount points as recorded (DIR/mounts.json)."""
    try:
        return [MountPoint.from_dict(d) for d in json.loads((c.dir / MOUNTS_FILE).read_text())]
    except FileNotFoundError:  # made by an agent before volumes: its binds only
        return _legacy_binds(c)
    except (OSError, ValueError, TypeError):
        return []


def _legacy_binds(c: Container) -> list[MountPoint]:
    out = []
    for raw in c.host_config.get("Binds") or []:
        try:
            mp = parse_bind(str(raw))
        except MountError:
            continue
        if mp.type == "bind":
            out.append(mp)
    return out


async def copy_up(root: Path, destination: str, volume: Path) -> None:
    """Docker's copy-up: an empty volume takes the image's content at its destination, and
    that directory's owner and mode."""
    if any(volume.iterdir()):
        return
    try:
        src = archive.secure_join(root, destination)
    except archive.PathError:
        return
    if not src.is_dir() or src.is_symlink():
        return
    if any(src.iterdir()):
        rc, _, err = await run_command("cp", "-a", f"{src}/.", f"{volume}/")
        if rc != 0:
            log.warning("copy-up of %s into %s: %s", destination, volume, err.strip())
    st = src.stat()
    os.chown(volume, st.st_uid, st.st_gid)
    os.chmod(volume, stat.S_IMODE(st.st_mode))


def live_root(pid: int) -> Path | None:
    """/proc/PID/root of a running container, unless it is the agent's own root (a runtime
    without a mount namespace, as the tests' fake one)."""
    if pid <= 0:
        return None
    path = Path(f"/proc/{pid}/root")
    try:
        mine, theirs = os.stat("/"), os.stat(path)
    except OSError:
        return None
    return None if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino) else path


def bind_into(root: Path, paths: list[tuple[str, str]]) -> list[Path]:
    """Bind each (destination, source) under root, parents first; the targets, to unbind."""
    done: list[Path] = []
    for dest, source in sorted(paths, key=lambda p: p[0].count("/")):
        try:
            target = archive.secure_join(root, dest)
            if not os.path.lexists(source):
                continue
            if os.path.isdir(source):
                target.mkdir(parents=True, exist_ok=True)
            elif not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            _bind(source, target)
            done.append(target)
        except (OSError, archive.PathError) as exc:
            log.warning("binding %s at %s for docker cp: %s", source, dest, exc)
    return done


def unbind(targets: list[Path]) -> None:
    for target in reversed(targets):
        if _libc.umount2(os.fsencode(target), 0) != 0:
            _libc.umount2(os.fsencode(target), MNT_DETACH)


def _bind(source: str, target: Path) -> None:
    if _libc.mount(os.fsencode(source), os.fsencode(target), b"none", MS_BIND | MS_REC, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
