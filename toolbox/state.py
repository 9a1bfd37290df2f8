"""What an instance is doing, derived (never stored): status, info, list, ip.

Status comes from the driver (pid files, QMP, the hypervisor) plus whether the guest's
sshd answers on its forwarded port. This module is on `toolbox status`'s path, which has
to start in well under 150 ms, so it imports nothing heavy: no paramiko, requests,
pycdlib or cryptography (the SSH check reads the banner with a plain socket).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolbox import config as cfgmod
from toolbox.config import HostFacts, InstanceConfig
from toolbox.drivers import get_driver
from toolbox.drivers.base import Driver, Mount, VMSpec, VMState, VMStatus
from toolbox.errors import ConfigError, InstanceNotFound, ToolboxError
from toolbox.paths import InstancePaths, toolbox_home

BANNER_TIMEOUT = 0.1
PANIC_MARK = b"Kernel panic - not syncing"
# The guest kernel's watchdog: "watchdog: BUG: soft lockup - CPU#1 stuck for 74s! [sshd:214]".
# Under TCG on a busy host a vCPU starved for a while can draw one short report and recover;
# a CPU stuck for a minute or more has not (seen: CPU 0 idle, its timer never fired, CPU 1
# spinning, the reports growing every ~30 s until the VM was switched off).
LOCKUP_RE = re.compile(rb"soft lockup - CPU#\d+ stuck for (\d+)s!.*")
HUNG_AFTER_S = 60


def _console_tail(serial_log: Path, since: int) -> bytes:
    """The console's last 16 KiB, none of it before `since`."""
    try:
        size = serial_log.stat().st_size
        since = since if size >= since else 0  # the log was truncated by a new boot
        with serial_log.open("rb") as fh:
            fh.seek(max(since, size - 16384))
            return fh.read()
    except OSError:
        return b""


def guest_panicked(serial_log: Path, since: int = 0) -> str | None:
    """The panic line when the console's last 16 KiB show a kernel panic, else None.

    QEMU keeps running after a guest panic, so the driver says "running"; the console
    is the only place that says the guest is dead. `since`: ignore bytes before this
    offset (what an earlier boot wrote, when a driver appends to the log).
    """
    tail = _console_tail(serial_log, since)
    at = tail.rfind(PANIC_MARK)
    if at < 0:
        return None
    return tail[at:].split(b"\n", 1)[0].decode("utf-8", "replace").strip(" -]\r")


def guest_hung(serial_log: Path, since: int = 0) -> str | None:
    """The watchdog's line when the console shows a CPU stuck for HUNG_AFTER_S or more,
    else None (`since` as for guest_panicked)."""
    tail = _console_tail(serial_log, since)
    for match in reversed(list(LOCKUP_RE.finditer(tail))):
        if int(match.group(1)) >= HUNG_AFTER_S:
            return match.group(0).decode("utf-8", "replace").strip()
    return None


def require(name: str) -> InstancePaths:
    """The instance's paths; InstanceNotFound when it was never made."""
    paths = InstancePaths.for_name(name)
    if not paths.root.is_dir():
        raise InstanceNotFound(name)
    return paths


def load(name: str) -> tuple[InstancePaths, InstanceConfig]:
    paths = require(name)
    if not paths.config.exists():
        raise ConfigError([f"{paths.config} is missing (an init that never finished?)"],
                          source=f"instance {name!r}")
    return paths, cfgmod.load_instance(paths.config, HostFacts.probe())


def spec_for(cfg: InstanceConfig, paths: InstancePaths, driver: Driver, accel: str | None = None) -> VMSpec:
    """The VMSpec for this instance. `accel` matters only when booting; other operations
    get the configured one (or "tcg" when it is "auto") so they never run the probe."""
    img = cfg.image
    return VMSpec(
        name=cfg.name, instance_dir=paths.root, arch=img.arch, cpus=cfg.cpus,
        memory_mib=cfg.memory_mib, disk_size_gib=cfg.disk_size_gib, iso=Path(img.iso),
        kernel=Path(img.kernel) if img.kernel else None, initrd=Path(img.initrd) if img.initrd else None,
        kernel_cmdline=img.cmdline, cidata=paths.cidata,
        data_disk=paths.data_disk(driver.features.disk_format), ssh_port=cfg.ssh_port,
        accel=accel or (cfg.accel if cfg.accel != "auto" else "tcg"), serial_log=paths.serial_log,
        mounts=tuple(Mount(Path(m.host_path), Path(m.guest_path), m.writable) for m in cfg.mounts),
    )


def vm_status(driver: Driver, spec: VMSpec) -> VMStatus:
    return driver.status(spec)


def ssh_answers(port: int, timeout: float = BANNER_TIMEOUT) -> bool:
    """False when nothing in the guest listens on the forwarded SSH port.

    QEMU's user network accepts on the host side at once and only then tries the guest:
    a guest without a listener answers with a reset (fast, even under TCG) and QEMU
    closes our socket; a listening sshd sends "SSH-...". Under TCG sshd can take longer
    than we want to wait for that banner, so silence until the timeout counts as
    listening: status must stay fast.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except socket.timeout:
        return True
    except OSError:
        return False


@dataclass
class InstanceStatus:
    name: str
    state: str  # "running", "starting", "stopped", "suspended", "broken"
    reasons: list[str] = field(default_factory=list)
    driver: str = ""
    ssh_port: int = 0

    def render(self) -> str:
        """The state, then each reason indented on its own line."""
        return self.state + "".join(f"\n  {r}" for r in self.reasons)


def status(name: str) -> InstanceStatus:
    """Running / Stopped / Suspended / Broken, with the reasons."""
    paths = require(name)
    try:
        _, cfg = load(name)
    except ConfigError as exc:
        return InstanceStatus(name, "broken", exc.problems)
    driver = get_driver(cfg.driver)
    try:
        vm = driver.status(spec_for(cfg, paths, driver))
    except ToolboxError as exc:
        return InstanceStatus(name, "broken", [exc.message], cfg.driver, cfg.ssh_port)
    reasons = list(vm.reasons)
    state = vm.state.value
    if vm.state is VMState.MISSING:
        state, reasons = "broken", [f"the {cfg.driver} hypervisor has no VM for it", *reasons]
    elif vm.state is VMState.RUNNING and (panic := guest_panicked(paths.serial_log)):
        state, reasons = "broken", [f"the guest kernel panicked ({panic}); see: toolbox logs", *reasons]
    elif vm.state is VMState.RUNNING and (hung := guest_hung(paths.serial_log)):
        state, reasons = "broken", [f"the guest kernel hung ({hung}); restart it: toolbox restart", *reasons]
    elif vm.state is VMState.RUNNING and host_agent_serving(paths):
        from toolbox.hostagent.report import problems

        reasons += problems(paths.hostagent_state)  # ports taken on the host, a link reconnecting
    elif vm.state is VMState.RUNNING and not host_agent_serving(paths):
        if not ssh_answers(cfg.ssh_port):
            state = "starting"
            reasons.append(f"SSH is not answering on 127.0.0.1:{cfg.ssh_port} yet")
        else:
            reasons.append(f"docker.sock is not served (no host agent); start it with: toolbox up -n {name}")
    return InstanceStatus(name, state, reasons, cfg.driver, cfg.ssh_port)


def host_agent_serving(paths: InstancePaths) -> bool:
    """The host agent runs and its socket exists. `up` starts it only after the guest
    agent answered, and it exits by itself once the guest's SSH port refuses (its
    watchdog), so while it serves, the guest is up: no need to wait for sshd's banner,
    which under TCG costs status most of its time budget."""
    from toolbox.hostagent import read_pid

    return read_pid(paths.hostagent_pid) is not None and paths.docker_socket.exists()


def info(name: str) -> dict[str, Any]:
    """Everything worth knowing about the instance (for `info` and `info --json`)."""
    paths, cfg = load(name)
    st = status(name)
    return {
        "name": name,
        "state": st.state,
        "reasons": st.reasons,
        "driver": cfg.driver,
        "cpus": cfg.cpus,
        "memory_mib": cfg.memory_mib,
        "disk_size_gib": cfg.disk_size_gib,
        "accel": _accel_in_use(paths, cfg, st.state),
        "accel_setting": cfg.accel,
        "image": {"version": cfg.image.version, "sha256": cfg.image.sha256, "source": cfg.image.source,
                  "arch": cfg.image.arch},
        "ssh": {"host": "127.0.0.1", "port": cfg.ssh_port, "user": "toolbox", "identity_file": str(paths.ssh_key)},
        "docker_host": f"unix://{paths.docker_socket}",
        "mounts": [{"host": m.host_path, "guest": m.guest_path, "writable": m.writable} for m in cfg.mounts],
        "dir": str(paths.root),
        "created": cfg.created,
    }


def _accel_in_use(paths: InstancePaths, cfg: InstanceConfig, state: str) -> str:
    """The accelerator the running VM was booted with; when stopped, the one the next
    boot takes ("auto" resolved from the probe's cache, never by probing here)."""
    if state in ("running", "starting", "suspended"):
        try:
            return paths.booted_accel.read_text().strip() or cfg.accel
        except OSError:
            pass
    if cfg.accel != "auto":
        return cfg.accel
    from toolbox.accel import known_accel

    return known_accel(cfg.image.arch) or "auto (probed at the next up)"


def ip(name: str) -> str:
    """The address that reaches the VM: its ports are forwarded to the host's loopback."""
    load(name)
    return "127.0.0.1"


def names() -> list[str]:
    home = toolbox_home()
    if not home.is_dir():
        return []
    found = []
    for entry in sorted(os.listdir(home)):
        if entry != "cache" and (home / entry).is_dir() and (home / entry / "instance.toml").exists():
            found.append(entry)
    return found


def list_instances() -> list[InstanceStatus]:
    out = []
    for name in names():
        try:
            out.append(status(name))
        except ToolboxError as exc:
            out.append(InstanceStatus(name, "broken", [exc.message]))
    return out


def images_in_use() -> dict[str, list[str]]:
    """sha256 of each cached image an instance boots -> the instances' names. An instance
    whose config cannot be read stops the answer (ConfigError): pruning must not guess."""
    used: dict[str, list[str]] = {}
    for name in names():
        _, cfg = load(name)
        used.setdefault(cfg.image.sha256, []).append(name)
    return used
