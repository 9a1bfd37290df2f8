"""The exact QEMU argv for each arch and accelerator (toolbox.drivers.qemu.command)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from toolbox.drivers.base import Mount, VMSpec
from toolbox.drivers.qemu.command import build_argv
from toolbox.errors import DriverError

D = Path("/home/u/.toolbox/default")
FW = Path("/opt/homebrew/share/qemu/edk2-aarch64-code.fd")


def spec(arch: str, accel: str, *, kernel: bool = True, mounts: tuple[Mount, ...] = ()) -> VMSpec:
    return VMSpec(
        name="default",
        instance_dir=D,
        arch=arch,
        cpus=2,
        memory_mib=2048,
        disk_size_gib=20,
        iso=Path("/cache/ab/toolbox.iso"),
        kernel=Path("/cache/ab/vmlinuz") if kernel else None,
        initrd=Path("/cache/ab/initrd") if kernel else None,
        kernel_cmdline="console=ttyS0 quiet",
        cidata=D / "cidata.iso",
        data_disk=D / "disk.qcow2",
        ssh_port=60022,
        accel=accel,
        serial_log=D / "serial.log",
        mounts=mounts,
    )


KERNEL = ["-kernel", "/cache/ab/vmlinuz", "-initrd", "/cache/ab/initrd", "-append", "console=ttyS0 quiet"]

def devices(kernel: bool) -> list[str]:
    boot = "" if kernel else ",bootindex=0"  # -kernel's loader owns boot index 0
    return [
        "-device", "virtio-scsi-pci,id=scsi0",
        "-drive", "if=none,id=iso,file=/cache/ab/toolbox.iso,format=raw,media=cdrom,readonly=on",
        "-device", f"scsi-cd,bus=scsi0.0,drive=iso{boot}",
        "-drive", f"if=none,id=cidata,file={D}/cidata.iso,format=raw,media=cdrom,readonly=on",
        "-device", "scsi-cd,bus=scsi0.0,drive=cidata",
        "-drive", f"if=none,id=data,file={D}/disk.qcow2,format=qcow2,discard=unmap",
        "-device", "virtio-blk-pci,drive=data",
        "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:60022-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip


CONTROL = [
    "-chardev", f"file,id=serial0,path={D}/serial.log,append=on",
    "-serial", "chardev:serial0",
    "-qmp", f"unix:{D}/qmp.sock,server=on,wait=off",
    "-pidfile", f"{D}/qemu.pid",
    "-daemonize",
]  # fmt: skip


def expected(binary: str, machine: list[str], boot: list[str], shares: list[str] = []) -> list[str]:  # noqa: B006
    return [
        binary, "-name", "toolbox-default", *machine,
        "-smp", "2", "-m", "2048", "-nodefaults", "-display", "none",
        *boot, *devices(kernel=boot == KERNEL), *shares, *CONTROL,
    ]  # fmt: skip


X86 = "qemu-system-x86_64"
ARM = "qemu-system-aarch64"


@pytest.mark.parametrize(
    ("accel", "machine"),
    [
        ("hvf", ["-machine", "q35", "-accel", "hvf", "-cpu", "host"]),
        ("kvm", ["-machine", "q35", "-accel", "kvm", "-cpu", "host"]),
        ("tcg", ["-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max"]),
    ],
)
def test_x86_64_direct_kernel_boot(accel: str, machine: list[str]) -> None:
    assert build_argv(spec("x86_64", accel)) == expected(X86, machine, KERNEL)


def test_x86_64_firmware_boot_needs_no_firmware_file() -> None:
    machine = ["-machine", "q35", "-accel", "kvm", "-cpu", "host"]
    assert build_argv(spec("x86_64", "kvm", kernel=False)) == expected(X86, machine, [])


@pytest.mark.parametrize(
    ("accel", "machine"),
    [
        ("hvf", ["-machine", "virt", "-accel", "hvf", "-cpu", "host"]),
        ("kvm", ["-machine", "virt,gic-version=host", "-accel", "kvm", "-cpu", "host"]),
        ("tcg", ["-machine", "virt", "-accel", "tcg,thread=multi", "-cpu", "cortex-a72"]),
    ],
)
def test_aarch64_direct_kernel_boot(accel: str, machine: list[str]) -> None:
    assert build_argv(spec("aarch64", accel), firmware=FW) == expected(ARM, machine, KERNEL)


@pytest.mark.parametrize(
    ("accel", "machine"),
    [
        ("hvf", ["-machine", "virt", "-accel", "hvf", "-cpu", "host"]),
        ("tcg", ["-machine", "virt", "-accel", "tcg,thread=multi", "-cpu", "cortex-a72"]),
    ],
)
def test_aarch64_uefi_boot(accel: str, machine: list[str]) -> None:
    argv = build_argv(spec("aarch64", accel, kernel=False), firmware=FW)
    pflash = ["-drive", f"if=pflash,format=raw,readonly=on,file={FW}"]
    assert argv == expected(ARM, machine, pflash)


def test_aarch64_uefi_boot_without_firmware_is_a_clear_error() -> None:
    with pytest.raises(DriverError, match="UEFI firmware"):
        build_argv(spec("aarch64", "hvf", kernel=False), firmware=None)


def test_mounts_become_9p_devices() -> None:
    rw = Mount(Path("/Users/u"), Path("/Users/u"))
    ro = Mount(Path("/Users/u/ro"), Path("/ro"), writable=False)
    argv = build_argv(spec("aarch64", "hvf", mounts=(rw, ro)))
    shares = [
        "-fsdev", "local,id=fs0,path=/Users/u,security_model=none",
        "-device", f"virtio-9p-pci,fsdev=fs0,mount_tag={rw.tag}",
        "-fsdev", "local,id=fs1,path=/Users/u/ro,security_model=none,readonly=on",
        "-device", f"virtio-9p-pci,fsdev=fs1,mount_tag={ro.tag}",
    ]  # fmt: skip
    assert argv == expected(ARM, ["-machine", "virt", "-accel", "hvf", "-cpu", "host"], KERNEL, shares)


def test_incoming_restores_saved_state() -> None:
    argv = build_argv(spec("x86_64", "tcg"), incoming=D / "saved.state")
    assert argv[-3:] == ["-incoming", f"exec:cat {D}/saved.state", "-daemonize"]


def test_commas_in_paths_are_escaped() -> None:
    s = replace(spec("x86_64", "tcg"), iso=Path("/a,b/toolbox.iso"))
    assert "if=none,id=iso,file=/a,,b/toolbox.iso,format=raw,media=cdrom,readonly=on" in build_argv(s)


def test_unknown_arch_is_refused() -> None:
    with pytest.raises(DriverError, match="architecture"):
        build_argv(spec("riscv64", "tcg"))
