"""ssh.py against the system OpenSSH server, run as a user-level sshd on a loopback port.

No VM needed: this checks key-only login, host key pinning, command exit statuses, and
the direct-streamlocal channel to a unix socket (what reaches the guest agent).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolbox import ssh
from toolbox.errors import GuestTimeout, HostKeyMismatch, SSHError
from toolbox.keys import generate_ed25519, write_keypair
from toolbox.instance import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(not Path(SSHD).exists() or os.geteuid() != 0, reason="needs openssh-server, as root")
USER = "root"  # the test sshd logs in the user running the tests



class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        host = generate_ed25519("test-host")
        write_keypair(host, root / "host_key", root / "host_key.pub")
        self.host_pub = root / "host_key.pub"
        login = generate_ed25519("test-login")
        write_keypair(login, root / "id", root / "id.pub")
        self.key = root / "id"
        (root / "authorized_keys").write_text(login.public_openssh + "\n")
        self.config = root / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\n"
            f"AuthorizedKeysFile {root}/authorized_keys\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\n"
            f"UsePAM no\nPidFile {root}/sshd.pid\nAllowStreamLocalForwarding yes\n"
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    srv = Server(tmp_path_factory.mktemp("sshd"))
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(srv.config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield srv
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_runs_commands_with_exit_status(server: Server) -> None:
    client = ssh.connect("127.0.0.1", server.port, server.key, server.host_pub, user=USER)
    try:
        assert ssh.run(client, "echo hi; echo err >&2; exit 3") == (3, "hi\n", "err\n")
    finally:
        client.close()


def test_exec_command_returns_remote_status(server: Server, capfd: pytest.CaptureFixture[str]) -> None:
    client = ssh.connect("127.0.0.1", server.port, server.key, server.host_pub, user=USER)
    try:
        assert ssh.exec_command(client, "echo out; exit 7") == 7
    finally:
        client.close()
    assert "out" in capfd.readouterr().out


def test_other_host_key_is_refused(server: Server, tmp_path: Path) -> None:
    other = generate_ed25519("impostor")
    (tmp_path / "pinned.pub").write_text(other.public_openssh)
    with pytest.raises(HostKeyMismatch) as err:
        ssh.connect("127.0.0.1", server.port, server.key, tmp_path / "pinned.pub", user=USER)
    assert "refusing" in err.value.message
    # wait_for_ssh must not retry past a mismatch
    with pytest.raises(HostKeyMismatch):
        ssh.wait_for_ssh("127.0.0.1", server.port, server.key, tmp_path / "pinned.pub", 30, user=USER)


def test_wrong_login_key_is_refused_without_password(server: Server, tmp_path: Path) -> None:
    wrong = generate_ed25519("wrong")
    write_keypair(wrong, tmp_path / "k", tmp_path / "k.pub")
    with pytest.raises(SSHError, match="refused the instance key"):
        ssh.connect("127.0.0.1", server.port, tmp_path / "k", server.host_pub, user=USER)


def test_wait_for_ssh_times_out_on_closed_port(server: Server) -> None:
    with pytest.raises(GuestTimeout):
        ssh.wait_for_ssh("127.0.0.1", free_port(), server.key, server.host_pub, 1.5, user=USER)


def _serve_ping(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(4)

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK")

    threading.Thread(target=loop, daemon=True).start()
    return listener


def test_unix_socket_channel(server: Server, tmp_path: Path) -> None:
    sock_path = tmp_path / "agent.sock"
    listener = _serve_ping(sock_path)
    client = ssh.connect("127.0.0.1", server.port, server.key, server.host_pub, user=USER)
    try:
        transport = client.get_transport()
        assert transport is not None
        assert ssh.http_get_unix(transport, str(sock_path), "/_ping") == (200, b"OK")
        with pytest.raises(SSHError, match="refused"):
            ssh.open_unix_socket(transport, str(tmp_path / "nothing.sock"))
        # the transport is still usable after a refused channel
        assert ssh.run(client, "true")[0] == 0
    finally:
        client.close()
        listener.close()


def test_agent_timeout_shows_the_end_of_the_agents_log(server: Server, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No agent on the socket: the error says so and quotes the agent's log, read over SSH."""
    from toolbox import guest

    log = tmp_path / "toolbox-agent.log"
    log.write_text("".join(f"line {i}\n" for i in range(40)) + "OSError: the data disk is full\n")
    monkeypatch.setattr(guest, "GUEST_DOCKER_SOCKET", str(tmp_path / "docker.sock"))
    monkeypatch.setattr(guest, "GUEST_AGENT_LOG", str(log))
    client = ssh.connect("127.0.0.1", server.port, server.key, server.host_pub, user=USER)
    try:
        with pytest.raises(GuestTimeout) as err:
            guest.wait_for_agent(client, timeout=1.0)
    finally:
        client.close()
    message = err.value.message
    assert "did not answer /_ping within 1 s" in message and "is the agent running?" in message
    assert message.endswith("the agent's log ends:\n" + "\n".join(f"line {i}" for i in range(26, 40))
                            + "\nOSError: the data disk is full")


def test_ssh_config_block(tmp_path: Path) -> None:
    block = ssh.ssh_config_block("toolbox-x", 2222, tmp_path / "id", tmp_path / "known_hosts")
    assert "StrictHostKeyChecking yes" in block and "IdentitiesOnly yes" in block and "Port 2222" in block
