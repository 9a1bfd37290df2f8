"""HTTP/1.1 over a unix socket: enough of it for the Docker Engine API.

Plain requests and streamed bodies (chunked pull progress, logs -f) go through
http.client with a unix-socket connect. The hijack (attach, exec start) is written by
hand: http.client reads the response through a buffer, which would swallow the first
bytes of the raw stream that follows the `101 UPGRADED` headers.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

API_PREFIX = "/v1.43"  # an API version the guest agent and docker CLI 28 both speak
Query = Mapping[str, "str | int | bool | None"]


class Unreachable(Exception):
    """The socket is missing or refuses: the caller turns it into EngineUnreachable."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = _connect(self._path, self.timeout)


def _connect(path: str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise Unreachable(exc.strerror or str(exc)) from exc
    return sock


def url(path: str, query: Query | None = None) -> str:
    """The request target: the versioned path, then the query without None values;
    booleans as 1/0 as the docker CLI sends them."""
    pairs = {k: (int(v) if isinstance(v, bool) else v) for k, v in (query or {}).items() if v is not None}
    return API_PREFIX + path + (("?" + urlencode(pairs)) if pairs else "")


def quoted(name: str) -> str:
    """A path segment (a container or image reference may hold '/' and ':')."""
    return quote(name, safe="/:@")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    raw: http.client.HTTPResponse
    conn: http.client.HTTPConnection

    def body(self) -> bytes:
        try:
            return self.raw.read()
        finally:
            self.conn.close()

    def json(self) -> Any:
        data = self.body()
        return json.loads(data) if data else None

    def chunks(self, size: int = 65536) -> Iterator[bytes]:
        """The body as it arrives (read1 returns what is there, without waiting for `size`)."""
        try:
            while data := self.raw.read1(size):
                yield data
        finally:
            self.conn.close()

    def lines(self) -> Iterator[bytes]:
        try:
            while line := self.raw.readline():
                yield line
        finally:
            self.conn.close()


def request(sock_path: str, method: str, target: str, *, body: Any = None, raw_body: bytes | None = None,
            headers: Mapping[str, str] | None = None, timeout: float | None = 60.0) -> Response:
    """Send one request; the response is returned unread (the caller reads or streams it)."""
    conn = _UnixConnection(sock_path, timeout)
    hdrs = dict(headers or {})
    data = raw_body
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    try:
        conn.request(method, target, body=data, headers=hdrs)
        raw = conn.getresponse()
    except Unreachable:
        conn.close()
        raise
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise Unreachable(f"the connection failed ({exc})") from exc
    return Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, raw, conn)


@dataclass
class Hijacked:
    """A connection the engine handed over after the headers: raw (TTY) or framed bytes."""

    sock: socket.socket
    status: int
    headers: dict[str, str]
    leftover: bytes  # body bytes read together with the headers (an error's JSON)


def hijack(sock_path: str, target: str, body: Any | None) -> Hijacked:
    """POST with `Upgrade: tcp` and return the socket once the headers are read."""
    sock = _connect(sock_path, None)
    payload = b"" if body is None else json.dumps(body).encode()
    kind = "Content-Type: application/json\r\n" if payload else ""
    head = (f"POST {target} HTTP/1.1\r\nHost: localhost\r\n{kind}"
            f"Content-Length: {len(payload)}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
    try:
        sock.sendall(head.encode() + payload)
        raw = _read_head(sock)
    except OSError as exc:
        sock.close()
        raise Unreachable(f"the connection failed ({exc})") from exc
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    leftover = b""
    if status >= 400:  # an error has an ordinary body: read it whole
        length = int(headers.get("content-length", "0") or 0)
        while len(leftover) < length and (more := sock.recv(length - len(leftover))):
            leftover += more
    return Hijacked(sock, status, headers, leftover)


def _read_head(sock: socket.socket) -> bytes:
    """Read exactly the status line and headers, leaving the stream's bytes in the socket:
    peek, find the blank line, then take only that much."""
    seen = b""
    while True:
        peek = sock.recv(65536, socket.MSG_PEEK)
        if not peek:
            raise OSError("the engine closed the connection before answering")
        end = peek.find(b"\r\n\r\n")
        if end >= 0:
            seen += _recv_exact(sock, end + 4)
            return seen[:-4]
        if len(peek) > 65000:
            raise OSError("response headers too long")
        seen += _recv_exact(sock, max(len(peek) - 3, 1))  # keep a possible partial "\r\n\r"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            raise OSError("the engine closed the connection before answering")
        out += data
    return out
