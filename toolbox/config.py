"""Configuration: the global defaults (config.toml) and each instance's instance.toml.

Both follow one pattern: load the TOML → fill the defaults → validate, collecting EVERY
problem with its field path (so a user fixes them all in one go) → ConfigError. Files are
written atomically (temp file + fsync + rename), so a crash never leaves half a config.
Only tomllib (stdlib, fast) is imported here; tomli_w is imported when writing, which keeps
`toolbox status` quick.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from toolbox.errors import ConfigError
from toolbox.mounts import DEFAULT_MOUNTS, MountConfig, list_problems, syntax_problems
from toolbox.paths import global_config_file

INSTANCE_FORMAT = 1  # instance.toml's `version`; bump with a migration when the shape changes
DRIVERS = ("qemu", "libvirt", "virtualbox")
ACCELS = ("auto", "hvf", "kvm", "tcg")
DEFAULT_IMAGE_URL = "https://github.com/toolbox-vm/toolbox/releases/latest/download/manifest.json"
MIN_MEMORY_MIB = 512
MIN_DISK_GIB = 2
MAX_DISK_GIB = 2048


@dataclass(frozen=True)
class HostFacts:
    """What the host has; defaults and ranges are fitted to it."""

    cpus: int
    memory_mib: int

    @classmethod
    def probe(cls) -> HostFacts:
        cpus = os.cpu_count() or 1
        try:
            mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        except (ValueError, OSError):  # macOS has SC_PHYS_PAGES; be safe elsewhere
            mem = 4096
        return cls(cpus=cpus, memory_mib=int(mem))


def host_defaults(host: HostFacts) -> dict[str, int]:
    """Like Colima/Lima: a small share of the host, so the Mac stays usable.

    2 CPUs at most; half the host's memory, capped at 2 GiB and at least 1 GiB (but never
    more than the host has); a 20 GiB sparse data disk (qcow2 grows on demand).
    """
    memory = max(1024, min(2048, host.memory_mib // 2))
    return {"cpus": min(2, host.cpus), "memory_mib": min(memory, host.memory_mib), "disk_size_gib": 20}


@dataclass
class GlobalConfig:
    """config.toml: the defaults new instances get."""

    driver: str = "qemu"
    cpus: int = 2
    memory_mib: int = 2048
    disk_size_gib: int = 20
    image_url: str = DEFAULT_IMAGE_URL
    accel: str = "auto"
    # Folders every new instance shares, as HOST[:GUEST][:ro] (toolbox.mounts); "~" is
    # the home of whoever runs `init`. An empty list: no folder is shared by default.
    mounts: list[str] = field(default_factory=lambda: list(DEFAULT_MOUNTS))


@dataclass
class ImageRef:
    """The image an instance boots, as cached under cache/<sha256>/."""

    version: str
    sha256: str
    iso: str  # path of the ISO in the cache
    kernel: str = ""  # extracted for direct kernel boot ("" if not extracted)
    initrd: str = ""
    cmdline: str = ""
    arch: str = "x86_64"
    source: str = ""  # where it came from (manifest URL, ISO URL or path), for `info`


@dataclass
class InstanceConfig:
    """instance.toml: one instance, versioned."""

    name: str
    driver: str
    cpus: int
    memory_mib: int
    disk_size_gib: int
    image: ImageRef
    ssh_port: int
    created: str
    accel: str = "auto"
    mounts: list[MountConfig] = field(default_factory=list)
    # Registries the guest agent reaches over plain HTTP ("host:port"), and mirrors it
    # tries before Docker Hub ("http(s)://host:port"), as dockerd's daemon.json has them.
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    version: int = INSTANCE_FORMAT


# --- validation: every function appends "field.path: problem" and never raises -------


def _check_int(problems: list[str], path: str, value: Any, lo: int, hi: int, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{path}: expected a whole number, got {value!r}")
    elif not lo <= value <= hi:
        problems.append(f"{path}: {value}{unit} is out of range, use {lo}..{hi}{unit}")


def _check_choice(problems: list[str], path: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        problems.append(f"{path}: {value!r} is not one of {', '.join(choices)}")


def validate_resources(
    problems: list[str], prefix: str, values: dict[str, Any], host: HostFacts
) -> None:
    """The checks shared by config.toml, instance.toml and `init` options."""
    _check_choice(problems, f"{prefix}driver", values.get("driver"), DRIVERS)
    _check_int(problems, f"{prefix}cpus", values.get("cpus"), 1, host.cpus)
    _check_int(problems, f"{prefix}memory_mib", values.get("memory_mib"), MIN_MEMORY_MIB, host.memory_mib, " MiB")
    _check_int(problems, f"{prefix}disk_size_gib", values.get("disk_size_gib"), MIN_DISK_GIB, MAX_DISK_GIB, " GiB")
    _check_choice(problems, f"{prefix}accel", values.get("accel", "auto"), ACCELS)


def _unknown_keys(problems: list[str], prefix: str, data: dict[str, Any], known: set[str]) -> None:
    for key in sorted(set(data) - known):
        problems.append(f"{prefix}{key}: unknown setting")


def validate_global(data: dict[str, Any], host: HostFacts) -> list[str]:
    problems: list[str] = []
    _unknown_keys(problems, "", data, {f.name for f in fields(GlobalConfig)})
    validate_resources(problems, "", data, host)
    url = data.get("image_url")
    if not isinstance(url, str) or not url.strip():
        problems.append(f"image_url: expected a URL or path, got {url!r}")
    problems += syntax_problems("", data.get("mounts", []))
    return problems


def validate_instance(data: dict[str, Any], host: HostFacts) -> list[str]:
    problems: list[str] = []
    if data.get("version") != INSTANCE_FORMAT:
        problems.append(f"version: {data.get('version')!r} is not a format this toolbox reads ({INSTANCE_FORMAT})")
    _unknown_keys(problems, "", data, {f.name for f in fields(InstanceConfig)})
    for key in ("name", "created"):
        if not isinstance(data.get(key), str):
            problems.append(f"{key}: missing or not a string")
    validate_resources(problems, "", data, host)
    _check_int(problems, "ssh_port", data.get("ssh_port"), 1024, 65535)
    image = data.get("image")
    if not isinstance(image, dict):
        problems.append("image: missing table")
    else:
        for key in ("version", "sha256", "iso"):
            if not isinstance(image.get(key), str) or not image.get(key):
                problems.append(f"image.{key}: missing or not a string")
    problems += _instance_mount_problems(data.get("mounts", []))
    validate_registries(problems, "", data.get("insecure_registries", []), data.get("registry_mirrors", []))
    return problems


def _instance_mount_problems(mounts: Any) -> list[str]:
    """instance.toml's [[mounts]] tables: host_path, guest_path, writable."""
    if not isinstance(mounts, list):
        return [f"mounts: expected an array of tables, got {mounts!r}"]
    problems, parsed = [], []
    for i, mount in enumerate(mounts):
        if not isinstance(mount, dict) or not all(isinstance(mount.get(k), str) for k in ("host_path", "guest_path")):
            problems.append(f"mounts[{i}]: expected host_path and guest_path strings")
        elif not isinstance(mount.get("writable", True), bool) or set(mount) - {"host_path", "guest_path", "writable"}:
            problems.append(f"mounts[{i}]: only host_path, guest_path and writable (true/false) are known")
        else:
            parsed.append(MountConfig(**mount))
    return problems + list_problems("", parsed)


_REGISTRY_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:]+\](:[0-9]{1,5})?$")


def validate_registries(problems: list[str], prefix: str, insecure: Any, mirrors: Any) -> None:
    """insecure registries are "host[:port]"; mirrors are http(s) URLs without a path."""
    for i, value in enumerate(insecure if isinstance(insecure, list) else [insecure]):
        if not isinstance(value, str) or not _REGISTRY_HOST.match(value):
            problems.append(f"{prefix}insecure_registries[{i}]: {value!r} is not host[:port] (no scheme, no path)")
    for i, value in enumerate(mirrors if isinstance(mirrors, list) else [mirrors]):
        scheme, _, rest = value.partition("://") if isinstance(value, str) else ("", "", "")
        if scheme not in ("http", "https") or not _REGISTRY_HOST.match(rest.rstrip("/")):
            problems.append(f"{prefix}registry_mirrors[{i}]: {value!r} is not http(s)://host[:port]")


# --- loading and saving ------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"], source=str(path)) from None


def atomic_write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    """Write via a temp file in the same directory, fsync, rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode() if isinstance(text, str) else text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dump_toml(data: dict[str, Any]) -> str:
    import tomli_w  # only writers pay for it

    return tomli_w.dumps(data)


def global_defaults(host: HostFacts) -> dict[str, Any]:
    return {**asdict(GlobalConfig()), **host_defaults(host)}


def load_global(host: HostFacts | None = None) -> GlobalConfig:
    """config.toml with host-fitted defaults filled in, validated."""
    host = host or HostFacts.probe()
    path = global_config_file()
    data = {**global_defaults(host), **read_toml(path)}
    problems = validate_global(data, host)
    if problems:
        raise ConfigError(problems, source=str(path))
    return GlobalConfig(**data)


def set_global(key: str, raw: str, host: HostFacts | None = None) -> GlobalConfig:
    """`toolbox config set KEY VALUE`: parse VALUE by the key's type, validate, save."""
    host = host or HostFacts.probe()
    path = global_config_file()
    stored = read_toml(path)
    known = {f.name: f for f in fields(GlobalConfig)}
    if key not in known:
        raise ConfigError([f"{key}: unknown setting (known: {', '.join(known)})"], source="setting", hint=f"{path} is unchanged")
    value: Any = raw
    if key == "mounts":  # "~,/data:/data:ro": comma-separated; "" shares nothing by default
        value = [entry.strip() for entry in raw.split(",") if entry.strip()]
    elif known[key].type in ("int", int):
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError([f"{key}: expected a whole number, got {raw!r}"], source="setting", hint=f"{path} is unchanged") from None
    stored[key] = value
    problems = validate_global({**global_defaults(host), **stored}, host)
    if problems:
        raise ConfigError(problems, source="setting", hint=f"{path} is unchanged")
    atomic_write(path, _dump_toml(stored))
    return load_global(host)


def load_instance(path: Path, host: HostFacts | None = None) -> InstanceConfig:
    """instance.toml, validated; every problem listed with its field path."""
    host = host or HostFacts.probe()
    data = read_toml(path)
    problems = validate_instance(data, host)
    if problems:
        raise ConfigError(problems, source=str(path))
    image = ImageRef(**{k: v for k, v in data["image"].items() if k in {f.name for f in fields(ImageRef)}})
    mounts = [MountConfig(**m) for m in data.get("mounts", [])]
    rest = {k: v for k, v in data.items() if k not in ("image", "mounts")}
    return InstanceConfig(image=image, mounts=mounts, **rest)


def save_instance(path: Path, cfg: InstanceConfig) -> None:
    data = asdict(cfg)
    if not data["mounts"]:
        del data["mounts"]  # TOML has no empty array of tables worth writing
    atomic_write(path, _dump_toml(data), mode=0o600)


_SIZE_UNITS: dict[str, float] = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def parse_size_mib(text: str, default_unit: str) -> int:
    """"2048", "2G", "2GiB", "512M" → MiB; a bare number is in `default_unit` ("m"/"g")."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise ConfigError([f"{text!r} is not a size (examples: 2048, 512M, 4G)"], source="options")
    unit = match.group(2) or default_unit
    return int(float(match.group(1)) * _SIZE_UNITS[unit])
