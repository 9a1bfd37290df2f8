"""HTTP to the guest agent over a channel of the SSH link: the few requests the host agent
makes of its own (the ports snapshot, the events stream, the clock, a UDP stream).

HTTP/1.0, so every answer ends with the connection and no chunked decoding is needed;
the hijack asks for HTTP/1.1's `Upgrade: tcp`, as the docker CLI does for attach.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any, Protocol

import paramiko

from toolbox.errors import SSHError

MAX_HEAD = 64 * 1024
CHANNEL_ERRORS = (OSError, EOFError, paramiko.SSHException, SSHError)


class Opener(Protocol):
    def open(self, guest_path: str) -> paramiko.Channel: ...


class GuestHTTP:
    """Requests to the guest agent's socket, each on a fresh channel of the link."""

    def __init__(self, link: Opener, guest_socket: str) -> None:
        self.link, self.guest_socket = link, guest_socket

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """(status, parsed JSON or None) of one request; SSHError when the guest is unreachable."""
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.0\r\nHost: toolbox\r\nContent-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        chan = self._open(timeout)
        try:
            chan.sendall(head.encode() + b"\r\n" + data)
            status, rest = read_head(chan)
            while chunk := chan.recv(65536):
                rest += chunk
        except (socket.timeout, *CHANNEL_ERRORS) as exc:
            raise SSHError(f"{method} {path} on the guest agent failed: {exc or type(exc).__name__}") from None
        finally:
            chan.close()
        try:
            return status, json.loads(rest) if rest.strip() else None
        except ValueError:
            return status, None

    def stream(self, path: str, idle: float) -> tuple[paramiko.Channel, Iterator[bytes | None]]:
        """GET a streamed answer: the channel and its lines; None when nothing came for `idle` s."""
        chan = self._open(10.0)
        try:
            chan.sendall(f"GET {path} HTTP/1.0\r\nHost: toolbox\r\n\r\n".encode())
            status, rest = read_head(chan)
        except (socket.timeout, *CHANNEL_ERRORS) as exc:
            chan.close()
            raise SSHError(f"GET {path} on the guest agent failed: {exc or type(exc).__name__}") from None
        if status != 200:
            chan.close()
            raise SSHError(f"GET {path} on the guest agent answered {status}")
        chan.settimeout(idle)
        return chan, _lines(chan, rest)

    def hijack(self, path: str) -> tuple[paramiko.Channel, bytes]:
        """POST with `Upgrade: tcp`; the raw channel and what already came after the head."""
        chan = self._open(10.0)
        try:
            chan.sendall(f"POST {path} HTTP/1.1\r\nHost: toolbox\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                         "Content-Length: 0\r\n\r\n".encode())  # fmt: skip
            status, rest = read_head(chan)
        except (socket.timeout, *CHANNEL_ERRORS) as exc:
            chan.close()
            raise SSHError(f"POST {path} on the guest agent failed: {exc or type(exc).__name__}") from None
        if status not in (101, 200):
            chan.close()
            raise SSHError(f"POST {path} on the guest agent answered {status}")
        chan.settimeout(None)
        return chan, rest

    def _open(self, timeout: float) -> paramiko.Channel:
        chan = self.link.open(self.guest_socket)
        chan.settimeout(timeout)
        return chan


def read_head(chan: paramiko.Channel) -> tuple[int, bytes]:
    """(status code, the bytes after the head) of an HTTP answer."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = chan.recv(4096)
        if not chunk:
            raise SSHError("the guest agent closed the connection before answering")
        buf += chunk
        if len(buf) > MAX_HEAD:
            raise SSHError("the guest agent's answer has no end of headers")
    head, _, rest = buf.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), rest
    except (IndexError, ValueError):
        raise SSHError("the guest agent's answer is not HTTP") from None


def _lines(chan: paramiko.Channel, pending: bytes) -> Iterator[bytes | None]:
    while True:
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            if line.strip():
                yield line
        try:
            chunk = chan.recv(65536)
        except socket.timeout:
            yield None
            continue
        if not chunk:
            return
        pending += chunk
