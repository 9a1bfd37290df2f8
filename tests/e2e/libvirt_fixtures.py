"""A private libvirtd for the test session, which nothing outside the session can stop.

    def test_x(libvirt_uri: str) -> None: ...   # qemu:///system?socket=/tmp/tb-libvirtd-XXXX/sock/libvirt-sock

The fixture never uses a libvirtd that happens to answer (a developer's, systemd's, a
benchmark's): another program could stop that one mid-run. It starts virtlogd and libvirtd
in a mount namespace of their own (unshare -m) where the system daemon's directories
(/run/libvirt, /var/lib/libvirt, /etc/libvirt, /var/cache/libvirt) are empty directories of
a temporary one, so the two daemons share no socket, pid lock, state or domain definition.
libvirtd's configuration (a copy of the host's top-level *.conf, no domains or networks)
puts its sockets in that temporary directory, outside the namespace's private mounts, and
the URI names the socket. /var/log/libvirt stays the host's: the tests check that toolbox
deletes the domain's QEMU log there. At the end the fixture stops exactly its two pids.
Needs root (a system daemon, a mount namespace). Skips where libvirtd is not installed,
unless TOOLBOX_REQUIRE_E2E=1.
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

PRIVATE = {"run": "/run/libvirt", "lib": "/var/lib/libvirt", "etc": "/etc/libvirt", "cache": "/var/cache/libvirt"}
CONFIG = """
unix_sock_dir = "{sock}"
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
"""


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


def _stop(pid: int | None) -> None:
    """SIGTERM a daemon we started and wait for it to go (SIGKILL after 15 s)."""
    if pid is None:
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


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _prepare(tmp: Path) -> Path:
    """The private directories and libvirtd's configuration; returns the config file."""
    for name, target in PRIVATE.items():
        (tmp / name).mkdir()
        os.makedirs(target, exist_ok=True)  # a mount point must exist on the host
    for conf in Path("/etc/libvirt").glob("*.conf"):
        shutil.copy2(conf, tmp / "etc" / conf.name)
    (tmp / "sock").mkdir(mode=0o700)
    config = tmp / "etc" / "libvirtd.conf"
    with config.open("a") as f:
        f.write(CONFIG.format(sock=tmp / "sock"))
    return config


def _launch(tmp: Path, config: Path) -> subprocess.Popen[bytes]:
    """unshare -m, bind the private directories, start virtlogd, exec libvirtd (the Popen's pid)."""
    binds = " && ".join(f"mount --bind {tmp / name} {target}" for name, target in PRIVATE.items())
    script = (f"mount --make-rprivate / && {binds} && virtlogd --daemon --pid-file {tmp / 'virtlogd.pid'} && "
              f"exec libvirtd --config {config} --pid-file {tmp / 'libvirtd.pid'}")  # fmt: skip
    log = open(tmp / "libvirtd.log", "wb")  # noqa: SIM115 - the daemon keeps it
    return subprocess.Popen(["unshare", "--mount", "--", "sh", "-c", script], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


@pytest.fixture(scope="session")
def libvirt_uri() -> Iterator[str]:
    if shutil.which("libvirtd") is None or shutil.which("virtlogd") is None:
        _require("libvirtd is not installed (apt-get install libvirt-daemon-system)")
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    if os.geteuid() != 0:
        _require("a private system libvirtd needs root (a mount namespace, QEMU as root)")
    with tempfile.TemporaryDirectory(prefix="tb-libvirtd-", dir="/tmp") as name:  # short: a unix socket path
        tmp = Path(name)
        daemon = _launch(tmp, _prepare(tmp))
        sock = tmp / "sock" / "libvirt-sock"
        try:
            deadline = time.monotonic() + 60.0
            while not _answers(sock):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    _require(f"our libvirtd did not open {sock}: {(tmp / 'libvirtd.log').read_text(errors='replace')[-2000:]}")
                time.sleep(0.2)
            yield f"qemu:///system?socket={sock}"
        finally:
            _stop(daemon.pid)
            daemon.wait(30)
            _stop(_pid_in(tmp / "virtlogd.pid"))
