"""The QEMU command line for a VMSpec: pure, no I/O, so a test can assert it exactly.

Layout of the VM (the same on x86_64 and aarch64, so the guest needs one set of drivers):

    virtio-scsi  ── scsi-cd  the boot ISO (label TOOLBOX, holds the squashfs root)
                 └─ scsi-cd  the config drive (label cidata)
    virtio-blk   ── the qcow2 data disk
    virtio-net   ── user-mode network, 127.0.0.1:<ssh_port> → guest :22
    virtio-rng   ── entropy, so sshd does not wait on the guest's crng at boot
    virtio-9p    ── one per shared host folder
    ttyS0 / ttyAMA0 → serial.log; QMP on qmp.sock; daemonized with qemu.pid

`-nodefaults` drops QEMU's default VGA, NIC, floppy and cdrom: everything the guest sees
is listed here.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from toolbox.accel import qemu_binary
from toolbox.drivers.base import Mount, VMSpec
from toolbox.errors import DriverError
from toolbox.paths import InstancePaths


def instance_paths(spec: VMSpec) -> InstancePaths:
    """The instance's files, rooted at spec.instance_dir (not re-derived from $TOOLBOX_HOME)."""
    return InstancePaths(spec.name, spec.instance_dir)


def saved_state_file(spec: VMSpec) -> Path:
    """Where suspend writes the VM's memory and device state (QEMU migration stream)."""
    return spec.instance_dir / "saved.state"


def saved_accel_file(spec: VMSpec) -> Path:
    """The accelerator the saved VM ran under: a restore must rebuild the same CPU model."""
    return spec.instance_dir / "saved.accel"


def build_argv(spec: VMSpec, *, firmware: Path | None = None, incoming: Path | None = None) -> list[str]:
    """The full argv that boots `spec` as a daemonized QEMU.

    `firmware` is the UEFI code image, needed only on aarch64 without direct kernel boot
    (x86_64 boots the hybrid ISO with QEMU's built-in SeaBIOS). `incoming` is a saved
    state file to resume from instead of booting.
    """
    files = instance_paths(spec)
    return [
        qemu_binary(spec.arch),
        "-name", f"toolbox-{spec.name}",
        *machine_args(spec),
        "-smp", str(spec.cpus),
        "-m", str(spec.memory_mib),
        "-nodefaults",
        "-display", "none",
        *boot_args(spec, firmware),
        *disk_args(spec),
        *network_args(spec),
        "-device", "virtio-rng-pci",
        *share_args(spec.mounts),
        # append=on: a restored VM continues the log of its boot (the driver empties it
        # before a fresh boot, so the file always holds the current boot only).
        "-chardev", f"file,id=serial0,path={_esc(spec.serial_log)},append=on",
        "-serial", "chardev:serial0",
        "-qmp", f"unix:{_esc(files.qmp_socket)},server=on,wait=off",
        "-pidfile", str(files.qemu_pid),
        *(["-incoming", f"exec:cat {shlex.quote(str(incoming))}"] if incoming else []),
        "-daemonize",
    ]  # fmt: skip


def machine_args(spec: VMSpec) -> list[str]:
    """Machine type, accelerator and CPU model for the guest arch and accelerator."""
    hardware = spec.accel in ("hvf", "kvm")
    if spec.arch == "x86_64":
        # Under TCG "max" is every feature QEMU can emulate; "host" needs a real CPU.
        cpu = "host" if hardware else "max"
        return ["-machine", "q35", "-accel", _accel(spec.accel), "-cpu", cpu]
    if spec.arch == "aarch64":
        # KVM must use the host's own interrupt controller (GICv3-only hosts have no v2);
        # hvf and TCG keep the board default. Under TCG, cortex-a72 rather than "max":
        # max's emulated pointer authentication makes TCG several times slower.
        machine = "virt,gic-version=host" if spec.accel == "kvm" else "virt"
        cpu = "host" if hardware else "cortex-a72"
        return ["-machine", machine, "-accel", _accel(spec.accel), "-cpu", cpu]
    raise DriverError("qemu", f"unsupported guest architecture {spec.arch!r}", hint="use x86_64 or aarch64")


def _accel(accel: str) -> str:
    # Multi-threaded TCG: one host thread per vCPU instead of one for all.
    return "tcg,thread=multi" if accel == "tcg" else accel


def boot_args(spec: VMSpec, firmware: Path | None) -> list[str]:
    """Direct kernel boot when the spec has a kernel; else firmware boots the ISO."""
    if spec.kernel is not None:
        args = ["-kernel", str(spec.kernel)]
        if spec.initrd is not None:
            args += ["-initrd", str(spec.initrd)]
        return args + ["-append", spec.kernel_cmdline]
    if spec.arch == "aarch64":
        if firmware is None:
            raise DriverError(
                "qemu",
                "no UEFI firmware for aarch64 guests was found",
                hint="install QEMU's firmware (brew install qemu; apt-get install qemu-efi-aarch64)",
            )
        return ["-drive", f"if=pflash,format=raw,readonly=on,file={_esc(firmware)}"]
    return []  # x86_64: SeaBIOS boots the hybrid ISO from the first cdrom (bootindex=0)


def disk_args(spec: VMSpec) -> list[str]:
    """The ISO and the config drive as read-only SCSI cdroms; the data disk on virtio-blk."""
    # Firmware boots the ISO first; with -kernel, QEMU's own loader takes boot index 0.
    boot = ",bootindex=0" if spec.kernel is None else ""
    return [
        "-device", "virtio-scsi-pci,id=scsi0",
        "-drive", f"if=none,id=iso,file={_esc(spec.iso)},format=raw,media=cdrom,readonly=on",
        "-device", f"scsi-cd,bus=scsi0.0,drive=iso{boot}",
        "-drive", f"if=none,id=cidata,file={_esc(spec.cidata)},format=raw,media=cdrom,readonly=on",
        "-device", "scsi-cd,bus=scsi0.0,drive=cidata",
        # discard=unmap: the guest's fstrim gives freed blocks back to the host file.
        "-drive", f"if=none,id=data,file={_esc(spec.data_disk)},format=qcow2,discard=unmap",
        "-device", "virtio-blk-pci,drive=data",
    ]  # fmt: skip


def network_args(spec: VMSpec) -> list[str]:
    """User-mode network; only 127.0.0.1 on the host can reach the guest's sshd."""
    return [
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
    ]  # fmt: skip


def share_args(mounts: tuple[Mount, ...]) -> list[str]:
    """One virtio-9p device per mount, tagged with Mount.tag.

    security_model=none: QEMU reads and writes the host files as the user running QEMU,
    with their real modes. It does try to give a new file the guest user's ids, but as an
    ordinary user (QEMU on a Mac) that fails and the failure is ignored, so a file the
    guest creates is simply the user's own file. mapped-xattr would instead keep guest
    owners and modes in extended attributes, leaving files that look wrong to host tools;
    passthrough would fail the guest's write whenever the chown fails.
    """
    args: list[str] = []
    for index, mount in enumerate(mounts):
        fsdev = f"local,id=fs{index},path={_esc(mount.host_path)},security_model=none"
        if not mount.writable:
            fsdev += ",readonly=on"
        args += ["-fsdev", fsdev, "-device", f"virtio-9p-pci,fsdev=fs{index},mount_tag={mount.tag}"]
    return args


def _esc(path: Path | str) -> str:
    # QEMU's key=value option syntax reads "," as a separator; ",," is a literal comma.
    return str(path).replace(",", ",,")
