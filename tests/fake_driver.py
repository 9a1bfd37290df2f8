"""A Driver for CLI tests: keeps its 'VM' as a JSON file in the instance directory.

Environment knobs make it fail the way real hypervisors do: FAKE_MISSING=1 (tools not
installed), FAKE_FAIL_CREATE=1 (create fails after making the disk).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

from toolbox.drivers.base import DriverFeatures, VMSpec, VMState, VMStatus
from toolbox.errors import DriverError, ToolMissing


def _state_file(spec: VMSpec) -> Path:
    return spec.instance_dir / "fake-vm.json"


class FakeDriver:
    name: ClassVar[str] = "qemu"
    features: ClassVar[DriverFeatures] = DriverFeatures(
        direct_kernel_boot=True, suspend=False, share_type="9p", disk_format="qcow2"
    )

    def check_installed(self) -> None:
        if os.environ.get("FAKE_MISSING"):
            raise ToolMissing("qemu-system-x86_64", "apt-get install qemu-system-x86")

    def _write(self, spec: VMSpec, state: str, **extra: object) -> None:
        _state_file(spec).write_text(json.dumps({"state": state, "spec_port": spec.ssh_port, **extra}))

    def create(self, spec: VMSpec) -> None:
        spec.data_disk.write_bytes(b"disk")
        if os.environ.get("FAKE_FAIL_CREATE"):
            raise DriverError(self.name, "create failed on purpose")
        self._write(spec, "stopped", iso=str(spec.iso))

    def reconfigure(self, spec: VMSpec) -> None:
        self._write(spec, "stopped", iso=str(spec.iso), mounts=[m.tag for m in spec.mounts])

    def start(self, spec: VMSpec) -> None:
        self._write(spec, "running", iso=str(spec.iso), accel=spec.accel)

    def stop(self, spec: VMSpec, *, force: bool = False, timeout: float = 30.0) -> None:
        if _state_file(spec).exists():
            self._write(spec, "stopped", iso=str(spec.iso), forced=force)

    def delete(self, spec: VMSpec) -> None:
        _state_file(spec).unlink(missing_ok=True)
        spec.data_disk.unlink(missing_ok=True)

    def status(self, spec: VMSpec) -> VMStatus:
        try:
            return VMStatus(VMState(json.loads(_state_file(spec).read_text())["state"]))
        except FileNotFoundError:
            return VMStatus(VMState.MISSING)

    def ssh_address(self, spec: VMSpec) -> tuple[str, int]:
        return ("127.0.0.1", spec.ssh_port)
