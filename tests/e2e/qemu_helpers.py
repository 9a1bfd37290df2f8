"""Helpers for the QemuDriver end-to-end tests (test_qemu_*.py)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from toolbox.drivers.base import VMSpec
from toolbox.instance import free_port  # noqa: F401  (tests import it from here)

IMAGE = Path(__file__).resolve().parents[2] / "vm-image" / "out"
BOOT_TIMEOUT = 180.0  # seconds from start to the guest's "ready" line, under TCG


def image_or_skip() -> Path:
    """vm-image/out, or skip (fail with TOOLBOX_REQUIRE_E2E=1) when it is not built."""
    if (IMAGE / "toolbox.iso").exists():
        return IMAGE
    if os.environ.get("TOOLBOX_REQUIRE_E2E") == "1":
        pytest.fail(f"{IMAGE}/toolbox.iso is missing; build it with: make -C vm-image")
    pytest.skip(f"{IMAGE}/toolbox.iso is missing (make -C vm-image)")
    raise AssertionError("unreachable: pytest.skip raises")



def write_minimal_cidata(path: Path) -> None:
    """A minimal config drive (ISO9660 + Joliet, label cidata): no user, no keys."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, vol_ident="cidata")
    data = b"e2e\n"
    iso.add_fp(io.BytesIO(data), len(data), "/HOSTNAME.;1", joliet_path="/hostname")
    iso.write(str(path))
    iso.close()


def wait_for_serial(vm: VMSpec, needle: str, timeout: float = BOOT_TIMEOUT) -> None:
    """Wait until `needle` appears on the guest's serial console, or fail showing its tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if vm.serial_log.exists() and needle in vm.serial_log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    tail = vm.serial_log.read_text(errors="replace")[-2000:] if vm.serial_log.exists() else "(no serial log)"
    pytest.fail(f"{needle!r} did not appear on the serial console within {timeout:g} s:\n{tail}")
