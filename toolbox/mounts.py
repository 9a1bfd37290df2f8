"""Shared folders as the user writes them: parsing, the defaults, and the checks.

A mount is written `HOST[:GUEST][:ro|rw]` (on the command line, and in config.toml's
`mounts` list); GUEST defaults to HOST, so a path printed in the guest is the host's
path and `docker run -v "$PWD":/src` works from any folder under a share. By default
the user's home directory is shared read-write (config.toml `mounts = ["~"]`), as
Docker Desktop and Colima do. Pure: no I/O beyond looking at the host path.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from toolbox.errors import ConfigError

DEFAULT_MOUNTS = ("~",)  # config.toml's `mounts` when it says nothing

# Guest paths a share must not cover: the guest's own system, its data disk and the
# login user's home (a share over it would hide ~/.ssh/authorized_keys).
RESERVED_GUEST_PATHS = (
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys",
    "/usr", "/var", "/home/toolbox",
)  # fmt: skip


@dataclass
class MountConfig:
    host_path: str
    guest_path: str
    writable: bool = True

    def render(self) -> str:
        """Back to the `HOST[:GUEST][:ro]` form the user writes."""
        guest = "" if self.guest_path == self.host_path else f":{self.guest_path}"
        return f"{self.host_path}{guest}{'' if self.writable else ':ro'}"


def split_mount(text: str) -> tuple[str, str | None, bool]:
    """`HOST[:GUEST][:ro|rw]` → (host, guest or None, writable), syntax only."""
    parts = text.split(":")
    writable = True
    if len(parts) > 1 and parts[-1] in ("ro", "rw"):
        writable = parts.pop() == "rw"
    if not 1 <= len(parts) <= 2 or not parts[0] or (len(parts) == 2 and not parts[1]):
        raise ValueError("use HOST[:GUEST][:ro]")
    return parts[0], parts[1] if len(parts) == 2 else None, writable


def parse_mount(text: str, where: str = "--mount") -> MountConfig:
    """`HOST[:GUEST][:ro]` → MountConfig; `~` is the user's home, a relative HOST is
    taken from the current directory. The host path must be a directory."""
    try:
        host_text, guest, writable = split_mount(text)
    except ValueError as exc:
        raise ConfigError([f"{where} {text!r}: {exc}"], source="options") from None
    host = Path(host_text).expanduser().absolute()
    mount = MountConfig(str(host), guest if guest is not None else str(host), writable)
    problems = [f"{where} {text!r}: {p}" for p in mount_problems(mount)]
    if not host.is_dir():
        problems.append(f"{where} {text!r}: {host} is not a directory")
    if problems:
        raise ConfigError(problems, source="options")
    return mount


def mount_problems(mount: MountConfig) -> list[str]:
    """What is wrong with one mount's paths (the host directory's existence aside)."""
    problems = []
    for side, path in (("host", mount.host_path), ("guest", mount.guest_path)):
        if not path.startswith("/") or any(c.isspace() for c in path):
            problems.append(f"the {side} path {path!r} must be absolute, without spaces")
    guest = posixpath.normpath(mount.guest_path) if mount.guest_path.startswith("/") else ""
    if guest and any(guest == r or (r != "/" and guest.startswith(r + "/")) for r in RESERVED_GUEST_PATHS):
        problems.append(f"the guest path {guest} is part of the guest's own system; choose another with HOST:GUEST")
    return problems


def syntax_problems(prefix: str, entries: object) -> list[str]:
    """config.toml's `mounts`: a list of `HOST[:GUEST][:ro]` strings (checked by shape;
    the host folders are looked at when an instance is made)."""
    if not isinstance(entries, list):
        return [f"{prefix}mounts: expected a list of HOST[:GUEST][:ro] strings, got {entries!r}"]
    problems = []
    for i, entry in enumerate(entries):
        try:
            if not isinstance(entry, str):
                raise ValueError(f"expected a HOST[:GUEST][:ro] string, got {entry!r}")
            split_mount(entry)
        except ValueError as exc:
            problems.append(f"{prefix}mounts[{i}]: {exc}")
    return problems


def merge(defaults: Iterable[MountConfig], given: Iterable[MountConfig]) -> list[MountConfig]:
    """The defaults, then the user's; a given mount at a default's guest path replaces it
    (`--mount ~:ro` makes the home share read-only). Parents come before the folders
    inside them, so the guest mounts them in that order."""
    given = list(given)
    taken = {posixpath.normpath(m.guest_path) for m in given}
    kept = [m for m in defaults if posixpath.normpath(m.guest_path) not in taken]
    # Two given mounts at one guest path stay, for list_problems to report.
    return sorted([*kept, *given], key=lambda m: posixpath.normpath(m.guest_path).count("/"))


def list_problems(prefix: str, mounts: list[MountConfig]) -> list[str]:
    """Every mount's path problems, and guest paths used twice."""
    problems = []
    seen: set[str] = set()
    for i, mount in enumerate(mounts):
        problems += [f"{prefix}mounts[{i}]: {p}" for p in mount_problems(mount)]
        guest = posixpath.normpath(mount.guest_path)
        if guest in seen:
            problems.append(f"{prefix}mounts[{i}]: the guest path {guest} is used twice")
        seen.add(guest)
    return problems


def parse_mounts(texts: Iterable[str], where: str = "--mount") -> list[MountConfig]:
    """Several mounts, every problem of every one reported at once."""
    mounts, problems = [], []
    for text in texts:
        try:
            mounts.append(parse_mount(text, where))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems, source="options")
    return mounts


def parse_list(text: str, where: str) -> list[MountConfig]:
    """A comma-separated list of mounts (`toolbox config set mounts "~,/data:ro"`);
    an empty text is no mounts."""
    mounts = parse_mounts((entry.strip() for entry in text.split(",") if entry.strip()), where)
    problems = list_problems("", mounts)
    if problems:
        raise ConfigError(problems, source="options")
    return mounts
