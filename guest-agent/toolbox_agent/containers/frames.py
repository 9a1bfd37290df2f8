"""Byte framings: Docker's multiplexed stream, and the shim's own socket protocol.

Docker (attach, logs, exec without a TTY): each frame is an 8-byte header
[stream, 0, 0, 0, size as uint32 big-endian] then the payload; stream 0 stdin,
1 stdout, 2 stderr. With a TTY the stream is raw bytes, no headers.

The shim's socket: a 5-byte header [kind, size as uint32 big-endian] then the payload.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

STDIN, STDOUT, STDERR = 0, 1, 2

# kinds on the shim socket
K_STDOUT = 1
K_STDERR = 2
K_EXIT = 3  # payload: JSON {"exit_code": n, "finished_at": "..."}
K_STDIN = 10  # payload: bytes for the container's stdin
K_STDIN_CLOSE = 11
K_RESIZE = 12  # payload: JSON {"h": rows, "w": cols}

_DOCKER = struct.Struct(">BxxxI")
_SHIM = struct.Struct(">BI")


def docker_frame(stream: int, data: bytes) -> bytes:
    return _DOCKER.pack(stream, len(data)) + data


def parse_docker_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split a whole multiplexed byte string into (stream, payload) (used by tests)."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        stream, size = _DOCKER.unpack_from(data, pos)
        out.append((stream, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size
    return out


SHIM_HEADER = _SHIM


def shim_frame(kind: int, data: bytes = b"") -> bytes:
    return _SHIM.pack(kind, len(data)) + data


async def read_shim_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next frame, or None at EOF."""
    import asyncio  # here, not at the top: the shim imports this module and must start fast

    try:
        head = await reader.readexactly(_SHIM.size)
        kind, size = _SHIM.unpack(head)
        return kind, (await reader.readexactly(size) if size else b"")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
