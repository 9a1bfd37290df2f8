"""The volume store: <root>/volumes/NAME/{volume.json,_data}, Docker's "local" driver.

A volume is in use while any container (running or not) names it; the container engine
tells the store who that is (`users`). The local driver's options (type, device, o) mount
something else on _data while a container uses the volume, as Docker's do
(`--opt type=none --opt o=bind --opt device=/path` is the usual one).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolbox_agent.events import EventBus
from toolbox_agent.lean import random_id
from toolbox_agent.volumes import localmount
from toolbox_agent.volumes.errors import InvalidVolume, NoSuchVolume, VolumeInUse

log = logging.getLogger("toolbox_agent.volumes")
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
DRIVER = "local"


@dataclass
class Volume:
    name: str
    created_at: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    driver: str = DRIVER
    dir: Path = field(default=Path("."), compare=False)

    @property
    def mountpoint(self) -> Path:
        return self.dir / "_data"

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    def doc(self) -> dict[str, Any]:
        """Docker's Volume object."""
        return {
            "CreatedAt": self.created_at,
            "Driver": self.driver,
            "Labels": dict(self.labels),
            "Mountpoint": str(self.mountpoint),
            "Name": self.name,
            "Options": dict(self.options) or None,
            "Scope": "local",
        }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class VolumeStore:
    def __init__(self, root: Path, events: EventBus) -> None:
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.events = events
        self.volumes: dict[str, Volume] = {}
        self.users: Callable[[str], list[str]] = lambda name: []  # the container engine replaces it
        self._mounts: dict[str, set[str]] = {}  # volume -> containers that have it mounted now
        self._load()

    def _load(self) -> None:
        for vdir in sorted(self.dir.iterdir()):
            try:
                doc = json.loads((vdir / "volume.json").read_text())
                self.volumes[doc["name"]] = Volume(**doc, dir=vdir)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("skipping volume %s: %s", vdir.name, exc)

    def _save(self, vol: Volume) -> None:
        doc = asdict(vol)
        doc.pop("dir")
        tmp = vol.dir / "volume.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, vol.dir / "volume.json")

    # ---- create, get, list -------------------------------------------------------------
    def create(self, name: str = "", driver: str = "", labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None) -> Volume:  # fmt: skip
        """A new volume, or the existing one of that name (as Docker: create is idempotent)."""
        anonymous = not name
        name = name or random_id()
        if driver and driver != DRIVER:
            raise InvalidVolume(f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" not found')
        if not NAME_RE.match(name):
            raise InvalidVolume(
                f'create {name}: "{name}" includes invalid characters for a local volume name, only '
                '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path'
            )
        if name in self.volumes:
            return self.volumes[name]
        opts = {str(k): str(v) for k, v in (options or {}).items()}
        try:
            localmount.validate(opts)
        except ValueError as exc:
            raise InvalidVolume(f"create {name}: {exc}") from None
        all_labels = {str(k): str(v) for k, v in (labels or {}).items()}
        if anonymous:
            all_labels[ANONYMOUS_LABEL] = ""
        vol = Volume(name, _now(), all_labels, opts, dir=self.dir / name)
        vol.mountpoint.mkdir(parents=True, exist_ok=True)
        self._save(vol)
        self.volumes[name] = vol
        self.events.publish("volume", "create", name, {"driver": DRIVER})
        return vol

    def get(self, name: str) -> Volume:
        vol = self.volumes.get(name)
        if vol is None:
            raise NoSuchVolume(name)
        return vol

    def list(self, filters: dict[str, list[str]] | None = None) -> list[Volume]:
        filters = filters or {}
        for key in filters:
            if key not in ("dangling", "driver", "label", "name"):
                raise InvalidVolume(f"invalid filter '{key}'")
        return sorted((v for v in self.volumes.values() if self._matches(v, filters)), key=lambda v: v.name)

    def _matches(self, vol: Volume, filters: dict[str, list[str]]) -> bool:
        for key, values in filters.items():
            if not values:
                continue
            if key == "name" and not any(v in vol.name for v in values):
                return False
            if key == "driver" and vol.driver not in values:
                return False
            if key == "label" and not matches_labels(vol.labels, values):
                return False
            if key == "dangling":
                want = values[-1].lower()
                if want not in ("true", "false", "1", "0"):
                    raise InvalidVolume(f"invalid filter 'dangling={values[-1]}'")
                if (want in ("true", "1")) == bool(self.users(vol.name)):
                    return False
        return True

    # ---- remove, prune -----------------------------------------------------------------
    def remove(self, name: str, force: bool = False) -> None:
        vol = self.volumes.get(name)
        if vol is None:
            if force:
                return
            raise NoSuchVolume(name)
        users = self.users(name)
        if users:
            raise VolumeInUse(name, users)
        localmount.unmount(vol.mountpoint)
        shutil.rmtree(vol.dir, ignore_errors=True)
        self.volumes.pop(name, None)
        self.events.publish("volume", "destroy", name, {"driver": DRIVER})

    def prune(self, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
        """Unused volumes; only anonymous ones unless the filter `all` is true (API >= 1.42)."""
        filters = filters or {}
        everything = (filters.get("all") or ["false"])[-1].lower() in ("true", "1")
        removed, freed = [], 0
        for vol in list(self.volumes.values()):
            if (not everything and not vol.anonymous) or self.users(vol.name):
                continue
            if filters.get("label") and not matches_labels(vol.labels, filters["label"]):
                continue
            if filters.get("label!") and matches_labels(vol.labels, filters["label!"], any_of=True):
                continue
            size = disk_usage(vol.mountpoint)
            self.remove(vol.name)
            removed.append(vol.name)
            freed += size
        return removed, freed

    # ---- use by containers -------------------------------------------------------------
    def mount(self, name: str, container: str, destination: str, rw: bool, quiet: bool = False) -> Path:
        """The volume is being mounted in a container: mount its options' filesystem if any.
        `quiet`: a running container found again after an agent restart (no event)."""
        vol = self.get(name)
        users = self._mounts.setdefault(name, set())
        if not users and vol.options and not os.path.ismount(vol.mountpoint):
            try:
                localmount.mount(vol.options, vol.mountpoint)
            except OSError as exc:
                raise InvalidVolume(f"error while mounting volume '{vol.mountpoint}': {exc}") from None
        users.add(container)
        if quiet:
            return vol.mountpoint
        attrs = {"container": container, "destination": destination, "driver": DRIVER, "propagation": "", "read/write": str(rw).lower()}
        self.events.publish("volume", "mount", name, attrs)
        return vol.mountpoint

    def unmount(self, name: str, container: str) -> None:
        users = self._mounts.get(name)
        if users is None or container not in users:
            return
        users.discard(container)
        vol = self.volumes.get(name)
        if not users and vol is not None and vol.options:
            localmount.unmount(vol.mountpoint)
        self.events.publish("volume", "unmount", name, {"container": container, "driver": DRIVER})


def matches_labels(labels: dict[str, str], wanted: list[str], any_of: bool = False) -> bool:
    """Docker's label filter: "key" or "key=value"; all must match (any, for label!)."""
    hits = []
    for item in wanted:
        key, eq, value = item.partition("=")
        hits.append(key in labels and (not eq or labels[key] == value))
    return any(hits) if any_of else all(hits)


def disk_usage(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
