"""The host agent: one process per running instance that serves ~/.toolbox/<name>/docker.sock
and carries each connection over SSH to the guest agent's socket (see forward.py).

`start` and `stop` are what `toolbox up` and `toolbox down` call.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.run import spawn

GUEST_SOCKET = "/run/toolbox/docker.sock"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def read_pid(pid_file: Path) -> int | None:
    """The pid in the file if that process is alive, else None."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start(socket_path: Path, pid_file: Path, log_file: Path, ssh_port: int, key: Path, host_key: Path,
          state_file: Path | None = None, boot_timeout: float = 0.0) -> int:
    """Start the host agent (replacing a running one) and wait until its socket is there.

    `boot_timeout` > 0: the VM is still booting; the agent's first login waits up to that
    long for the guest's sshd (it is started with the VM, so it is ready with the guest)."""
    stop(pid_file, socket_path)
    argv = [sys.executable, "-m", "toolbox.hostagent", "--socket", str(socket_path), "--ssh-port", str(ssh_port),
            "--key", str(key), "--host-key", str(host_key), "--guest-socket", GUEST_SOCKET,
            "--pid-file", str(pid_file)]  # fmt: skip
    if state_file is not None:
        argv += ["--state-file", str(state_file)]
    if boot_timeout > 0:
        argv += ["--boot-timeout", f"{boot_timeout:g}"]
    proc = spawn(argv, stdout=log_file)
    pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if socket_path.exists():
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise ToolboxError(f"the host agent did not start (see {log_file})")


def answers_ping(path: Path, timeout: float = 5.0) -> bool:
    """Whether GET /_ping through the docker socket `path` answers 200 OK now."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: toolbox\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    except OSError:
        return False
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b" ", 2)[1:2] == [b"200"] and body.strip() == b"OK"


def stop(pid_file: Path, socket_path: Path | None = None) -> None:
    """Stop the host agent named by the pid file (SIGTERM, then SIGKILL); idempotent."""
    pid = read_pid(pid_file)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and read_pid(pid_file) is not None:
            _reap(pid)
            time.sleep(0.05)
        if read_pid(pid_file) is not None:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
    pid_file.unlink(missing_ok=True)
    if socket_path is not None:
        socket_path.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
