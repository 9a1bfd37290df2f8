"""Where toolbox keeps things: the one module that names every file it writes.

    $TOOLBOX_HOME (default ~/.toolbox)/
        config.toml               global defaults (cpus, memory, driver, image URL ...)
        accel.json                what the accelerator probe found, so it runs once
        cache/<sha256>/           downloaded images, keyed by their sha256
        <name>/                   one instance (see InstancePaths)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from toolbox.errors import UsageError

# macOS limits a unix socket path (sun_path) to 104 bytes, Linux to 108; keep to the lower.
MAX_SOCKET_PATH = 104

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


def toolbox_home() -> Path:
    """The root of toolbox's state: $TOOLBOX_HOME, or ~/.toolbox."""
    env = os.environ.get("TOOLBOX_HOME")
    return Path(env).expanduser().absolute() if env else Path.home() / ".toolbox"


def global_config_file() -> Path:
    return toolbox_home() / "config.toml"


def accel_cache_file() -> Path:
    return toolbox_home() / "accel.json"


def cache_dir() -> Path:
    return toolbox_home() / "cache"


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f"invalid instance name {name!r}: use 1-31 lowercase letters, digits and dashes, starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class InstancePaths:
    """The files of one instance, each with what it holds."""

    name: str
    root: Path

    @classmethod
    def for_name(cls, name: str) -> InstancePaths:
        return cls(validate_name(name), toolbox_home() / name)

    @property
    def config(self) -> Path:  # instance.toml: the versioned instance config
        return self.root / "instance.toml"

    @property
    def lock(self) -> Path:  # held (flock) by any command that changes the instance
        return self.root / "lock"

    @property
    def ssh_key(self) -> Path:  # the login key toolbox uses (ed25519, OpenSSH format, 0600)
        return self.root / "id_ed25519"

    @property
    def ssh_pubkey(self) -> Path:  # its public half, written to the config drive
        return self.root / "id_ed25519.pub"

    @property
    def host_pubkey(self) -> Path:  # the guest's host key, pinned: any other is refused
        return self.root / "ssh_host_ed25519_key.pub"

    @property
    def cidata(self) -> Path:  # the config drive (ISO9660, volume label "cidata")
        return self.root / "cidata.iso"

    def data_disk(self, fmt: str = "qcow2") -> Path:  # the persistent data disk
        return self.root / f"disk.{fmt}"

    @property
    def serial_log(self) -> Path:  # the guest's serial console (ttyS0)
        return self.root / "serial.log"

    @property
    def booted_accel(self) -> Path:  # the accelerator of the last boot (hvf, kvm or tcg)
        return self.root / "accel"

    @property
    def qemu_pid(self) -> Path:  # qemu driver: the daemonized QEMU's pid
        return self.root / "qemu.pid"

    @property
    def qmp_socket(self) -> Path:  # qemu driver: QMP control socket
        return self.root / "qmp.sock"

    @property
    def qemu_log(self) -> Path:  # qemu driver: QEMU's own stderr
        return self.root / "qemu.log"

    @property
    def hostagent_pid(self) -> Path:  # the host agent process
        return self.root / "hostagent.pid"

    @property
    def hostagent_log(self) -> Path:  # what the host agent did: reconnects, ports, clock steps
        return self.root / "hostagent.log"

    @property
    def hostagent_state(self) -> Path:  # the running host agent's report: link, forwarded ports and their problems, clock
        return self.root / "hostagent.json"

    @property
    def docker_socket(self) -> Path:  # DOCKER_HOST points here (0600)
        return self.root / "docker.sock"

    def check_socket_path(self, path: Path) -> Path:
        """Refuse a socket path too long for the platform, with a way out."""
        if len(os.fsencode(path)) >= MAX_SOCKET_PATH:
            raise UsageError(
                f"socket path {path} is longer than {MAX_SOCKET_PATH - 1} bytes",
                hint="set TOOLBOX_HOME to a shorter directory",
            )
        return path
