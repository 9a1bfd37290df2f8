"""The host agent's forwarding: bytes and half-closes intact, socket mode 0600, start/stop."""

from __future__ import annotations

import socket
import stat
import threading
from pathlib import Path

from toolbox.hostagent.forward import Forwarder


class FakeChannel:
    """A paramiko.Channel stand-in over a socket (the calls pump_pair makes)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


class FakeLink:
    def __init__(self, guest: Path) -> None:
        self.guest = guest
        self.closed = False

    def open(self, path: str) -> FakeChannel:
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(self.guest))
        return FakeChannel(s)

    def close(self) -> None:
        self.closed = True


def _guest_server(path: Path) -> None:
    """Reads until the client's EOF, then answers (as attach does after stdin closes)."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        got = b""
        while chunk := conn.recv(65536):
            got += chunk
        conn.sendall(b"after-eof:" + got)
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()


def test_forwarder_keeps_half_close_and_bytes(tmp_path: Path) -> None:
    guest = tmp_path / "guest.sock"
    _guest_server(guest)
    local = tmp_path / "inst" / "docker.sock"
    local.parent.mkdir()
    fwd = Forwarder(local, "/run/toolbox/docker.sock", FakeLink(guest))  # type: ignore[arg-type]
    fwd.listen()
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert stat.S_IMODE(local.parent.stat().st_mode) == 0o700
    threading.Thread(target=fwd.serve_forever, daemon=True).start()
    payload = bytes(range(256)) * 1000
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(10)
        c.connect(str(local))
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := c.recv(65536):
            got += chunk
    assert got == b"after-eof:" + payload
    fwd.stop()
    assert not local.exists()


def test_host_agent_starts_stops_and_leaves_when_replaced(tmp_path: Path) -> None:
    import os
    import time

    from toolbox import hostagent

    key, host_key = tmp_path / "key", tmp_path / "host.pub"
    key.write_text("unused")
    host_key.write_text("ssh-ed25519 AAAA test\n")
    sock, pid_file, log_file = tmp_path / "docker.sock", tmp_path / "hostagent.pid", tmp_path / "hostagent.log"
    pid = hostagent.start(sock, pid_file, log_file, 1, key, host_key)  # no SSH there: it still serves
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and hostagent.read_pid(pid_file) == pid
        hostagent.stop(pid_file, sock)
        assert not sock.exists() and not pid_file.exists() and hostagent.read_pid(pid_file) is None
        pid = hostagent.start(sock, pid_file, log_file, 1, key, host_key)
        pid_file.write_text("1\n")  # another host agent took over: this one must leave
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            os.waitpid(pid, os.WNOHANG)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the replaced host agent did not exit")
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def test_answers_ping_only_for_200_ok(tmp_path: Path) -> None:
    """What `toolbox up` waits for through the host socket: 200 and the body OK, nothing less."""
    import socket as socketmod
    import threading

    from toolbox.hostagent import answers_ping

    def serve(path: Path, answer: bytes) -> None:
        listener = socketmod.socket(socketmod.AF_UNIX)
        listener.bind(str(path))
        listener.listen(1)

        def once() -> None:
            conn, _ = listener.accept()
            conn.recv(4096)
            conn.sendall(answer)
            conn.close()
            listener.close()
        threading.Thread(target=once, daemon=True).start()

    serve(tmp_path / "ok.sock", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    serve(tmp_path / "err.sock", b"HTTP/1.0 500 Internal Server Error\r\n\r\nOK")
    assert answers_ping(tmp_path / "ok.sock")
    assert not answers_ping(tmp_path / "err.sock")
    assert not answers_ping(tmp_path / "missing.sock")
