"""QemuDriver: boots a VMSpec as a daemonized QEMU and looks after it.

QEMU keeps no VM definition of its own: the "VM" is the data disk this driver creates
plus the argv built from the spec at each start (toolbox.drivers.qemu.command). The
running state lives in the instance directory: qemu.pid, qmp.sock, and saved.state
while suspended. Status is derived from those and from QMP, never stored.
"""

from __future__ import annotations

import contextlib
import platform
import shlex
import time
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from toolbox.accel import qemu_binary
from toolbox.drivers.base import DriverFeatures, VMSpec, VMState, VMStatus
from toolbox.drivers.qemu import command, process
from toolbox.drivers.qemu.qmp import QMPClient, QMPError, qmp_execute
from toolbox.errors import DriverError, ToolboxError
from toolbox.run import run, which

STALE_REASON = "pid file stale: QEMU was killed"
SUSPEND_TIMEOUT = 300.0  # seconds to write the guest's memory to saved.state


def install_hint(host_os: str | None = None, host_arch: str | None = None) -> str:
    """The command that installs QEMU on this platform."""
    host_os = host_os or platform.system()
    if host_os == "Darwin":
        return "brew install qemu"
    package = "qemu-system-arm" if (host_arch or platform.machine()) in ("aarch64", "arm64") else "qemu-system-x86"
    return f"sudo apt-get install {package} qemu-utils"


def find_uefi_firmware(arch: str) -> Path | None:
    """QEMU's UEFI code image for `arch` guests, where Homebrew or Debian put it."""
    if arch != "aarch64":
        return None  # x86_64 boots the ISO with SeaBIOS, built into QEMU
    candidates = [
        Path("/opt/homebrew/share/qemu/edk2-aarch64-code.fd"),
        Path("/usr/local/share/qemu/edk2-aarch64-code.fd"),
        Path("/usr/share/qemu/edk2-aarch64-code.fd"),
        Path("/usr/share/AAVMF/AAVMF_CODE.fd"),
        Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"),
    ]
    return next((path for path in candidates if path.exists()), None)


class QemuDriver:
    """The Driver protocol (plus Suspendable and Resettable) for QEMU."""

    name: ClassVar[str] = "qemu"
    features: ClassVar[DriverFeatures] = DriverFeatures(
        direct_kernel_boot=True, suspend=True, share_type="9p", disk_format="qcow2"
    )

    def check_installed(self) -> None:
        """ToolMissing, naming the install command, if QEMU or qemu-img is absent."""
        arch = "aarch64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
        which(qemu_binary(arch), install_hint())
        which("qemu-img", install_hint())

    def create(self, spec: VMSpec) -> None:
        """Create the qcow2 data disk; DriverError if it already exists."""
        if spec.data_disk.exists():
            raise DriverError(self.name, f"data disk {spec.data_disk} already exists")
        spec.data_disk.parent.mkdir(parents=True, exist_ok=True)
        try:
            run(["qemu-img", "create", "-q", "-f", "qcow2", spec.data_disk, f"{spec.disk_size_gib}G"])
        except BaseException:
            spec.data_disk.unlink(missing_ok=True)
            raise

    def reconfigure(self, spec: VMSpec) -> None:
        """Nothing to rewrite (the argv is built at each start), but the VM must be off,
        and a saved state cannot be carried over to a changed machine."""
        if self._live_pid(spec) is not None:
            raise DriverError(self.name, "stop the VM before changing it", hint="toolbox down")
        if command.saved_state_file(spec).exists():
            raise DriverError(
                self.name, "the VM has a saved state for its old configuration", hint="resume it and stop it first"
            )

    def start(self, spec: VMSpec) -> None:
        """Boot (or restore a saved state); a no-op when already running.

        A paused VM is continued. Returns once QEMU runs the VM (QEMU's -daemonize
        returns after its set-up); waiting for the guest is the caller's job.
        """
        files = command.instance_paths(spec)
        status = self.status(spec)
        if status.state is VMState.RUNNING:
            return
        if status.state is VMState.BROKEN:
            raise DriverError(self.name, "; ".join(status.reasons), hint="force it off with: toolbox poweroff")
        if self._live_pid(spec) is not None:
            if status.state is VMState.SUSPENDED:  # paused in memory
                qmp_execute(files.qmp_socket, "cont")
                return
            self.stop(spec, force=True)  # the guest powered off and QEMU is on its way out
        self._clean_runtime_files(spec)
        if command.saved_state_file(spec).exists():
            self._restore(spec)
        else:
            self._launch(spec, None)

    def stop(self, spec: VMSpec, *, force: bool = False, timeout: float = 30.0) -> None:
        """ACPI power-off via QMP, waiting up to `timeout` s; then quit, then SIGKILL.

        Stopping a VM suspended to disk discards its saved state: it ends powered off.
        """
        files = command.instance_paths(spec)
        for path in (command.saved_state_file(spec), command.saved_accel_file(spec)):
            path.unlink(missing_ok=True)
        pid = self._live_pid(spec)
        if pid is None:
            self._clean_runtime_files(spec)
            return
        if not force and self._powerdown(spec, pid, timeout):
            self._clean_runtime_files(spec)
            return
        with contextlib.suppress(QMPError):
            qmp_execute(files.qmp_socket, "quit", timeout=2.0)
        if not process.wait_exit(pid, files.qmp_socket, 5.0):
            process.kill(pid, files.qmp_socket)
            process.wait_exit(pid, files.qmp_socket, 5.0)
        self._clean_runtime_files(spec)

    def delete(self, spec: VMSpec) -> None:
        """Force the VM off and remove every file this driver made."""
        self.stop(spec, force=True)
        files = command.instance_paths(spec)
        for path in (spec.data_disk, files.qemu_log, command.saved_state_file(spec)):
            path.unlink(missing_ok=True)

    def status(self, spec: VMSpec) -> VMStatus:
        """RUNNING / SUSPENDED / STOPPED / BROKEN / MISSING, from files, the process and QMP."""
        files = command.instance_paths(spec)
        pid = process.read_pid(files.qemu_pid)
        if pid is None:
            if command.saved_state_file(spec).exists():
                return VMStatus(VMState.SUSPENDED, ("memory saved to disk",))
            return VMStatus(VMState.STOPPED if spec.data_disk.exists() else VMState.MISSING)
        if not process.is_our_qemu(pid, files.qmp_socket):
            return VMStatus(VMState.STOPPED, (STALE_REASON,))
        try:
            info = qmp_execute(files.qmp_socket, "query-status", timeout=3.0)
        except QMPError as exc:
            return VMStatus(VMState.BROKEN, (f"QEMU (pid {pid}) is running but QMP does not answer: {exc.message}",))
        return state_from_qmp(str(info.get("status", "")))

    def ssh_address(self, spec: VMSpec) -> tuple[str, int]:
        return ("127.0.0.1", spec.ssh_port)

    # Suspendable

    def suspend(self, spec: VMSpec) -> None:
        """Save the guest's memory to saved.state and end QEMU; start/resume restores it.

        Uses QEMU's migration to a file. QEMU refuses while a 9p share is mounted in the
        guest; then the VM keeps running and DriverError says why.
        """
        files = command.instance_paths(spec)
        pid = self._live_pid(spec)
        if pid is None:
            raise DriverError(self.name, "the VM is not running")
        saved = command.saved_state_file(spec)
        partial = saved.with_suffix(".partial")
        with QMPClient(files.qmp_socket, timeout=10.0) as qmp:
            qmp.execute("stop")
            try:
                _migrate_to_file(qmp, partial)
            except ToolboxError as exc:
                partial.unlink(missing_ok=True)
                qmp.execute("cont")
                raise DriverError(
                    self.name, f"cannot save the VM: {exc}", hint="stop it with 'toolbox down' instead"
                ) from exc
            command.saved_accel_file(spec).write_text((process.accel_of(pid) or spec.accel) + "\n")
            partial.replace(saved)
            with contextlib.suppress(QMPError):
                qmp.execute("quit")
        if not process.wait_exit(pid, files.qmp_socket, 10.0):
            process.kill(pid, files.qmp_socket)
        self._clean_runtime_files(spec)

    def resume(self, spec: VMSpec) -> None:
        """Restore a VM suspended to disk, or continue a paused one."""
        if self.status(spec).state is not VMState.SUSPENDED:
            raise DriverError(self.name, "the VM is not suspended")
        self.start(spec)

    # Resettable

    def reset(self, spec: VMSpec) -> None:
        """Hard reset, like the reset button: the guest reboots without shutting down."""
        if self._live_pid(spec) is None:
            raise DriverError(self.name, "the VM is not running")
        qmp_execute(command.instance_paths(spec).qmp_socket, "system_reset")

    # internals

    def _live_pid(self, spec: VMSpec) -> int | None:
        files = command.instance_paths(spec)
        pid = process.read_pid(files.qemu_pid)
        return pid if pid is not None and process.is_our_qemu(pid, files.qmp_socket) else None

    def _launch(self, spec: VMSpec, incoming: Path | None) -> None:
        files = command.instance_paths(spec)
        files.check_socket_path(files.qmp_socket)
        which(qemu_binary(spec.arch), install_hint())  # the guest's arch, not the host's
        argv = command.build_argv(spec, firmware=find_uefi_firmware(spec.arch), incoming=incoming)
        if incoming is None:
            spec.serial_log.write_bytes(b"")  # a fresh boot starts a fresh console log
        result = run(argv, check=False, timeout=120.0)
        # -daemonize: QEMU's stderr is ours only until it has set up; keep it for `logs`.
        with files.qemu_log.open("a") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(result.argv)}\n{result.stderr}")
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:]) or "no output"
            raise DriverError(self.name, f"QEMU failed to start (exit {result.returncode}): {tail}")

    def _restore(self, spec: VMSpec) -> None:
        """Start QEMU from saved.state, under the accelerator it was saved with."""
        saved = command.saved_state_file(spec)
        self._launch(replace(spec, accel=_saved_accel(spec)), saved)
        try:
            self._wait_restored(spec)
        except QMPError as exc:  # QEMU exits when it cannot load the state
            raise DriverError(
                self.name,
                f"restoring the saved state failed: {exc.message}",
                hint="discard it with 'toolbox down', then start again",
            ) from exc
        saved.unlink(missing_ok=True)
        command.saved_accel_file(spec).unlink(missing_ok=True)

    def _wait_restored(self, spec: VMSpec, timeout: float = 120.0) -> None:
        socket_path = command.instance_paths(spec).qmp_socket
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = qmp_execute(socket_path, "query-status").get("status")
            if state == "running":
                return
            if state == "paused":  # loaded: suspend stopped the guest before saving it
                qmp_execute(socket_path, "cont")
                continue
            if state not in ("inmigrate", "prelaunch"):
                raise DriverError(self.name, f"restoring the saved state failed: QEMU is {state!r}")
            time.sleep(0.2)
        raise DriverError(self.name, f"restoring the saved state took longer than {timeout:g} s")

    def _powerdown(self, spec: VMSpec, pid: int, timeout: float) -> bool:
        socket_path = command.instance_paths(spec).qmp_socket
        try:
            with QMPClient(socket_path, timeout=3.0) as qmp:
                if qmp.execute("query-status").get("status") != "running":
                    qmp.execute("cont")  # a paused guest cannot see the power button
                qmp.execute("system_powerdown")
        except QMPError:
            return False
        return process.wait_exit(pid, socket_path, timeout)

    def _clean_runtime_files(self, spec: VMSpec) -> None:
        files = command.instance_paths(spec)
        for path in (files.qemu_pid, files.qmp_socket):
            path.unlink(missing_ok=True)


def state_from_qmp(status: str) -> VMStatus:
    """Map QMP's RunState (query-status "status") to a VMStatus."""
    if status == "running":
        return VMStatus(VMState.RUNNING)
    if status in ("inmigrate", "prelaunch", "finish-migrate"):
        return VMStatus(VMState.RUNNING, (f"QEMU is {status}",))
    if status in ("paused", "suspended", "postmigrate", "save-vm", "restore-vm"):
        return VMStatus(VMState.SUSPENDED, (f"QEMU is {status}",))
    if status == "shutdown":
        return VMStatus(VMState.STOPPED, ("the guest powered off; QEMU has not exited yet",))
    return VMStatus(VMState.BROKEN, (f"QEMU reports {status or 'no state'}",))


def _saved_accel(spec: VMSpec) -> str:
    try:
        accel = command.saved_accel_file(spec).read_text().strip()
    except OSError:
        return spec.accel
    return accel if accel in ("hvf", "kvm", "tcg") else spec.accel


def _migrate_to_file(qmp: QMPClient, target: Path, timeout: float = SUSPEND_TIMEOUT) -> None:
    """Stream the stopped VM's state into `target` (QEMU 7 has no file: URI; exec: it is)."""
    qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(target))}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = qmp.execute("query-migrate")
        state = info.get("status")
        if state == "completed":
            return
        if state in ("failed", "cancelled"):
            raise DriverError("qemu", f"saving the VM state failed: {info.get('error-desc', state)}")
        time.sleep(0.2)
    raise DriverError("qemu", f"saving the VM state took longer than {timeout:g} s")

