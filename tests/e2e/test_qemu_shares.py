"""9p shares through the real QemuDriver and guest: a file the guest writes in a shared
folder belongs to the folder's owner on the host (security_model=none), a read-only share
refuses writes, and suspend is refused (with the VM left running) while a share is mounted.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu_helpers import BOOT_TIMEOUT, free_port, image_or_skip, wait_for_serial

from toolbox.accel import detect_accel
from toolbox.cidata import ConfigDrive, DriveMount, write_config_drive
from toolbox.drivers.base import Mount, VMSpec, VMState
from toolbox.drivers.qemu.driver import QemuDriver
from toolbox.errors import DriverError
from toolbox.keys import generate_ed25519


pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def vm() -> Iterator[tuple[VMSpec, str]]:
    import json

    image = image_or_skip()
    manifest = json.loads((image / "manifest.json").read_text())
    with tempfile.TemporaryDirectory(prefix="tb9-") as tmp:
        root = Path(tmp)
        (root / "rw").mkdir()
        (root / "ro").mkdir()
        (root / "ro" / "hello").write_text("from the host\n")
        # On a Mac the guest user gets the host user's uid and so owns the share. As root
        # (CI) the guest user stays 1000: give it the folder, as the Mac user would own it.
        uid, gid = (os.getuid(), os.getgid()) if os.getuid() != 0 else (1000, 1000)
        os.chown(root / "rw", uid, gid)
        mounts = (Mount(root / "rw", Path("/mnt/rw")), Mount(root / "ro", Path("/mnt/ro"), writable=False))
        login, host = generate_ed25519("e2e"), generate_ed25519("guest")
        drive = ConfigDrive(
            hostname="e2e9p", uid=uid, gid=gid, authorized_keys=[login.public_openssh],
            host_private_key=host.private_openssh, host_public_key=host.public_openssh,
            mounts=[DriveMount("9p", m.tag, str(m.guest_path), m.writable) for m in mounts],
        )  # fmt: skip
        write_config_drive(root / "cidata.iso", drive)
        spec = VMSpec(
            name="e2e9p", instance_dir=root, arch="x86_64", cpus=1, memory_mib=1024, disk_size_gib=2,
            iso=image / "toolbox.iso", kernel=image / "vmlinuz", initrd=image / "initrd",
            kernel_cmdline=manifest["cmdline"], cidata=root / "cidata.iso", data_disk=root / "disk.qcow2",
            ssh_port=free_port(), accel=detect_accel("x86_64"), serial_log=root / "serial.log", mounts=mounts,
        )  # fmt: skip
        driver = QemuDriver()
        driver.create(spec)
        driver.start(spec)
        try:
            wait_for_serial(spec, "ready (", BOOT_TIMEOUT)
            yield spec, login.private_openssh
        finally:
            driver.delete(spec)


def _ssh(spec: VMSpec, key: str, command: str) -> tuple[int, str]:
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a throwaway test VM
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(key))
    client.connect("127.0.0.1", spec.ssh_port, username="toolbox", pkey=pkey, timeout=30,
                   allow_agent=False, look_for_keys=False)  # fmt: skip
    try:
        _, stdout, stderr = client.exec_command(command, timeout=30)
        status = stdout.channel.recv_exit_status()
        return status, stdout.read().decode() + stderr.read().decode()
    finally:
        client.close()


def test_guest_writes_are_owned_by_the_host_user(vm: tuple[VMSpec, str]) -> None:
    spec, key = vm
    assert "mounted 9p" in spec.serial_log.read_text(errors="replace")
    status, out = _ssh(spec, key, "echo hi > /mnt/rw/from-guest && cat /mnt/ro/hello")
    assert status == 0, out
    assert out == "from the host\n"
    written = spec.instance_dir / "rw" / "from-guest"
    assert written.read_text() == "hi\n"
    # security_model=none: QEMU creates the file as itself, then tries to give it the
    # guest user's ids. Unprivileged (a Mac user) that quietly fails and the file is the
    # user's own; as root (CI) it succeeds. Either way it is the share owner's, below.
    assert written.stat().st_uid == (spec.instance_dir / "rw").stat().st_uid


def test_read_only_share_refuses_writes(vm: tuple[VMSpec, str]) -> None:
    spec, key = vm
    status, out = _ssh(spec, key, "touch /mnt/ro/nope")
    assert status != 0 and "Read-only file system" in out
    assert not (spec.instance_dir / "ro" / "nope").exists()


def test_suspend_with_a_mounted_share_is_refused_and_vm_keeps_running(vm: tuple[VMSpec, str]) -> None:
    spec, _ = vm
    driver = QemuDriver()
    started = time.monotonic()
    with pytest.raises(DriverError, match="(?i)migration"):
        driver.suspend(spec)
    assert time.monotonic() - started < 30.0
    assert driver.status(spec).state is VMState.RUNNING
    assert not (spec.instance_dir / "saved.state").exists()
