"""The real QemuDriver against the real guest image, under whatever accelerator this host
really has (TCG on the project's machines): create, start, graceful stop, kill -9 and
recovery, suspend to disk and restore, delete.

Needs vm-image/out/{toolbox.iso,vmlinuz,initrd,manifest.json} (make -C vm-image); skipped
without them unless TOOLBOX_REQUIRE_E2E=1.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu_helpers import free_port, image_or_skip, wait_for_serial, write_minimal_cidata

from toolbox.accel import detect_accel
from toolbox.drivers import get_driver
from toolbox.drivers.base import VMSpec, VMState
from toolbox.drivers.qemu.driver import STALE_REASON, QemuDriver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def spec() -> Iterator[VMSpec]:
    image = image_or_skip()
    manifest = json.loads((image / "manifest.json").read_text())
    # A short directory: the QMP socket path must fit in 104 bytes.
    with tempfile.TemporaryDirectory(prefix="tbq-") as tmp:
        root = Path(tmp)
        write_minimal_cidata(root / "cidata.iso")
        vm = VMSpec(
            name="e2e", instance_dir=root, arch="x86_64", cpus=1, memory_mib=1024, disk_size_gib=2,
            iso=image / "toolbox.iso", kernel=image / "vmlinuz", initrd=image / "initrd",
            kernel_cmdline=manifest["cmdline"], cidata=root / "cidata.iso",
            data_disk=root / "disk.qcow2", ssh_port=free_port(), accel=detect_accel("x86_64"),
            serial_log=root / "serial.log",
        )  # fmt: skip
        yield vm
        QemuDriver().delete(vm)  # never leave a VM behind, whatever failed


def _qemu_pid(vm: VMSpec) -> int:
    return int((vm.instance_dir / "qemu.pid").read_text())


def test_lifecycle(spec: VMSpec) -> None:
    driver = get_driver("qemu")
    driver.check_installed()
    assert driver.status(spec).state is VMState.MISSING

    driver.create(spec)
    assert spec.data_disk.exists()
    assert driver.status(spec).state is VMState.STOPPED

    started = time.monotonic()
    driver.start(spec)
    assert time.monotonic() - started < 10.0  # -daemonize returns once QEMU runs
    assert driver.status(spec).state is VMState.RUNNING
    pid = _qemu_pid(spec)
    driver.start(spec)  # idempotent
    assert _qemu_pid(spec) == pid

    # Graceful: the ACPI power button reaches the guest's acpid, which powers off.
    wait_for_serial(spec, "ready (")
    stopping = time.monotonic()
    driver.stop(spec, timeout=90.0)
    took = time.monotonic() - stopping
    assert driver.status(spec).state is VMState.STOPPED
    assert "reboot: Power down" in spec.serial_log.read_text(errors="replace"), "not a clean power-off"
    assert took < 90.0
    print(f"graceful stop took {took:.1f} s")


def test_kill_9_shows_stale_and_start_recovers(spec: VMSpec) -> None:
    driver = get_driver("qemu")
    driver.start(spec)
    os.kill(_qemu_pid(spec), signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while driver.status(spec).state is VMState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    status = driver.status(spec)
    assert status.state is VMState.STOPPED and status.reasons == (STALE_REASON,)
    driver.start(spec)
    assert driver.status(spec).state is VMState.RUNNING


def test_suspend_to_disk_and_restore(spec: VMSpec) -> None:
    driver = QemuDriver()
    driver.start(spec)
    driver.suspend(spec)
    assert driver.status(spec).state is VMState.SUSPENDED
    assert (spec.instance_dir / "saved.state").stat().st_size > 0
    driver.resume(spec)
    assert driver.status(spec).state is VMState.RUNNING
    assert not (spec.instance_dir / "saved.state").exists()


def test_force_stop_and_delete_leave_nothing(spec: VMSpec) -> None:
    driver = get_driver("qemu")
    driver.stop(spec, force=True)
    assert driver.status(spec).state is VMState.STOPPED
    driver.delete(spec)
    assert driver.status(spec).state is VMState.MISSING
    leftovers = {p.name for p in spec.instance_dir.iterdir()}
    assert leftovers <= {"cidata.iso", "serial.log"}  # the caller's files, not the driver's
