"""QemuDriver's decisions, with QEMU faked at the run() choke point and at QMP."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from toolbox.drivers import get_driver
from toolbox.drivers.base import Driver, Resettable, Suspendable, VMSpec, VMState
from toolbox.drivers.qemu import driver as qemu_driver
from toolbox.drivers.qemu.driver import STALE_REASON, QemuDriver, install_hint, state_from_qmp
from toolbox.drivers.qemu.qmp import QMPError
from toolbox.errors import CommandFailed, DriverError, ToolMissing
from toolbox.run import Completed


def make_spec(root: Path) -> VMSpec:
    return VMSpec(
        name="t", instance_dir=root, arch="x86_64", cpus=1, memory_mib=512, disk_size_gib=20,
        iso=root / "toolbox.iso", kernel=None, initrd=None, kernel_cmdline="",
        cidata=root / "cidata.iso", data_disk=root / "disk.qcow2", ssh_port=60022,
        accel="tcg", serial_log=root / "serial.log",
    )  # fmt: skip


class FakeRun:
    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.returncode = returncode
        self.stderr = stderr
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[Any], *, check: bool = True, **kwargs: object) -> Completed:
        args = [str(a) for a in argv]
        self.calls.append(args)
        if check and self.returncode != 0:
            raise CommandFailed(args, self.returncode, self.stderr)
        return Completed(args, self.returncode, "", self.stderr)


@pytest.fixture
def spec(tmp_path: Path) -> VMSpec:
    return make_spec(tmp_path)


def running_qemu(monkeypatch: pytest.MonkeyPatch, spec: VMSpec, qmp_status: str | None) -> list[str]:
    """Pretend our QEMU runs with pid 4242; QMP answers query-status with qmp_status
    (None: QMP is dead). Returns the QMP commands sent."""
    (spec.instance_dir / "qemu.pid").write_text("4242\n")
    monkeypatch.setattr(qemu_driver.process, "is_our_qemu", lambda pid, sock: pid == 4242)
    sent: list[str] = []

    def fake_qmp(sock: Path, command: str, arguments: object = None, *, timeout: float = 5.0) -> Any:
        sent.append(command)
        if qmp_status is None:
            raise QMPError("cannot connect to QMP")
        return {"status": qmp_status}

    monkeypatch.setattr(qemu_driver, "qmp_execute", fake_qmp)
    return sent


def test_is_a_driver_with_optional_abilities() -> None:
    d = get_driver("qemu")
    assert isinstance(d, Driver) and isinstance(d, Suspendable) and isinstance(d, Resettable)
    assert d.name == "qemu" and d.features.share_type == "9p" and d.features.disk_format == "qcow2"


def test_ssh_address_is_loopback(spec: VMSpec) -> None:
    assert QemuDriver().ssh_address(spec) == ("127.0.0.1", 60022)


def test_create_makes_a_qcow2_disk(spec: VMSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = FakeRun()
    monkeypatch.setattr(qemu_driver, "run", runner)
    QemuDriver().create(spec)
    assert runner.calls == [["qemu-img", "create", "-q", "-f", "qcow2", str(spec.data_disk), "20G"]]


def test_create_failure_leaves_no_disk(spec: VMSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(argv: list[Any], **kwargs: object) -> Completed:
        spec.data_disk.write_bytes(b"partial")
        raise CommandFailed([str(a) for a in argv], 1, "No space left on device")

    monkeypatch.setattr(qemu_driver, "run", failing)
    with pytest.raises(CommandFailed, match="No space left"):
        QemuDriver().create(spec)
    assert not spec.data_disk.exists()


def test_create_refuses_an_existing_disk(spec: VMSpec) -> None:
    spec.data_disk.write_bytes(b"data")
    with pytest.raises(DriverError, match="already exists"):
        QemuDriver().create(spec)


def test_missing_qemu_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("toolbox.run.shutil.which", lambda name: None)
    monkeypatch.setattr(qemu_driver.platform, "system", lambda: "Linux")
    monkeypatch.setattr(qemu_driver.platform, "machine", lambda: "x86_64")
    with pytest.raises(ToolMissing) as info:
        QemuDriver().check_installed()
    assert info.value.tool == "qemu-system-x86_64"
    assert "sudo apt-get install qemu-system-x86 qemu-utils" in str(info.value)


def test_install_hints_per_platform() -> None:
    assert install_hint("Darwin", "arm64") == "brew install qemu"
    assert install_hint("Linux", "x86_64") == "sudo apt-get install qemu-system-x86 qemu-utils"
    assert install_hint("Linux", "aarch64") == "sudo apt-get install qemu-system-arm qemu-utils"


def test_status_missing_then_stopped(spec: VMSpec) -> None:
    assert QemuDriver().status(spec).state is VMState.MISSING
    spec.data_disk.write_bytes(b"")
    assert QemuDriver().status(spec).state is VMState.STOPPED


def test_stale_pid_file_means_stopped_with_reason(spec: VMSpec) -> None:
    spec.data_disk.write_bytes(b"")
    # Our own pid is alive, but its command line does not name this instance's QMP socket.
    (spec.instance_dir / "qemu.pid").write_text(f"{os.getpid()}\n")
    status = QemuDriver().status(spec)
    assert status.state is VMState.STOPPED and status.reasons == (STALE_REASON,)


def test_saved_state_means_suspended(spec: VMSpec) -> None:
    (spec.instance_dir / "saved.state").write_bytes(b"QEVM")
    assert QemuDriver().status(spec).state is VMState.SUSPENDED


@pytest.mark.parametrize(
    ("qmp_status", "state"),
    [("running", VMState.RUNNING), ("paused", VMState.SUSPENDED), ("guest-panicked", VMState.BROKEN)],
)
def test_status_of_a_live_qemu_comes_from_qmp(
    spec: VMSpec, monkeypatch: pytest.MonkeyPatch, qmp_status: str, state: VMState
) -> None:
    running_qemu(monkeypatch, spec, qmp_status)
    assert QemuDriver().status(spec).state is state


def test_live_qemu_with_dead_qmp_is_broken(spec: VMSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    running_qemu(monkeypatch, spec, None)
    status = QemuDriver().status(spec)
    assert status.state is VMState.BROKEN
    assert "pid 4242" in status.reasons[0] and "QMP does not answer" in status.reasons[0]


def test_start_of_a_running_vm_does_nothing(spec: VMSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = FakeRun()
    monkeypatch.setattr(qemu_driver, "run", runner)
    sent = running_qemu(monkeypatch, spec, "running")
    QemuDriver().start(spec)
    assert runner.calls == [] and sent == ["query-status"]


def test_start_continues_a_paused_vm(spec: VMSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = running_qemu(monkeypatch, spec, "paused")
    QemuDriver().start(spec)
    assert sent == ["query-status", "cont"]


def test_start_failure_reports_qemu_stderr_and_logs_it(spec: VMSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    spec.data_disk.write_bytes(b"")
    (spec.instance_dir / "qemu.pid").write_text("999999999\n")  # stale: cleaned before launch
    stderr = "qemu-system-x86_64: -netdev user: Could not set up host forwarding rule\n"
    runner = FakeRun(returncode=1, stderr=stderr)
    monkeypatch.setattr(qemu_driver, "run", runner)
    monkeypatch.setattr(qemu_driver, "which", lambda name, hint: name)
    with pytest.raises(DriverError, match="host forwarding rule"):
        QemuDriver().start(spec)
    assert runner.calls[0][0] == "qemu-system-x86_64" and runner.calls[0][-1] == "-daemonize"
    assert "host forwarding rule" in (spec.instance_dir / "qemu.log").read_text()
    assert not (spec.instance_dir / "qemu.pid").exists()


def test_start_with_a_saved_state_restores_it(spec: VMSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = spec.instance_dir / "saved.state"
    saved.write_bytes(b"QEVM")
    (spec.instance_dir / "saved.accel").write_text("kvm\n")  # spec says tcg: the saved VM wins
    runner = FakeRun()
    monkeypatch.setattr(qemu_driver, "run", runner)
    monkeypatch.setattr(qemu_driver, "which", lambda name, hint: name)
    states = iter(["inmigrate", "paused", "running"])
    sent: list[str] = []

    def fake_qmp(sock: Path, command: str, arguments: object = None, **kw: object) -> Any:
        sent.append(command)
        return {"status": next(states)} if command == "query-status" else {}

    monkeypatch.setattr(qemu_driver, "qmp_execute", fake_qmp)
    monkeypatch.setattr(qemu_driver.time, "sleep", lambda s: None)
    QemuDriver().start(spec)
    argv = runner.calls[0]
    assert "-incoming" in argv and argv[argv.index("-accel") + 1] == "kvm"
    assert sent == ["query-status", "query-status", "cont", "query-status"]
    assert not saved.exists() and not (spec.instance_dir / "saved.accel").exists()


def test_stop_of_a_stopped_vm_cleans_up_and_does_nothing(spec: VMSpec) -> None:
    (spec.instance_dir / "qemu.pid").write_text("999999999\n")
    QemuDriver().stop(spec)
    assert not (spec.instance_dir / "qemu.pid").exists()


def test_delete_removes_the_drivers_files(spec: VMSpec) -> None:
    for name in ("disk.qcow2", "qemu.log", "saved.state", "qemu.pid"):
        (spec.instance_dir / name).write_text("x")
    (spec.instance_dir / "instance.toml").write_text("x")
    QemuDriver().delete(spec)
    assert sorted(p.name for p in spec.instance_dir.iterdir()) == ["instance.toml"]


def test_reconfigure_refuses_a_running_vm(spec: VMSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    running_qemu(monkeypatch, spec, "running")
    with pytest.raises(DriverError, match="stop the VM"):
        QemuDriver().reconfigure(spec)


def test_reconfigure_refuses_a_saved_state(spec: VMSpec) -> None:
    (spec.instance_dir / "saved.state").write_bytes(b"QEVM")
    with pytest.raises(DriverError, match="saved state"):
        QemuDriver().reconfigure(spec)


def test_shutdown_state_is_stopped() -> None:
    assert state_from_qmp("shutdown").state is VMState.STOPPED
    assert state_from_qmp("inmigrate").state is VMState.RUNNING


def test_unloadable_saved_state_says_how_to_discard_it(spec: VMSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    (spec.instance_dir / "saved.state").write_bytes(b"garbage")
    monkeypatch.setattr(qemu_driver, "run", FakeRun())
    monkeypatch.setattr(qemu_driver, "which", lambda name, hint: name)

    def dead_qmp(sock: Path, command: str, arguments: object = None, **kw: object) -> Any:
        raise QMPError("QMP connection closed by QEMU")

    monkeypatch.setattr(qemu_driver, "qmp_execute", dead_qmp)
    with pytest.raises(DriverError, match="restoring the saved state failed") as info:
        QemuDriver().start(spec)
    assert info.value.hint is not None and "toolbox down" in info.value.hint
    assert (spec.instance_dir / "saved.state").exists()
