"""Carry each connection to a host unix socket over one SSH connection to a guest socket.

Threads, because paramiko is threaded: one accept loop, and per connection one thread
each way. Bytes pass untouched and half-closes pass on: EOF from the local client becomes
`channel.shutdown_write()`, EOF from the guest becomes `socket.shutdown(SHUT_WR)`; the
pair is closed when both directions are done. The SSH connection is made again when it
has dropped (the VM rebooted, the host slept): by the port watcher within a second
(portwatch.py), or on the next client connection, whichever comes first.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from toolbox.errors import GuestSocketRefused, SSHError
from toolbox.ssh import open_unix_socket

log = logging.getLogger("toolbox.hostagent")
CHUNK = 64 * 1024
WARN_EVERY = 5.0  # seconds between repeats of "cannot reach the guest socket"

Connector = Callable[[], paramiko.SSHClient]


class SSHLink:
    """The one SSH connection, made again on demand when it is gone.

    `generation` counts the connections made, so a watcher can tell a new one (and redo
    what a connection carries: the events subscription, the clock) from the same one.
    """

    def __init__(self, connect: Connector) -> None:
        self._connect = connect
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self.generation = 0

    def transport(self) -> paramiko.Transport:
        with self._lock:
            t = self._client.get_transport() if self._client is not None else None
            if t is None or not t.is_active():
                if self._client is not None:
                    self._client.close()
                    self._client = None
                    log.info("SSH connection lost; connecting again")
                self._client = self._connect()
                self.generation += 1
                t = self._client.get_transport()
                if t is None:
                    raise SSHError("no SSH transport after connecting")
            return t

    def connected(self) -> bool:
        t = self._client.get_transport() if self._client is not None else None
        return t is not None and t.is_active()

    def open(self, guest_path: str) -> paramiko.Channel:
        """A channel to the unix socket `guest_path` in the guest."""
        return self._retrying(lambda t: open_unix_socket(t, guest_path))

    def open_tcp(self, port: int, origin: tuple[str, int]) -> paramiko.Channel:
        """A channel to 127.0.0.1:`port` in the guest (direct-tcpip, as `ssh -L` opens)."""
        return self._retrying(lambda t: t.open_channel("direct-tcpip", ("127.0.0.1", port), origin, timeout=10.0))

    def _retrying(self, opener: Callable[[paramiko.Transport], paramiko.Channel]) -> paramiko.Channel:
        t = self.transport()
        try:
            return opener(t)
        except (paramiko.ChannelException, GuestSocketRefused):
            raise  # the guest refused this one channel (nothing listens there): the link is fine
        except (SSHError, OSError, EOFError, paramiko.SSHException):
            # one more try on a fresh connection: the old one may have died silently
            with self._lock:
                if self._client is not None and self._client.get_transport() is t:
                    self._client.close()
                    self._client = None
            return opener(self.transport())

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def pump_pair(sock: socket.socket, chan: paramiko.Channel) -> None:
    """Copy both ways until both sides have said EOF, then close both."""
    done = threading.Event()
    remaining = [2]
    lock = threading.Lock()

    def finished() -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    def local_to_guest() -> None:
        try:
            while data := sock.recv(CHUNK):
                chan.sendall(data)
            chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            _close_both(sock, chan)
        finally:
            finished()

    def guest_to_local() -> None:
        try:
            while data := chan.recv(CHUNK):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (OSError, EOFError, paramiko.SSHException):
            _close_both(sock, chan)
        finally:
            finished()

    threading.Thread(target=local_to_guest, daemon=True).start()
    guest_to_local()
    done.wait()
    _close_both(sock, chan)


def _close_both(sock: socket.socket, chan: paramiko.Channel) -> None:
    for closer in (sock.close, chan.close):
        try:
            closer()
        except (OSError, EOFError, paramiko.SSHException):
            pass


class Forwarder:
    def __init__(self, local_path: Path, guest_path: str, link: SSHLink) -> None:
        self.local_path, self.guest_path, self.link = local_path, guest_path, link
        self._listener: socket.socket | None = None
        self._warned = -WARN_EVERY

    def listen(self) -> None:
        """Bind the socket, mode 0600 in a 0700 directory (only the user may use docker)."""
        os.chmod(self.local_path.parent, 0o700)
        if self.local_path.exists() or self.local_path.is_symlink():
            self.local_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(self.local_path))
        finally:
            os.umask(old)
        os.chmod(self.local_path, 0o600)
        # A burst of clients (docker compose, CI fan-out) must queue, not get EAGAIN from
        # connect(2): Docker's daemon listens with the kernel's maximum backlog too.
        listener.listen(socket.SOMAXCONN)
        self._listener = listener

    def serve_forever(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            chan = self.link.open(self.guest_path)
        except (SSHError, OSError, EOFError, paramiko.SSHException) as exc:
            # While the guest agent starts, `toolbox up` asks /_ping every 0.1 s: one line
            # every few seconds says the same.
            now = time.monotonic()
            if now - self._warned > WARN_EVERY:
                self._warned = now
                log.warning("cannot reach the guest socket %s: %s", self.guest_path, exc)
            conn.close()
            return
        pump_pair(conn, chan)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        try:
            self.local_path.unlink()
        except FileNotFoundError:
            pass
        self.link.close()
