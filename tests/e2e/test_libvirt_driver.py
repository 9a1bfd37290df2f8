"""The real LibvirtDriver against a real libvirtd (started by the session, domain type
qemu, i.e. TCG here) and the real guest image: create, start, SSH banner, graceful stop,
start again, managed save and restore, delete leaving no domain, volume or file.
Bad input: libvirtd not running, domain name taken.

Needs vm-image/out/{toolbox.iso,vmlinuz,initrd,manifest.json} for the boot tests;
skipped without them (or without libvirtd) unless TOOLBOX_REQUIRE_E2E=1.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.libvirt_fixtures import libvirt_uri  # noqa: F401 (a fixture)

from toolbox.accel import detect_accel
from toolbox.drivers.base import VMSpec, VMState
from toolbox.drivers.libvirt.driver import LibvirtDriver
from toolbox.errors import DriverError
from toolbox.instance import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]

IMAGE = Path(__file__).resolve().parents[2] / "vm-image" / "out"
BOOT_TIMEOUT = 240.0  # start to SSH banner under TCG, with other VMs sharing 2 cores


def _image_or_skip() -> Path:
    if (IMAGE / "toolbox.iso").exists():
        return IMAGE
    if os.environ.get("TOOLBOX_REQUIRE_E2E") == "1":
        pytest.fail(f"{IMAGE}/toolbox.iso is missing; build it with: make -C vm-image")
    pytest.skip(f"{IMAGE}/toolbox.iso is missing (make -C vm-image)")



def _write_cidata(path: Path) -> None:
    """A config drive (label cidata) from the project's writer: host key, a login key."""
    from toolbox.cidata import ConfigDrive, write_config_drive
    from toolbox.keys import generate_ed25519

    host, login = generate_ed25519("e2e-host"), generate_ed25519("e2e-login")
    drive = ConfigDrive(
        hostname="e2e", uid=os.getuid(), gid=os.getgid(), authorized_keys=[login.public_openssh],
        host_private_key=host.private_openssh, host_public_key=host.public_openssh,
    )  # fmt: skip
    write_config_drive(path, drive)


def _spec(root: Path, name: str, image: Path | None = None) -> VMSpec:
    image = image or root
    cmdline = json.loads((image / "manifest.json").read_text())["cmdline"] if image != root else ""
    return VMSpec(
        name=name, instance_dir=root, arch="x86_64", cpus=1, memory_mib=768, disk_size_gib=2,
        iso=image / "toolbox.iso", kernel=image / "vmlinuz", initrd=image / "initrd",
        kernel_cmdline=cmdline, cidata=root / "cidata.iso", data_disk=root / "disk.qcow2",
        ssh_port=free_port(), accel=detect_accel("x86_64"), serial_log=root / "serial.log",
    )  # fmt: skip


@pytest.fixture(scope="module")
def driver(libvirt_uri: str) -> LibvirtDriver:  # noqa: F811 (the fixture imported above)
    return LibvirtDriver(libvirt_uri)


@pytest.fixture(scope="module")
def spec(driver: LibvirtDriver) -> Iterator[VMSpec]:
    image = _image_or_skip()
    with tempfile.TemporaryDirectory(prefix="tbl-") as tmp:
        root = Path(tmp)
        _write_cidata(root / "cidata.iso")
        vm = _spec(root, f"e2e-lv{os.getpid()}", image)
        yield vm
        driver.delete(vm)  # never leave a domain behind, whatever failed


def _wait_for_banner(vm: VMSpec, timeout: float = BOOT_TIMEOUT) -> float:
    """Seconds until sshd's banner arrives on 127.0.0.1:ssh_port (through the port forward)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with socket.create_connection(("127.0.0.1", vm.ssh_port), timeout=5.0) as s:
                s.settimeout(10.0)
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return time.monotonic() - started
        except OSError:
            pass  # QEMU's forward accepts before the guest listens, then drops us
        time.sleep(1.0)
    tail = vm.serial_log.read_text(errors="replace")[-2000:] if vm.serial_log.exists() else "(no serial log)"
    pytest.fail(f"no SSH banner on 127.0.0.1:{vm.ssh_port} within {timeout:g} s:\n{tail}")


def _domain_names(uri: str) -> set[str]:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()


def test_lifecycle(driver: LibvirtDriver, spec: VMSpec) -> None:
    driver.check_installed()
    assert driver.status(spec).state is VMState.MISSING
    driver.create(spec)
    assert spec.data_disk.exists()
    assert driver.status(spec).state is VMState.STOPPED

    driver.start(spec)
    driver.start(spec)  # idempotent
    assert driver.status(spec).state is VMState.RUNNING
    print(f"libvirt: start to SSH banner {_wait_for_banner(spec):.1f} s")
    assert driver.ssh_address(spec) == ("127.0.0.1", spec.ssh_port)

    stopping = time.monotonic()
    driver.stop(spec, timeout=90.0)
    took = time.monotonic() - stopping
    assert driver.status(spec).state is VMState.STOPPED
    assert "reboot: Power down" in spec.serial_log.read_text(errors="replace"), "not a clean power-off"
    print(f"libvirt: graceful stop {took:.1f} s")
    driver.stop(spec)  # stopping a stopped VM does nothing


def test_start_again_then_managed_save_and_restore(driver: LibvirtDriver, spec: VMSpec) -> None:
    driver.start(spec)
    _wait_for_banner(spec)
    driver.suspend(spec)
    status = driver.status(spec)
    assert status.state is VMState.SUSPENDED, status
    driver.resume(spec)
    assert driver.status(spec).state is VMState.RUNNING
    # The guest carries on where it was: sshd answers at once, no second boot.
    assert _wait_for_banner(spec, timeout=30.0) < 30.0


def test_delete_leaves_no_domain_volume_or_file(driver: LibvirtDriver, spec: VMSpec) -> None:
    driver.delete(spec)  # a running domain: destroyed, then undefined with its managed save
    assert driver.status(spec).state is VMState.MISSING
    assert f"toolbox-{spec.name}" not in _domain_names(driver.uri)
    assert not spec.data_disk.exists()
    assert not Path(f"/var/log/libvirt/qemu/toolbox-{spec.name}.log").exists()
    assert {p.name for p in spec.instance_dir.iterdir()} <= {"cidata.iso", "serial.log"}
    driver.delete(spec)  # deleting a missing VM does nothing


def test_libvirtd_not_running_is_one_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    uri = f"qemu:///system?socket={tmp_path}/no-such-libvirt-sock"
    driver = LibvirtDriver(uri)
    spec = _spec(tmp_path, "e2e-nodaemon")
    with pytest.raises(DriverError) as err:
        driver.create(spec)
    assert "cannot connect to" in str(err.value)
    assert "start libvirtd" in (err.value.hint or "")
    assert "\n" not in str(err.value)
    assert not spec.data_disk.exists()


def test_domain_name_taken_creates_nothing(driver: LibvirtDriver, tmp_path: Path) -> None:
    # Two instance directories, one name: the second create must fail before any disk.
    first = _spec(tmp_path / "a", f"e2e-dup{os.getpid()}")
    second = _spec(tmp_path / "b", first.name)
    for s in (first, second):
        s.instance_dir.mkdir()
        for f in ("toolbox.iso", "vmlinuz", "initrd", "cidata.iso"):
            (s.instance_dir / f).write_bytes(b"")
    try:
        driver.create(first)
        with pytest.raises(DriverError) as err:
            driver.create(second)
        assert "already exists" in str(err.value)
        assert not second.data_disk.exists()
        assert driver.status(first).state is VMState.STOPPED  # the first is untouched
    finally:
        driver.delete(first)
    assert f"toolbox-{first.name}" not in _domain_names(driver.uri)
