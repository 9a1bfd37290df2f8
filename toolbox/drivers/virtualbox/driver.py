"""VirtualBoxDriver: the Driver protocol on VirtualBox, through VBoxManage.

Every VBoxManage call goes through toolbox.run.run (the one subprocess choke point);
the argvs and the showvminfo parser are pure, in vboxmanage.py. VirtualBox cannot
boot the image's kernel directly, so its BIOS boots the hybrid ISO.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from toolbox.drivers.base import DriverFeatures, VMSpec, VMState, VMStatus
from toolbox.drivers.virtualbox import vboxmanage as vbm
from toolbox.errors import CommandFailed, DriverError, ToolMissing
from toolbox.run import Completed, run

log = logging.getLogger("toolbox.drivers.virtualbox")

DRIVER = "virtualbox"
# Where the installer puts VBoxManage on a Mac when /usr/local/bin is not on PATH.
MACOS_VBOXMANAGE = "/Applications/VirtualBox.app/Contents/MacOS/VBoxManage"
_POLL_S = 0.5
# A guest still booting may not listen for the power button yet; press it again this often.
_ACPI_REPEAT_S = 5.0


def install_hint() -> str:
    if platform.system() == "Darwin":
        return "the VirtualBox installer from https://www.virtualbox.org/wiki/Downloads (or: brew install --cask virtualbox)"
    return "VirtualBox from https://www.virtualbox.org/wiki/Linux_Downloads (package virtualbox-7.0)"


class VirtualBoxDriver:
    name: ClassVar[str] = "virtualbox"
    features: ClassVar[DriverFeatures] = DriverFeatures(
        direct_kernel_boot=False, suspend=True, share_type="vboxsf", disk_format="vdi"
    )

    # -- plumbing ---------------------------------------------------------------------

    def _binary(self) -> str:
        found = shutil.which(vbm.VBOXMANAGE)
        if found is None and platform.system() == "Darwin" and Path(MACOS_VBOXMANAGE).exists():
            found = MACOS_VBOXMANAGE
        if found is None:
            raise ToolMissing(vbm.VBOXMANAGE, install_hint())
        return found

    def _vbox(self, argv: Sequence[str], doing: str, *, timeout: float = 120.0) -> Completed:
        """Run a VBoxManage argv; a failure is one DriverError line saying what it was doing."""
        try:
            return run([self._binary(), *argv[1:]], timeout=timeout)
        except CommandFailed as exc:
            raise DriverError(DRIVER, f"{doing}: {vbm.error_message(exc.stderr)}") from exc

    def info(self, spec: VMSpec) -> vbm.VMInfo | None:
        """What VirtualBox says about the instance's VM; None when it has none."""
        name = vbm.vm_name(spec.name)
        result = run([self._binary(), *vbm.showvminfo(name)[1:]], check=False)
        if result.returncode != 0:
            output = result.stderr + result.stdout
            if vbm.is_not_found(output):
                return None
            raise DriverError(DRIVER, f"reading the state of {name}: {vbm.error_message(output)}")
        return vbm.parse_vminfo(result.stdout)

    def _require(self, spec: VMSpec) -> vbm.VMInfo:
        info = self.info(spec)
        if info is None:
            raise DriverError(
                DRIVER,
                f"VirtualBox has no VM named {vbm.vm_name(spec.name)}",
                hint=f"recreate the instance: toolbox delete -n {spec.name} && toolbox init -n {spec.name}",
            )
        return info

    # -- Driver -------------------------------------------------------------------------

    def check_installed(self) -> None:
        self._binary()

    def create(self, spec: VMSpec) -> None:
        if spec.arch != "x86_64":
            raise DriverError(DRIVER, f"toolbox's VirtualBox driver runs x86_64 guests only, not {spec.arch}")
        name = vbm.vm_name(spec.name)
        if self.info(spec) is not None:
            raise DriverError(
                DRIVER,
                f"a VM named {name} is already registered with VirtualBox",
                hint=f"remove it with 'VBoxManage unregistervm {name} --delete' or choose another instance name",
            )
        made_disk = not spec.data_disk.exists()
        self._vbox(vbm.createvm(name, self._basefolder(spec)), f"creating {name}")
        try:
            self._configure(spec, name)
        except BaseException:
            # No half-made VM: unregister it with everything VirtualBox made for it, and
            # keep the original error (a failing cleanup is only logged).
            try:
                self._remove(spec, name, keep_disk=not made_disk)
            except Exception as cleanup:  # noqa: BLE001
                log.warning("cleaning up %s after a failed create: %s", name, cleanup)
            if made_disk:
                spec.data_disk.unlink(missing_ok=True)
            shutil.rmtree(self._basefolder(spec), ignore_errors=True)
            raise

    def _basefolder(self, spec: VMSpec) -> Path:
        return spec.instance_dir / "vbox"

    def _configure(self, spec: VMSpec, name: str) -> None:
        self._vbox(vbm.modifyvm(name, spec), f"configuring {name}")
        self._vbox(vbm.storagectl(name), f"adding the disk controller to {name}")
        if not spec.data_disk.exists():
            self._vbox(vbm.createmedium(spec.data_disk, spec.disk_size_gib), "creating the data disk")
        self._attach(spec, name)
        self._share(spec, name)

    def _share(self, spec: VMSpec, name: str) -> None:
        """Permanent shared folders (the VM must be off); the guest mounts each at its path."""
        for mount in spec.mounts:
            self._vbox(vbm.sharedfolder_add(name, mount), f"sharing {mount.host_path}")
            if mount.writable:
                self._vbox(vbm.allow_symlinks(name, mount), f"sharing {mount.host_path}")

    def _attach(self, spec: VMSpec, name: str) -> None:
        self._vbox(vbm.storageattach(name, vbm.PORT_ISO, "dvddrive", spec.iso), "attaching the boot image")
        self._vbox(vbm.storageattach(name, vbm.PORT_CIDATA, "dvddrive", spec.cidata), "attaching the config drive")
        self._vbox(vbm.storageattach(name, vbm.PORT_DISK, "hdd", spec.data_disk), "attaching the data disk")

    def reconfigure(self, spec: VMSpec) -> None:
        info = self._require(spec)
        name = info.name
        if info.status.state is not VMState.STOPPED:
            raise DriverError(DRIVER, f"{name} is {info.vm_state}; stop it before changing its settings")
        if info.forward(vbm.SSH_RULE) is not None:
            self._vbox(vbm.delete_forward(name), f"reconfiguring {name}")
        self._vbox(vbm.modifyvm(name, spec), f"reconfiguring {name}")
        # Swap the DVDs (a new image on upgrade); the data disk stays where it is.
        self._vbox(vbm.storageattach(name, vbm.PORT_ISO, "dvddrive", spec.iso), "attaching the boot image")
        self._vbox(vbm.storageattach(name, vbm.PORT_CIDATA, "dvddrive", spec.cidata), "attaching the config drive")
        for folder in info.shared_folders:
            self._vbox(vbm.sharedfolder_remove(name, folder.name), f"unsharing {folder.host_path}")
        self._share(spec, name)

    def start(self, spec: VMSpec) -> None:
        info = self._require(spec)
        if info.vm_state == "paused":
            self._vbox(vbm.controlvm(info.name, "resume"), f"resuming {info.name}")
        elif info.status.state is not VMState.RUNNING:
            # From "saved" startvm restores the saved memory rather than booting.
            self._vbox(vbm.startvm(info.name), f"starting {info.name}", timeout=180.0)

    def stop(self, spec: VMSpec, *, force: bool = False, timeout: float = 30.0) -> None:
        info = self.info(spec)
        if info is None:
            return
        if info.vm_state == "saved":
            if force:  # forced down, the saved memory goes, as a powered-off VM's would
                self._vbox(vbm.discardstate(info.name), f"discarding the saved state of {info.name}")
            return
        if info.status.state is not VMState.RUNNING and info.vm_state != "paused":
            return
        if not force and info.vm_state != "paused" and self._graceful(spec, info.name, timeout):
            return
        self._poweroff(spec, info.name)

    def _graceful(self, spec: VMSpec, name: str, timeout: float) -> bool:
        """Press the ACPI power button until the guest is off or time runs out."""
        deadline = time.monotonic() + timeout
        next_press = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_press:
                result = run([self._binary(), *vbm.controlvm(name, "acpipowerbutton")[1:]], check=False)
                if result.returncode != 0 and not self._is_running(spec):
                    return True  # it went off between our look and the press
                next_press = time.monotonic() + _ACPI_REPEAT_S
            time.sleep(_POLL_S)
            if not self._is_running(spec):
                return True
        log.info("%s did not power off within %gs; pulling the plug", name, timeout)
        return False

    def _is_running(self, spec: VMSpec) -> bool:
        info = self.info(spec)
        return info is not None and info.status.state is VMState.RUNNING

    def _poweroff(self, spec: VMSpec, name: str) -> None:
        result = run([self._binary(), *vbm.controlvm(name, "poweroff")[1:]], check=False)
        if result.returncode != 0 and self._is_running(spec):
            raise DriverError(DRIVER, f"powering off {name}: {vbm.error_message(result.stderr)}")

    def delete(self, spec: VMSpec) -> None:
        info = self.info(spec)
        if info is not None:
            if info.status.state is VMState.RUNNING or info.vm_state == "paused":
                self._poweroff(spec, info.name)
            self._remove(spec, info.name)
        spec.data_disk.unlink(missing_ok=True)
        shutil.rmtree(self._basefolder(spec), ignore_errors=True)

    def _remove(self, spec: VMSpec, name: str, *, keep_disk: bool = False) -> None:
        """Unregister name and delete what VirtualBox made, never the user's ISOs."""
        # unregistervm --delete deletes attached media; detach the DVDs first so the
        # image in toolbox's cache and the config drive survive.
        detach = [(vbm.PORT_ISO, "dvddrive"), (vbm.PORT_CIDATA, "dvddrive")]
        if keep_disk:
            detach.append((vbm.PORT_DISK, "hdd"))
        for port, kind in detach:
            run([self._binary(), *vbm.storageattach(name, port, kind, "none")[1:]], check=False)
        self._vbox(vbm.unregistervm(name), f"unregistering {name}")
        # Forget the DVD images in VirtualBox's media registry, and the data disk if
        # unregistervm did not take it (it was never attached, say).
        for kind, path in (("dvd", spec.iso), ("dvd", spec.cidata)):
            run([self._binary(), *vbm.closemedium(kind, path)[1:]], check=False)
        if spec.data_disk.exists() and not keep_disk:
            run([self._binary(), *vbm.closemedium("disk", spec.data_disk, delete=True)[1:]], check=False)

    def status(self, spec: VMSpec) -> VMStatus:
        info = self.info(spec)
        return VMStatus(VMState.MISSING) if info is None else info.status

    def ssh_address(self, spec: VMSpec) -> tuple[str, int]:
        return ("127.0.0.1", spec.ssh_port)

    # -- Suspendable, Resettable ----------------------------------------------------------

    def suspend(self, spec: VMSpec) -> None:
        info = self._require(spec)
        if info.status.state is VMState.RUNNING or info.vm_state == "paused":
            self._vbox(vbm.controlvm(info.name, "savestate"), f"saving {info.name}", timeout=300.0)

    def resume(self, spec: VMSpec) -> None:
        self.start(spec)

    def reset(self, spec: VMSpec) -> None:
        info = self._require(spec)
        if info.status.state is not VMState.RUNNING:
            raise DriverError(DRIVER, f"{info.name} is {info.vm_state}; nothing to reset")
        self._vbox(vbm.controlvm(info.name, "reset"), f"resetting {info.name}")
