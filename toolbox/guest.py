"""Reaching a booted guest: an SSH login with the pinned host key, the guest agent's
/_ping (over that login, or through the host agent's docker.sock), the host agent's start
and stop, and the guest agent's log when it does not answer. instance.py's up, resume and
restart wait through these; doctor and info log in with connect()."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from toolbox.config import InstanceConfig
from toolbox.errors import GuestTimeout, SSHError, ToolboxError
from toolbox.paths import InstancePaths

if TYPE_CHECKING:
    import paramiko

GUEST_DOCKER_SOCKET = "/run/toolbox/docker.sock"
GUEST_AGENT_LOG = "/var/log/toolbox-agent.log"  # a link to the data disk's copy (vm-image init)
AGENT_TIMEOUT = 90.0
AGENT_POLL = 0.2  # seconds between /_ping tries: each is one channel on the open SSH connection
SOCKET_POLL = 0.2  # seconds between /_ping tries through the host agent's socket (each a
# channel the guest's sshd serves while the agent starts: no faster)


def connect(paths: InstancePaths, cfg: InstanceConfig, timeout: float = 10.0) -> paramiko.SSHClient:
    """An SSH client to the running instance (instance key, pinned host key)."""
    from toolbox import ssh

    return ssh.connect("127.0.0.1", cfg.ssh_port, paths.ssh_key, paths.host_pubkey, timeout=timeout)


def wait_for_agent(client: paramiko.SSHClient, timeout: float = AGENT_TIMEOUT) -> None:
    """Until the guest agent answers GET /_ping on its socket with OK."""
    from toolbox import ssh

    transport = client.get_transport()
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline and transport is not None:
        try:
            code, body = ssh.http_get_unix(transport, GUEST_DOCKER_SOCKET, "/_ping")
            if code == 200 and body.strip() == b"OK":
                return
            last = f"HTTP {code}"
        except SSHError as exc:
            last = exc.message
        time.sleep(AGENT_POLL)
    raise GuestTimeout(f"the guest agent did not answer /_ping within {timeout:g} s ({last}){agent_log_tail(client)}",
                       hint=f"look inside with: toolbox ssh -- tail -n 100 {GUEST_AGENT_LOG}, "
                            "or see the console with: toolbox logs")


def agent_log_tail(client: paramiko.SSHClient, lines: int = 15) -> str:
    """The end of the guest agent's log, to show why it did not answer (best effort)."""
    from toolbox import ssh

    try:
        code, out, _ = ssh.run(client, f"tail -n {lines} {GUEST_AGENT_LOG}", timeout=10.0)
    except SSHError:
        return ""
    return f"; the agent's log ends:\n{out.rstrip()}" if code == 0 and out.strip() else ""


def start_host_agent(paths: InstancePaths, cfg: InstanceConfig, boot_timeout: float = 0.0) -> None:
    """Start the one process per running VM that serves paths.docker_socket over SSH
    (`boot_timeout` > 0: the VM is booting, its first login waits for the guest's sshd)."""
    from toolbox import hostagent

    paths.check_socket_path(paths.docker_socket)
    hostagent.start(paths.docker_socket, paths.hostagent_pid, paths.hostagent_log,
                    cfg.ssh_port, paths.ssh_key, paths.host_pubkey, state_file=paths.hostagent_state,
                    boot_timeout=boot_timeout)


def wait_for_docker_socket(paths: InstancePaths, alive: Callable[[], None], timeout: float = AGENT_TIMEOUT) -> None:
    """Until the guest agent answers /_ping through the host agent's socket: then a docker
    command works. On a fresh boot the host agent's login is the only one, so its report
    says whether the guest's host key was refused. `alive()` is asked every second (the
    VM still runs), and the host agent must still be there."""
    from toolbox import hostagent
    from toolbox.hostagent.report import read as read_report

    deadline = time.monotonic() + timeout
    asked = 0.0
    while time.monotonic() < deadline:
        if hostagent.answers_ping(paths.docker_socket):
            return
        if time.monotonic() - asked >= 1.0:
            asked = time.monotonic()
            alive()
            link = read_report(paths.hostagent_state).get("ssh") or {}
            if link.get("refused_host_key"):
                raise SSHError(str(link.get("error")), hint=link.get("hint"))
            if hostagent.read_pid(paths.hostagent_pid) is None:
                raise ToolboxError(f"the host agent exited while the guest booted (see {paths.hostagent_log})")
        time.sleep(SOCKET_POLL)
    raise GuestTimeout(f"the guest agent did not answer /_ping through {paths.docker_socket} within {timeout:g} s",
                       hint=f"look inside with: toolbox ssh -- tail -n 100 {GUEST_AGENT_LOG}; see {paths.hostagent_log}, "
                            "and the console with: toolbox logs")


def stop_host_agent(paths: InstancePaths) -> None:
    """Stop the host agent started by start_host_agent (pid in paths.hostagent_pid)."""
    from toolbox import hostagent

    hostagent.stop(paths.hostagent_pid, paths.docker_socket)


def agent_log_tail_now(paths: InstancePaths, cfg: InstanceConfig) -> str:
    """agent_log_tail over a login of its own (up's wait has none open): best effort."""
    try:
        client = connect(paths, cfg)
    except SSHError:
        return ""
    try:
        return agent_log_tail(client)
    finally:
        client.close()
