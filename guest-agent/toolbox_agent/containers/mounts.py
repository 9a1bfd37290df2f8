"""A container's mount points: Docker's `-v`, `--mount`, `--tmpfs`, `--volumes-from` and the
image's VOLUMEs, parsed and validated with Docker's messages (pure functions, no I/O but
the bind source check). The engine side (volumes, copy-up, events) is volumemounts.py.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import asdict, dataclass
from typing import Any

RW_MODES = {"ro", "rw"}
LABEL_MODES = {"z", "Z"}
PROPAGATIONS = {"private", "rprivate", "slave", "rslave", "shared", "rshared"}
COPY_MODES = {"nocopy"}
CONSISTENCY = {"consistent", "cached", "delegated"}
TMPFS_DEFAULTS = ["noexec", "nosuid", "nodev"]


class MountError(ValueError):
    """An invalid mount; its message is Docker's."""


@dataclass
class MountPoint:
    type: str  # bind | volume | tmpfs
    destination: str
    source: str = ""  # bind: the host path; volume: filled from the volume's Mountpoint
    name: str = ""  # volume: its name ("" until an anonymous one is made)
    rw: bool = True
    mode: str = ""
    propagation: str = ""
    copy_data: bool = True
    tmpfs_options: str = ""  # tmpfs: "size=...,mode=..."
    create_source: bool = False  # bind by -v: make a missing host directory, as Docker does
    volume_labels: dict[str, str] | None = None
    volume_options: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> MountPoint:
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})

    def inspect(self) -> dict[str, Any]:
        """Docker's MountPoint in `docker inspect` and `docker ps`."""
        doc: dict[str, Any] = {"Type": self.type}
        if self.type == "volume":
            doc["Name"] = self.name
        doc.update(Source=self.source, Destination=self.destination)
        if self.type == "volume":
            doc["Driver"] = "local"
        doc.update(Mode=self.mode, RW=self.rw, Propagation=self.propagation)
        return doc


def valid_mode(mode: str) -> bool:
    """Docker's linuxValidMountMode: each kind of option at most once, nothing unknown."""
    if mode == "":
        return True
    counts: dict[str, int] = {}
    for opt in mode.split(","):
        kind = next((k for k, s in (("rw", RW_MODES), ("label", LABEL_MODES), ("prop", PROPAGATIONS),
                                     ("copy", COPY_MODES), ("cons", CONSISTENCY)) if opt in s), None)  # fmt: skip
        if kind is None:
            return False
        counts[kind] = counts.get(kind, 0) + 1
    return all(n <= 1 for n in counts.values())


def _check_target(kind: str, target: str) -> str:
    if not target:
        raise MountError(f'invalid mount config for type "{kind}": field Target must not be empty')
    if posixpath.normpath(target) == "/":
        raise MountError(f"invalid mount config for type \"{kind}\": invalid specification: destination can't be '/'")
    if not target.startswith("/"):
        raise MountError(f"invalid mount config for type \"{kind}\": invalid mount path: '{target}' mount path must be absolute")
    return posixpath.normpath(target)


def parse_bind(raw: str) -> MountPoint:
    """`-v SRC:DST[:MODE]` (HostConfig.Binds): a bind when SRC is absolute, else a named volume."""
    arr = raw.split(":", 3)
    invalid = f"invalid volume specification: '{raw}'"
    if not arr[0] or len(arr) > 3 or len(arr) == 1:
        raise MountError(invalid)
    if len(arr) == 2 and valid_mode(arr[1]):
        raise MountError(invalid)  # "/dst:ro": a destination with a mode is not a volume
    source, target = arr[0], arr[1]
    mode = arr[2] if len(arr) == 3 else ""
    if not valid_mode(mode):
        raise MountError(f"invalid mode: {mode}")
    opts = mode.split(",") if mode else []
    kind = "bind" if source.startswith("/") else "volume"
    try:
        dest = _check_target(kind, target)
    except MountError as exc:
        raise MountError(f"{invalid}: {exc}") from None
    prop = next((o for o in opts if o in PROPAGATIONS), "rprivate")
    if kind == "bind":
        return MountPoint("bind", dest, posixpath.normpath(source), rw="ro" not in opts, mode=mode, propagation=prop,
                          create_source=True)  # fmt: skip
    return MountPoint("volume", dest, name=source, rw="ro" not in opts, mode=mode or "z", copy_data="nocopy" not in opts)


def parse_mount(spec: dict[str, Any]) -> MountPoint:
    """One HostConfig.Mounts entry (`--mount type=...,source=...,target=...`)."""
    kind = str(spec.get("Type") or "")
    source, target = str(spec.get("Source") or ""), str(spec.get("Target") or "")
    bind_opts, vol_opts, tmpfs_opts = spec.get("BindOptions"), spec.get("VolumeOptions"), spec.get("TmpfsOptions")
    bad = f'invalid mount config for type "{kind}": '
    if kind not in ("bind", "volume", "tmpfs"):
        raise MountError(bad + "mount type unknown")
    dest = _check_target(kind, target)
    ro = bool(spec.get("ReadOnly"))
    if kind == "bind":
        if not source:
            raise MountError(bad + "field Source must not be empty")
        if vol_opts:
            raise MountError(bad + "field VolumeOptions must not be specified")
        if not source.startswith("/"):
            raise MountError(bad + f"invalid mount path: '{source}' mount path must be absolute")
        prop = str((bind_opts or {}).get("Propagation") or "rprivate")
        if prop not in PROPAGATIONS:
            raise MountError(bad + f"invalid propagation mode: {prop}")
        create = bool((bind_opts or {}).get("CreateMountpoint"))
        if not create and not os.path.lexists(source):
            raise MountError(bad + f"bind source path does not exist: {source}")
        return MountPoint("bind", dest, posixpath.normpath(source), rw=not ro, propagation=prop, create_source=create)
    if bind_opts:
        raise MountError(bad + "field BindOptions must not be specified")
    if kind == "volume":
        if ro and not source:
            raise MountError(bad + "must not set ReadOnly mode when using anonymous volumes")
        vo = vol_opts or {}
        driver = vo.get("DriverConfig") or {}
        return MountPoint("volume", dest, name=source, rw=not ro, mode="z" if source else "", copy_data=not vo.get("NoCopy"),
                          volume_labels=dict(vo.get("Labels") or {}) or None,
                          volume_options=dict(driver.get("Options") or {}) or None)  # fmt: skip
    if source:
        raise MountError(bad + "field Source must not be specified")
    return MountPoint("tmpfs", dest, rw=not ro, tmpfs_options=tmpfs_data(tmpfs_opts or {}, ro))


def tmpfs_data(opts: dict[str, Any], ro: bool) -> str:
    """Docker's ConvertTmpfsOptions: ro, mode=%o, size with the largest even suffix."""
    out = ["ro"] if ro else []
    if opts.get("Mode"):
        out.append(f"mode={int(opts['Mode']):o}")
    size = int(opts.get("SizeBytes") or 0)
    if size:
        for suffix, div in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % div == 0:
                out.append(f"size={size // div}{suffix}")
                break
        else:
            out.append(f"size={size}")
    return ",".join(out)


def tmpfs_options(data: str) -> list[str]:
    """Docker's defaults (noexec,nosuid,nodev) merged with the user's: a later flag wins over its opposite."""
    merged: list[str] = []
    for opt in TMPFS_DEFAULTS + [o for o in data.split(",") if o]:
        merged = [m for m in merged if _opt_base(m) != _opt_base(opt)]
        merged.append(opt)
    return merged


def _opt_base(opt: str) -> str:
    key = opt.split("=", 1)[0]
    if key in ("rw", "ro"):
        return "rwro"
    if key in ("dev", "nodev"):
        return "dev"
    return key[2:] if key.startswith("no") else key


def parse_volumes_from(spec: str) -> tuple[str, str]:
    """`C[:ro|rw]` -> (container, mode)."""
    if not spec:
        raise MountError("volumes-from specification cannot be an empty string")
    ref, _, mode = spec.partition(":")
    if not mode:
        return ref, ""
    opts = mode.split(",")
    if not valid_mode(mode) or any(o in PROPAGATIONS or o in COPY_MODES for o in opts):
        raise MountError(f"invalid mode: {mode}")
    return ref, mode


def plan(host_config: dict[str, Any], config: dict[str, Any], inherited: list[MountPoint]) -> list[MountPoint]:
    """Every mount point of a new container, as Docker registers them: volumes-from first, then
    -v, then --mount (a destination twice among those two is an error), then anonymous volumes
    for Config.Volumes (and the image's) not already covered nor a --tmpfs."""
    by_dest: dict[str, MountPoint] = {mp.destination: mp for mp in inherited}
    explicit: set[str] = set()
    for raw in host_config.get("Binds") or []:
        mp = parse_bind(str(raw))
        if mp.destination in explicit:
            raise MountError(f"Duplicate mount point: {mp.destination}")
        explicit.add(mp.destination)
        by_dest[mp.destination] = mp
    for spec in host_config.get("Mounts") or []:
        mp = parse_mount(spec)
        if mp.destination in explicit:
            raise MountError(f"Duplicate mount point: {mp.destination}")
        explicit.add(mp.destination)
        by_dest[mp.destination] = mp
    tmpfs = {posixpath.normpath(d) for d in (host_config.get("Tmpfs") or {})}
    for dest in (config.get("Volumes") or {}):
        target = posixpath.normpath(dest) if dest.startswith("/") else dest
        if target in by_dest or target in tmpfs:
            continue
        by_dest[target] = MountPoint("volume", _check_target("volume", target))
    return sorted(by_dest.values(), key=lambda m: m.destination.count("/"))


def inherit(mounts: list[MountPoint], mode: str) -> list[MountPoint]:
    """Another container's mount points for --volumes-from (tmpfs excluded), with the mode applied."""
    out = []
    for mp in mounts:
        if mp.type == "tmpfs":
            continue
        copy = MountPoint.from_dict(mp.to_dict())
        if mode:
            copy.rw, copy.mode = "ro" not in mode.split(","), mode
        copy.copy_data = False
        copy.create_source = False
        out.append(copy)
    return out


def tmpfs_entries(host_config: dict[str, Any]) -> list[dict[str, Any]]:
    """HostConfig.Tmpfs (`--tmpfs /dst[:opts]`) as OCI mounts; a relative destination is an error."""
    out = []
    for dest, data in (host_config.get("Tmpfs") or {}).items():
        try:
            target = _check_target("tmpfs", str(dest))
        except MountError:
            raise MountError(f"invalid tmpfs destination: {dest}") from None
        out.append({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": tmpfs_options(str(data or ""))})
    return out


def oci_entry(mp: MountPoint) -> dict[str, Any]:
    """The runtime's mount for a mount point (its source resolved)."""
    if mp.type == "tmpfs":
        return {"destination": mp.destination, "type": "tmpfs", "source": "tmpfs", "options": tmpfs_options(mp.tmpfs_options)}
    opts = ["rbind", mp.propagation or "rprivate", "rw" if mp.rw else "ro"]
    return {"destination": mp.destination, "type": "bind", "source": mp.source, "options": opts}
