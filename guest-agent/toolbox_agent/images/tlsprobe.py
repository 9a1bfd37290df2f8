"""Does an insecure registry answer HTTPS with plain HTTP? Asked without loading ssl.

Docker tries an insecure registry over HTTPS (unverified) first, then over HTTP. Most
insecure registries speak only HTTP: the HTTPS try sends a TLS ClientHello and the server
answers `HTTP/1.1 400 Bad Request` (Go: "server gave HTTP response to HTTPS client").
Making that try with the ssl module costs the idle agent ~1 MB of libssl and _ssl (and
libcrypto, ~3.5 MB) for good, since a loaded library is never unloaded. So the same first
flight, a ClientHello, is sent by hand: a server that answers it with anything but a TLS
record (HTTP's 400, or Python's http.server's bare error page) gets the HTTP fallback at
once; a TLS record (a ServerHello, an alert) or no answer leads to the real handshake with
ssl, as before.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

# TLS 1.2 ClientHello pieces (RFC 5246, 8422, 8446): AES-GCM suites with ECDHE, x25519 and
# P-256, and the signature schemes to match. A real TLS server can answer these.
_SUITES = bytes.fromhex("c02b c02f c02c c030 009c 009d")
_GROUPS = bytes.fromhex("001d 0017")
_SIGNATURES = bytes.fromhex("0403 0804 0401 0503 0805 0501")
_RECORD_TYPES = range(20, 25)  # change_cipher_spec, alert, handshake, application_data, heartbeat


def _vec(data: bytes, width: int = 2) -> bytes:
    """A TLS vector: data behind its length in `width` bytes."""
    return len(data).to_bytes(width, "big") + data


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack(">H", kind) + _vec(data)


def client_hello(server_name: str) -> bytes:
    """One TLS record holding a ClientHello for server_name (SNI left out for an IP address).

    Its supported_groups extension (type 10, the byte 0x0a) ends the "request line" an
    HTTP server reads, so that server answers at once instead of waiting for a newline."""
    exts = _ext(10, _vec(_GROUPS)) + _ext(11, b"\x01\x00") + _ext(13, _vec(_SIGNATURES))
    try:
        ipaddress.ip_address(server_name)
    except ValueError:
        name = server_name.encode("idna")
        exts = _ext(0, _vec(b"\x00" + _vec(name))) + exts
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + _vec(_SUITES) + b"\x01\x00" + _vec(exts)
    handshake = b"\x01" + _vec(body, 3)
    return b"\x16\x03\x01" + _vec(handshake)


def refusal(sock: socket.socket, server_name: str) -> str:
    """Send a ClientHello on the connected sock; why the server does not speak TLS ("" when
    it may: it answered with a TLS record, or with nothing, which the real try will judge)."""
    sock.sendall(client_hello(server_name))
    head = b""
    while len(head) < 5:  # a TLS record's header, or the start of something else
        data = sock.recv(5 - len(head))
        if not data:
            break
        head += data
    if not head or (head[0] in _RECORD_TYPES and head[1:2] in (b"", b"\x03")):
        return ""
    if head.startswith(b"HTTP/"):
        return "http: server gave HTTP response to HTTPS client"  # Go's words, as Docker's
    return "tls: first record does not look like a TLS handshake"
