"""What the network engine keeps on the data disk (<root>/network/): networks and sandboxes.

A network is a bridge with a subnet. A sandbox is one container's network side: the
networks it is configured on (kept while the container exists) and, while it runs, its
network namespace, addresses and published ports. Addresses in use are read from the
sandboxes, so the IPAM has nothing of its own to keep in step.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

BRIDGE, HOST, NONE = "bridge", "host", "none"
PREDEFINED = (BRIDGE, HOST, NONE)


@dataclass
class Network:
    id: str
    name: str
    driver: str  # bridge | host | null
    created: str
    subnet: str = ""
    gateway: str = ""
    bridge: str = ""  # the bridge device in the VM
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    user_ipam: bool = False  # the subnet was asked for (inspect shows IPAM.Config as given)

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    @property
    def has_bridge(self) -> bool:
        return self.driver == BRIDGE and bool(self.bridge)

    @property
    def net(self) -> IPv4Network:
        return IPv4Network(self.subnet)

    @property
    def gateway_ip(self) -> IPv4Address:
        return IPv4Address(self.gateway)

    @property
    def dns(self) -> bool:
        """Docker's embedded DNS answers on user-defined networks only."""
        return self.has_bridge and self.name != BRIDGE


@dataclass
class PortMapping:
    proto: str  # tcp | udp
    host_ip: str
    host_port: int
    container_port: int

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"


@dataclass
class Attachment:
    """A container on one network: what was asked, and (while running) what it got."""

    network: str  # network id
    aliases: list[str] = field(default_factory=list)
    ipv4: str = ""  # asked for (--ip)
    ip: str = ""
    mac: str = ""
    endpoint: str = ""
    ifname: str = ""  # eth0, eth1 ... in the container

    def clear(self) -> None:
        self.ip = self.mac = self.endpoint = self.ifname = ""


@dataclass
class Sandbox:
    container: str
    name: str  # the container's name, without "/"
    mode: str  # bridge | host | none | container:<id> | <network name> as asked
    attachments: dict[str, Attachment] = field(default_factory=dict)  # by network id
    netns: str = ""  # /run/netns/... while running
    ports: list[PortMapping] = field(default_factory=list)  # published, while running
    upstream_dns: list[str] = field(default_factory=list)  # --dns, for the embedded DNS

    @property
    def running(self) -> bool:
        return bool(self.netns)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Sandbox:
        atts = {k: Attachment(**v) for k, v in (doc.pop("attachments", None) or {}).items()}
        ports = [PortMapping(**p) for p in doc.pop("ports", None) or []]
        return cls(**doc, attachments=atts, ports=ports)


class NetStore:
    """Atomic JSON files: <dir>/networks/<id>.json, <dir>/sandboxes/<container id>.json."""

    def __init__(self, root: Path) -> None:
        self.networks_dir, self.sandboxes_dir = root / "networks", root / "sandboxes"
        for d in (self.networks_dir, self.sandboxes_dir):
            d.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _write(path: Path, doc: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)

    def save_network(self, net: Network) -> None:
        self._write(self.networks_dir / f"{net.id}.json", asdict(net))

    def delete_network(self, net_id: str) -> None:
        (self.networks_dir / f"{net_id}.json").unlink(missing_ok=True)

    def load_networks(self) -> list[Network]:
        return [Network(**doc) for doc in self._load_all(self.networks_dir)]

    def save_sandbox(self, sb: Sandbox) -> None:
        self._write(self.sandboxes_dir / f"{sb.container}.json", sb.to_json())

    def delete_sandbox(self, cid: str) -> None:
        (self.sandboxes_dir / f"{cid}.json").unlink(missing_ok=True)

    def load_sandboxes(self) -> list[Sandbox]:
        return [Sandbox.from_json(doc) for doc in self._load_all(self.sandboxes_dir)]

    @staticmethod
    def _load_all(d: Path) -> list[dict[str, Any]]:
        out = []
        for path in sorted(d.glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return out
