"""A libvirtd for the test session: started by the fixture, stopped by its pids only.

    def test_x(libvirt_uri: str) -> None: ...   # "qemu:///system", a daemon answering

If a libvirtd already answers on the system socket (a developer's, or systemd's), the
tests use it and leave it running. Otherwise the fixture starts virtlogd and libvirtd
with pid files in a temporary directory and, at the end, stops exactly those two pids.
Skips where libvirtd is not installed, unless TOOLBOX_REQUIRE_E2E=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SYSTEM_SOCKET = Path("/run/libvirt/libvirt-sock")
SYSTEM_URI = "qemu:///system"


def _require(reason: str) -> None:
    if os.environ.get("TOOLBOX_REQUIRE_E2E") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _answers(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _stop(pid_file: Path) -> None:
    """SIGTERM the daemon named in pid_file (one we started) and wait for it to go."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _start(daemon: str, pid_file: Path) -> None:
    subprocess.run([daemon, "--daemon", "--pid-file", str(pid_file)], check=True, timeout=30)


@pytest.fixture(scope="session")
def libvirt_uri() -> Iterator[str]:
    libvirtd, virtlogd = shutil.which("libvirtd"), shutil.which("virtlogd")
    if libvirtd is None or virtlogd is None:
        _require("libvirtd is not installed (apt-get install libvirt-daemon-system)")
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    if _answers(SYSTEM_SOCKET):
        yield SYSTEM_URI  # someone else's daemon: use it, never stop it
        return
    if os.geteuid() != 0:
        _require("starting the system libvirtd needs root")
    assert libvirtd is not None and virtlogd is not None
    for d in ("/var/log/libvirt", "/run/libvirt"):
        os.makedirs(d, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tb-libvirtd-") as tmp:
        logd_pid, libvirtd_pid = Path(tmp) / "virtlogd.pid", Path(tmp) / "libvirtd.pid"
        try:
            _start(virtlogd, logd_pid)
            _start(libvirtd, libvirtd_pid)
            deadline = time.monotonic() + 30.0
            while not _answers(SYSTEM_SOCKET):
                if time.monotonic() > deadline:
                    _require("libvirtd did not open its socket within 30 s")
                time.sleep(0.2)
            yield SYSTEM_URI
        finally:
            _stop(libvirtd_pid)
            _stop(logd_pid)
