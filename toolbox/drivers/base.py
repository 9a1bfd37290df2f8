"""The Driver protocol: what every hypervisor backend (qemu, libvirt, virtualbox) does.

Drivers only create, boot, stop and delete VMs and report their state. Everything else
(downloading images, making keys, writing the config drive, waiting for SSH, the host
agent) is shared code above them, in toolbox.instance. Optional abilities are separate
protocols (Suspendable); what a driver can do is declared as data (DriverFeatures), not
probed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable


@dataclass(frozen=True)
class DriverFeatures:
    direct_kernel_boot: bool  # can boot the image's kernel+initrd without firmware
    suspend: bool  # implements Suspendable
    share_type: str  # how host folders reach the guest: "9p" or "vboxsf"
    disk_format: str  # data disk format: "qcow2" or "vdi"


@dataclass(frozen=True)
class Mount:
    """A host directory shared into the guest at guest_path."""

    host_path: Path
    guest_path: Path
    writable: bool = True

    @property
    def tag(self) -> str:
        """A short stable name for the share (9p mount_tag / vboxsf share name); one host
        folder may be shared at two guest paths, so both name it."""
        import hashlib

        key = f"{self.host_path}\0{self.guest_path}"
        return "tb" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class VMSpec:
    """Everything a driver needs to create and boot one VM. Built by toolbox.instance."""

    name: str  # the instance name; drivers prefix it ("toolbox-<name>") where names are global
    instance_dir: Path  # the instance's directory (see toolbox.paths.InstancePaths)
    arch: str  # "x86_64" or "aarch64"
    cpus: int
    memory_mib: int
    disk_size_gib: int
    iso: Path  # the boot image (hybrid BIOS/UEFI ISO holding the squashfs root)
    kernel: Path | None  # vmlinuz extracted from the ISO (for direct kernel boot)
    initrd: Path | None  # initrd extracted from the ISO
    kernel_cmdline: str  # for direct kernel boot
    cidata: Path  # the config drive ISO
    data_disk: Path  # the data disk (format per DriverFeatures.disk_format)
    ssh_port: int  # host port on 127.0.0.1 forwarded to the guest's port 22
    accel: str  # "hvf", "kvm" or "tcg" (libvirt maps tcg to domain type "qemu")
    serial_log: Path
    mounts: tuple[Mount, ...] = field(default_factory=tuple)


class VMState(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    BROKEN = "broken"
    MISSING = "missing"  # the hypervisor has no such VM (never created, or removed)


@dataclass(frozen=True)
class VMStatus:
    state: VMState
    reasons: tuple[str, ...] = ()  # why BROKEN, or other facts worth telling ("pid file stale")


@runtime_checkable
class Driver(Protocol):
    """A hypervisor backend. Contracts:

    - check_installed MUST raise ToolMissing (naming the install command for this
      platform) when the hypervisor's tools are absent, and do nothing else.
    - create MUST create the data disk (spec.data_disk, spec.disk_size_gib) and whatever
      VM definition the hypervisor keeps; on failure it MUST remove what it made.
      Creating an existing VM is DriverError.
    - reconfigure MUST update a stopped VM's definition to spec (new ISO on upgrade,
      cpus/memory changed); the data disk is never touched.
    - start MUST be idempotent: starting a running VM does nothing. It returns once the
      hypervisor runs the VM; waiting for the guest is not its job.
    - stop asks the guest to power off (ACPI/QMP) and waits up to `timeout` seconds;
      with force, or when the time runs out, it pulls the plug. Stopping a stopped VM
      does nothing.
    - delete MUST remove every trace the hypervisor keeps (definition, disks it made);
      the instance directory itself is removed by the caller. Deleting a missing VM does
      nothing.
    - status derives the state from what the hypervisor says, never from stored state.
    - ssh_address is (host, port) where the guest's sshd is reached from the host.
    """

    name: ClassVar[str]
    features: ClassVar[DriverFeatures]

    def check_installed(self) -> None: ...

    def create(self, spec: VMSpec) -> None: ...

    def reconfigure(self, spec: VMSpec) -> None: ...

    def start(self, spec: VMSpec) -> None: ...

    def stop(self, spec: VMSpec, *, force: bool = False, timeout: float = 30.0) -> None: ...

    def delete(self, spec: VMSpec) -> None: ...

    def status(self, spec: VMSpec) -> VMStatus: ...

    def ssh_address(self, spec: VMSpec) -> tuple[str, int]: ...


@runtime_checkable
class Suspendable(Protocol):
    """Drivers that can save a running VM's memory to disk and resume it."""

    def suspend(self, spec: VMSpec) -> None: ...

    def resume(self, spec: VMSpec) -> None: ...


@runtime_checkable
class Resettable(Protocol):
    """Drivers that can hard-reset a running VM (like pressing the reset button)."""

    def reset(self, spec: VMSpec) -> None: ...
