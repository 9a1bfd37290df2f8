"""A fake guest for the host agent's tests: the guest agent's real HTTP server, events,
clock and UDP routes in a thread, a ports list the test controls, and a link that opens
"SSH channels" as plain sockets.

The guest's 127.0.0.1 would be the host's own here, so the guest side lives on
127.0.0.2 (any 127/8 address is loopback on Linux): the link's direct-tcpip goes there,
and the UDP relay is pointed there.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guest-agent"))

from toolbox_agent.api import clock as clock_api  # noqa: E402
from toolbox_agent.api import system as system_api  # noqa: E402
from toolbox_agent.api import udp as udp_api  # noqa: E402
from toolbox_agent.events import EventBus  # noqa: E402
from toolbox_agent.http import Request, Response, Route, Router, Server, json_response  # noqa: E402

GUEST_IP = "127.0.0.2"


class FakeChannel:
    """A paramiko.Channel stand-in over a socket: the calls the host agent makes."""

    def __init__(self, sock: socket.socket, link: FakeLink) -> None:
        self.sock, self.link = sock, link

    def recv(self, n: int) -> bytes:
        try:
            return self.sock.recv(n)
        except OSError as exc:
            if isinstance(exc, socket.timeout):
                raise
            return b""

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def settimeout(self, t: float | None) -> None:
        self.sock.settimeout(t)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.link.forget(self)
        self.sock.close()


class FakeLink:
    """SSHLink's surface: connect, generation, channels to the guest socket and ports."""

    def __init__(self, guest_socket: Path) -> None:
        self.guest_socket = guest_socket
        self.generation = 0
        self.up = False
        self.refuse = False  # while set, connecting fails (the VM is away)
        self.channels: set[FakeChannel] = set()
        self.lock = threading.Lock()

    def transport(self) -> object:
        from toolbox.errors import SSHError

        with self.lock:
            if not self.up:
                if self.refuse:
                    raise SSHError("connection refused (fake)")
                self.up = True
                self.generation += 1
        return self

    def connected(self) -> bool:
        return self.up

    def _channel(self, family: int, addr: Any) -> FakeChannel:
        self.transport()
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.connect(addr)
        chan = FakeChannel(sock, self)
        with self.lock:
            self.channels.add(chan)
        return chan

    def open(self, guest_path: str) -> FakeChannel:
        return self._channel(socket.AF_UNIX, str(self.guest_socket))

    def open_tcp(self, port: int, origin: tuple[str, int]) -> FakeChannel:
        return self._channel(socket.AF_INET, (GUEST_IP, port))

    def forget(self, chan: FakeChannel) -> None:
        with self.lock:
            self.channels.discard(chan)

    def drop(self) -> None:
        """The SSH connection dies: every channel with it."""
        with self.lock:
            self.up = False
            chans, self.channels = list(self.channels), set()
        for chan in chans:
            try:
                chan.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.drop()


class FakeGuest:
    """The guest agent's routes in a thread: /events, /toolbox/v1/{ports,clock,udp}."""

    def __init__(self, with_clock: bool = True) -> None:
        self.with_clock = with_clock  # False: an agent older than the clock route
        self.dir = Path(tempfile.mkdtemp(prefix="tbg", dir="/tmp"))
        self.socket = self.dir / "docker.sock"
        self.events = EventBus()
        self.ports: list[dict[str, Any]] = []
        self.clock_set: list[int] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def ports(req: Request) -> Response:
            return json_response(self.ports)

        parts = system_api.SystemParts(None, self.events, dict, lambda: 0)  # type: ignore[arg-type]
        routes = system_api.routes(parts) + [Route("GET", "/toolbox/v1/ports", ports)]
        if self.with_clock:
            routes += clock_api.routes(set_clock=self.clock_set.append)
        routes += udp_api.routes()
        self.server = self.loop.run_until_complete(Server(Router(routes)).start_unix(str(self.socket)))
        self._ready.set()
        self.loop.run_forever()
        tasks = asyncio.all_tasks(self.loop)  # open connections: end them before the loop goes
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    def start(self) -> FakeGuest:
        udp_api.RELAY_HOST = GUEST_IP
        self._thread.start()
        self._ready.wait(10)
        return self

    def publish(self, proto: str, port: int, action: str = "publish", container: str = "c" * 64) -> None:
        item = {"container": container, "proto": proto, "host_ip": "0.0.0.0", "host_port": port, "container_port": port}
        if action == "publish":
            self.ports.append(item)
        else:
            self.ports = [p for p in self.ports if (p["proto"], p["host_port"]) != (proto, port)]
        attrs = {k: str(v) for k, v in item.items() if k != "container"}
        self.loop.call_soon_threadsafe(self.events.publish, "toolbox.port", action, container, attrs)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        udp_api.RELAY_HOST = "127.0.0.1"
