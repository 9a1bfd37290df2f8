"""The embedded DNS server of user-defined networks (Docker's 127.0.0.11, here on each
network's gateway address, port 53, UDP): it answers the names of the network's
containers (name, network aliases, short ID) and forwards every other query, unchanged,
to the asking container's upstream resolvers (its --dns, else the VM's own).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("toolbox_agent.network")

QTYPE_A, QTYPE_AAAA, QCLASS_IN = 1, 28, 1
RCODE_SERVFAIL, RCODE_FORMERR = 2, 1
TTL = 600
FORWARD_TIMEOUT = 3.0

# (source address, queried name) -> addresses if the name is a container's, else None
Lookup = Callable[[str, str], "list[str] | None"]
Upstreams = Callable[[str], "list[str]"]


@dataclass
class Question:
    id: int
    flags: int
    name: str  # lowercase, without the trailing dot
    qtype: int
    qclass: int
    end: int  # offset just past the question


def parse_query(data: bytes) -> Question:
    """The first question of a DNS query; ValueError when it is not one."""
    if len(data) < 12:
        raise ValueError("short message")
    qid, flags, qdcount = struct.unpack_from("!HHH", data)
    if flags & 0x8000 or qdcount < 1:
        raise ValueError("not a query")
    labels, pos = [], 12
    while True:
        if pos >= len(data):
            raise ValueError("truncated name")
        length = data[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(data[pos : pos + length].decode("ascii", errors="replace"))
        pos += length
    if pos + 4 > len(data):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    return Question(qid, flags, ".".join(labels).lower(), qtype, qclass, pos + 4)


def answer(query: bytes, q: Question, addresses: list[str]) -> bytes:
    """An authoritative answer: A records for an A query, no records (NODATA) otherwise."""
    records = list(addresses) if q.qtype == QTYPE_A and q.qclass == QCLASS_IN else []
    flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080  # QR, AA, RD as asked, RA
    out = struct.pack("!HHHHHH", q.id, flags, 1, len(records), 0, 0) + query[12 : q.end]
    for addr in records:
        out += struct.pack("!HHHIH", 0xC00C, QTYPE_A, QCLASS_IN, TTL, 4) + bytes(int(x) for x in addr.split("."))
    return out


def error(query: bytes, rcode: int) -> bytes:
    qid, flags = struct.unpack_from("!HH", query) if len(query) >= 4 else (0, 0)
    return struct.pack("!HHHHHH", qid, 0x8000 | (flags & 0x0100) | 0x0080 | rcode, 0, 0, 0, 0)


class _Forward(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)


async def forward(query: bytes, servers: list[str], port: int = 53, timeout: float = FORWARD_TIMEOUT) -> bytes | None:
    loop = asyncio.get_running_loop()
    for server in servers:
        transport, proto = await loop.create_datagram_endpoint(_Forward, remote_addr=(server, port))
        try:
            transport.sendto(query)
            return await asyncio.wait_for(proto.reply, timeout)
        except (asyncio.TimeoutError, OSError):
            continue
        finally:
            transport.close()
    return None


class DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, lookup: Lookup, upstreams: Upstreams, upstream_port: int = 53) -> None:
        self.lookup, self.upstreams, self.upstream_port = lookup, upstreams, upstream_port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        asyncio.ensure_future(self._handle(data, addr))

    async def _handle(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            q = parse_query(data)
        except ValueError:
            self._send(error(data, RCODE_FORMERR), addr)
            return
        found = self.lookup(addr[0], q.name)
        if found is not None:
            self._send(answer(data, q, found), addr)
            return
        reply = await forward(data, self.upstreams(addr[0]), self.upstream_port)
        self._send(reply if reply is not None else error(data, RCODE_SERVFAIL), addr)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)


class DnsServers:
    """One listener per user-defined network's gateway."""

    def __init__(self, lookup: Lookup, upstreams: Upstreams, port: int = 53) -> None:
        self.lookup, self.upstreams, self.port = lookup, upstreams, port
        self.upstream_port = 53
        self.listeners: dict[str, asyncio.DatagramTransport] = {}  # by address

    async def listen(self, address: str) -> None:
        if address in self.listeners:
            return
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: DnsProtocol(self.lookup, self.upstreams, self.upstream_port), local_addr=(address, self.port)
            )
        except OSError as exc:
            log.warning("embedded DNS on %s:%d: %s", address, self.port, exc)
            return
        self.listeners[address] = transport  # type: ignore[assignment]

    def close(self, address: str) -> None:
        transport = self.listeners.pop(address, None)
        if transport is not None:
            transport.close()
