"""The daemonized QEMU process, found through its pid file.

A pid file can outlive its QEMU (kill -9, host crash) and the pid can then be reused by
an unrelated process, so a pid counts as "our QEMU" only while that process's command
line names this instance's QMP socket. Nothing here signals a process it has not
identified that way.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.run import run


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file`, or None when the file is missing or not a pid."""
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def is_our_qemu(pid: int, qmp_socket: Path) -> bool:
    """Whether `pid` is alive (not a zombie) and its command line names `qmp_socket`."""
    if not _alive(pid):
        return False
    cmdline = _cmdline(pid)
    return cmdline is not None and str(qmp_socket) in cmdline


def accel_of(pid: int) -> str | None:
    """The accelerator named by `-accel` on the process's command line, if any."""
    words = (_cmdline(pid) or "").split()
    for flag, value in zip(words, words[1:]):
        if flag == "-accel":
            return value.split(",")[0]
    return None


def wait_exit(pid: int, qmp_socket: Path, timeout: float) -> bool:
    """Poll until our QEMU `pid` is gone; True if it went within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while is_our_qemu(pid, qmp_socket):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def kill(pid: int, qmp_socket: Path) -> None:
    """SIGKILL `pid`, but only if it is still our QEMU."""
    if is_our_qemu(pid, qmp_socket):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else; _cmdline decides whether it is ours
    # A daemonized QEMU is reparented to pid 1; where pid 1 does not reap (containers),
    # a killed QEMU lingers as a zombie and must count as gone.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return True


def _cmdline(pid: int) -> str | None:
    proc = Path(f"/proc/{pid}/cmdline")
    if sys.platform.startswith("linux"):
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
    # macOS has no /proc: ask ps (its "command" column is the full argv).
    try:
        result = run(["ps", "-p", str(pid), "-o", "command="], check=False, timeout=5.0)
    except ToolboxError:
        return None
    return result.stdout if result.returncode == 0 else None
