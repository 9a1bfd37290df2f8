"""Published ports: what a container asks for (HostConfig.PortBindings, PublishAllPorts with
the image's ExposedPorts) and the host ports it holds.

A published port's host port is reserved with a bound socket (never listening: the kernel's
DNAT takes the traffic before it would reach it), as docker-proxy holds its ports: no other
container and no process in the VM can take it while the container runs.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from toolbox_agent.network.errors import InvalidNetworkParameter, PortAllocated
from toolbox_agent.network.model import PortMapping

PROTOS = ("tcp", "udp")


@dataclass
class PortRequest:
    proto: str
    host_ip: str
    host_port: int  # 0: any free port
    host_port_end: int  # the end of a HostPort range ("8000-8010"), else host_port
    container_port: int


def parse_port_key(key: str) -> tuple[int, str]:
    """"80/tcp", "53/udp", "80" -> (80, "tcp")."""
    port, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOS and proto != "sctp":
        raise InvalidNetworkParameter(f"invalid proto: {proto}")
    if proto == "sctp":
        raise InvalidNetworkParameter("sctp ports cannot be published by this engine")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidNetworkParameter(f"invalid containerPort: {port}")
    return int(port), proto


def _host_range(text: str) -> tuple[int, int]:
    text = (text or "").strip()
    if not text:
        return 0, 0
    start, _, end = text.partition("-")
    try:
        lo, hi = int(start), int(end or start)
    except ValueError:
        raise InvalidNetworkParameter(f"invalid hostPort: {text}") from None
    if not (0 <= lo <= hi < 65536):
        raise InvalidNetworkParameter(f"invalid hostPort: {text}")
    return lo, hi


def _host_ip(text: str) -> str | None:
    """The IPv4 address to publish on; None for an IPv6 one (the VM has no IPv6 NAT)."""
    text = (text or "").strip().strip("[]")
    if not text:
        return "0.0.0.0"
    if ":" in text:
        return None
    try:
        return str(IPv4Address(text))
    except ValueError:
        raise InvalidNetworkParameter(f"invalid IP address: {text}") from None


def requested_ports(host_config: dict[str, Any], config: dict[str, Any]) -> list[PortRequest]:
    """Every port to publish; 400 (InvalidNetworkParameter) for a malformed one."""
    out: list[PortRequest] = []
    bindings = host_config.get("PortBindings") or {}
    if not isinstance(bindings, dict):
        raise InvalidNetworkParameter("invalid PortBindings: expected an object")
    for key, entries in bindings.items():
        cport, proto = parse_port_key(key)
        for entry in entries or [{}]:
            ip = _host_ip(str((entry or {}).get("HostIp") or ""))
            lo, hi = _host_range(str((entry or {}).get("HostPort") or ""))
            if ip is not None:
                out.append(PortRequest(proto, ip, lo, hi, cport))
    if host_config.get("PublishAllPorts"):
        bound = {parse_port_key(k) for k in bindings}
        for key in config.get("ExposedPorts") or {}:
            cport, proto = parse_port_key(key)
            if (cport, proto) not in bound:
                out.append(PortRequest(proto, "0.0.0.0", 0, 0, cport))
    return out


def exposed_ports(config: dict[str, Any], host_config: dict[str, Any]) -> list[str]:
    """"80/tcp" keys: the image's and the container's ExposedPorts and every bound port."""
    keys = set()
    for key in list(config.get("ExposedPorts") or {}) + list(host_config.get("PortBindings") or {}):
        try:
            port, proto = parse_port_key(key)
        except InvalidNetworkParameter:
            continue
        keys.add(f"{port}/{proto}")
    return sorted(keys, key=lambda k: (int(k.split("/")[0]), k))


class Reservations:
    """Bound sockets holding the published host ports. `loopback_only` (a dry engine on the
    build host) binds 127.0.0.1 instead of every address."""

    def __init__(self, loopback_only: bool = False) -> None:
        self.loopback_only = loopback_only
        self.held: dict[tuple[str, str, int], socket.socket] = {}

    def _overlapping(self, proto: str, host_ip: str, port: int) -> bool:
        return any(p == proto and n == port and "0.0.0.0" in (ip, host_ip) or (p, ip, n) == (proto, host_ip, port)
                   for p, ip, n in self.held)  # fmt: skip

    def reserve(self, req: PortRequest) -> int:
        """The host port now held for `req` (a free one when it asked for none)."""
        if req.host_port == 0:
            return self._bind(req.proto, req.host_ip, 0)
        last: PortAllocated | None = None
        for port in range(req.host_port, req.host_port_end + 1):
            try:
                return self._bind(req.proto, req.host_ip, port)
            except PortAllocated as exc:
                last = exc
        assert last is not None
        raise last

    def _bind(self, proto: str, host_ip: str, port: int) -> int:
        if port and self._overlapping(proto, host_ip, port):
            raise PortAllocated(f"Bind for {host_ip}:{port} failed: port is already allocated")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1" if self.loopback_only else host_ip, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortAllocated(f"Bind for {host_ip}:{port} failed: port is already allocated") from None
            raise PortAllocated(f"failed to bind host port {host_ip}:{port}/{proto}: {exc.strerror}") from None
        got = sock.getsockname()[1]
        self.held[(proto, host_ip, got)] = sock
        return int(got)

    def hold(self, m: PortMapping) -> None:
        """Take a port back after an agent restart (best effort: it was ours a moment ago)."""
        if (m.proto, m.host_ip, m.host_port) in self.held:
            return
        try:
            self._bind(m.proto, m.host_ip, m.host_port)
        except PortAllocated:
            pass

    def release(self, m: PortMapping) -> None:
        sock = self.held.pop((m.proto, m.host_ip, m.host_port), None)
        if sock is not None:
            sock.close()
