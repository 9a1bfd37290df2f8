"""POST /toolbox/v1/udp/{port}: a hijacked stream from the host agent that carries UDP
datagrams to 127.0.0.1:<port> in the VM (where a published UDP port answers) and the
replies back, so a published UDP port also answers on the host's loopback.

SSH carries streams, not datagrams, so the host agent opens one such stream per published
port and frames each datagram on it, both ways: a 2-byte big-endian payload length, a
4-byte client id, the payload. The host agent picks one client id per host client address;
here each id gets its own UDP socket connected to the port, so the server's replies arrive
on that socket and go back framed with that id to the right client. A flow idle for
IDLE_SECONDS is forgotten, as a NAT forgets one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable

from toolbox_agent.http import ApiError, Hijack, Request, Response, Route

log = logging.getLogger("toolbox_agent.udp")
FRAME = struct.Struct("!HI")  # payload length, client id
IDLE_SECONDS = 120.0
RELAY_HOST = "127.0.0.1"


class _Flow(asyncio.DatagramProtocol):
    """One host client's socket in the VM: what the server answers goes back to it."""

    def __init__(self, client: int, reply: Callable[[int, bytes], None]) -> None:
        self.client, self.reply = client, reply
        self.transport: asyncio.DatagramTransport | None = None
        self.last_used = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.reply(self.client, data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable (nothing listens yet): UDP drops the datagram, so do we


async def relay(port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Carry frames until the host agent closes the stream; then close every flow."""
    loop = asyncio.get_running_loop()
    flows: dict[int, _Flow] = {}

    def reply(client: int, data: bytes) -> None:
        if not writer.is_closing():
            writer.write(FRAME.pack(len(data), client) + data)

    try:
        while True:
            length, client = FRAME.unpack(await reader.readexactly(FRAME.size))
            data = await reader.readexactly(length)
            flow = flows.get(client)
            if flow is None or flow.transport is None or flow.transport.is_closing():
                _, flow = await loop.create_datagram_endpoint(lambda: _Flow(client, reply), remote_addr=(RELAY_HOST, port))
                flows[client] = flow
            flow.last_used = loop.time()
            assert flow.transport is not None
            flow.transport.sendto(data)
            _forget_idle(flows, loop.time())
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the host agent went away (or reconnects): its clients' flows end here
    finally:
        for flow in flows.values():
            if flow.transport is not None:
                flow.transport.close()
        with contextlib.suppress(ConnectionError, RuntimeError, OSError):
            writer.close()


def _forget_idle(flows: dict[int, _Flow], now: float) -> None:
    for client, flow in list(flows.items()):
        if now - flow.last_used > IDLE_SECONDS:
            if flow.transport is not None:
                flow.transport.close()
            del flows[client]


def routes() -> list[Route]:
    async def udp(req: Request) -> Response | Hijack:
        raw = req.path_params["port"]
        port = int(raw) if raw.isdigit() else 0
        if not 0 < port < 65536:
            raise ApiError(400, f"invalid port: {raw!r}")

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await relay(port, reader, writer)

        return Hijack(run, "application/octet-stream")

    return [Route("POST", "/toolbox/v1/udp/{port}", udp)]
