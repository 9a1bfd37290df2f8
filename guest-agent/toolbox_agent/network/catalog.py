"""The networks themselves: the predefined bridge/host/none, and user-defined bridges
(create, list, remove, prune, connect, disconnect). A mixin of NetworkManager, which owns
the kernel, the store, the sandboxes, the rules and the DNS listeners it uses."""

from __future__ import annotations

import re
import time
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

from toolbox_agent.containers.logs import rfc3339_nano
from toolbox_agent.lean import random_id
from toolbox_agent.network import ipam, kernel
from toolbox_agent.network.errors import (
    InvalidNetworkParameter, NetworkConflict, NetworkError, NetworkForbidden, NetworkNotFound, PluginNotFound,
)  # fmt: skip
from toolbox_agent.network.model import BRIDGE, HOST, NONE, Attachment, Network, Sandbox

if TYPE_CHECKING:
    from toolbox_agent.network.manager import NetworkManager

DEFAULT_BRIDGE_DEVICE = "toolbox0"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


class Catalog:
    def __init__(self: NetworkManager) -> None:
        self.networks: dict[str, Network] = {n.id: n for n in self.store.load_networks()}
        have = {n.name for n in self.networks.values()}
        for name, driver in ((BRIDGE, BRIDGE), (HOST, HOST), (NONE, "null")):
            if name not in have:
                net = Network(random_id(), name, driver, rfc3339_nano())
                if name == BRIDGE:
                    net.subnet, net.gateway, net.bridge = str(ipam.DEFAULT_BRIDGE_SUBNET), "172.17.0.1", DEFAULT_BRIDGE_DEVICE
                    net.options = {BRIDGE_NAME_OPTION: DEFAULT_BRIDGE_DEVICE, "com.docker.network.bridge.default_bridge": "true"}
                self.networks[net.id] = net
                self.store.save_network(net)

    def get(self: NetworkManager, ref: str) -> Network:
        if ref in self.networks:
            return self.networks[ref]
        for net in self.networks.values():
            if net.name == ref:
                return net
        matches = [n for n in self.networks.values() if ref and n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise NetworkNotFound(ref)

    def members(self: NetworkManager, net: Network) -> list[tuple[Sandbox, Attachment]]:
        """The running containers on `net`, with their endpoint."""
        return [(sb, a) for sb in self.sandboxes.values() for a in sb.attachments.values() if a.network == net.id and a.ip]

    def _event(self: NetworkManager, action: str, net: Network, container: str = "") -> None:
        attrs = {"name": net.name, "type": net.driver, **({"container": container} if container else {})}
        self.events.publish("network", action, net.id, attrs)

    # ---- create, remove, prune -----------------------------------------------------
    async def create(self: NetworkManager, body: dict[str, Any]) -> Network:
        name = str(body.get("Name") or "")
        if not name or not NAME_RE.match(name):
            raise InvalidNetworkParameter(f"invalid network name: {name!r}" if name else "network name cannot be empty")
        if any(n.name == name for n in self.networks.values()):
            raise NetworkConflict(f"network with name {name} already exists")
        driver = str(body.get("Driver") or BRIDGE)
        if driver in (HOST, "null"):
            raise NetworkForbidden(f'only one instance of "{driver}" network is allowed')
        if driver != BRIDGE:
            raise PluginNotFound(f'plugin "{driver}" not found')
        net = Network(random_id(), name, BRIDGE, rfc3339_nano(), internal=bool(body.get("Internal")),
                      attachable=bool(body.get("Attachable")), labels=dict(body.get("Labels") or {}),
                      options={str(k): str(v) for k, v in (body.get("Options") or {}).items()})  # fmt: skip
        self._address(net, body.get("IPAM") or {})
        net.bridge = net.options.get(BRIDGE_NAME_OPTION) or kernel.bridge_name(net.id)
        if len(net.bridge) > 15 or any(n.bridge == net.bridge for n in self.networks.values()):
            raise InvalidNetworkParameter(f"bridge name {net.bridge} is too long or already in use")
        async with self.lock:
            await self.ensure_bridge(net)
            self.networks[net.id] = net
            self.store.save_network(net)
            await self.apply_rules()
        if not self.kernel.dry:
            await self.dns.listen(net.gateway)
        self._event("create", net)
        return net

    def _address(self: NetworkManager, net: Network, ipam_body: dict[str, Any]) -> None:
        configs = [c for c in ipam_body.get("Config") or [] if c.get("Subnet") and ":" not in str(c.get("Subnet"))]
        used = [n.net for n in self.networks.values() if n.subnet]
        try:
            if configs:
                subnet = ipam.parse_subnet(str(configs[0]["Subnet"]))
                if any(subnet.overlaps(u) for u in used):
                    raise NetworkForbidden("invalid pool request: Pool overlaps with other one on this address space")
                gateway = ipam.gateway_for(subnet, str(configs[0].get("Gateway") or ""))
                net.user_ipam = True
            else:
                subnet = ipam.pick_subnet(used, [IPv4Network("10.0.2.0/24")])
                gateway = ipam.gateway_for(subnet)
        except ValueError as exc:
            raise InvalidNetworkParameter(str(exc)) from None
        net.subnet, net.gateway = str(subnet), str(gateway)

    async def remove(self: NetworkManager, ref: str) -> None:
        net = self.get(ref)
        if net.predefined:
            raise NetworkForbidden(f"{net.name} is a pre-defined network and cannot be removed")
        active = self.members(net)
        if active:
            names = ", ".join(f'name:"{sb.name}" id:"{sb.container[:12]}"' for sb, _ in active)
            raise NetworkForbidden(f"error while removing network: network {net.name} has active endpoints ({names})")
        async with self.lock:
            self.dns.close(net.gateway)
            if self.kernel.link_exists(net.bridge) or self.kernel.dry:
                await self.kernel.ip_batch([f"link del {net.bridge}"], force=True)
            self.networks.pop(net.id, None)
            self.store.delete_network(net.id)
            await self.apply_rules()
        self._event("destroy", net)

    async def prune(self: NetworkManager, until: float | None, labels: list[str]) -> list[str]:
        removed = []
        for net in list(self.networks.values()):
            if net.predefined or self.members(net) or not _labels_match(net, labels):
                continue
            if until is not None and _created(net) > until:
                continue
            await self.remove(net.id)
            removed.append(net.name)
        return removed

    def list(self: NetworkManager, filters: dict[str, list[str]]) -> list[Network]:
        return sorted((n for n in self.networks.values() if _matches(n, filters)), key=lambda n: n.created)

    # ---- connect, disconnect -------------------------------------------------------
    async def connect(self: NetworkManager, ref: str, cid: str, cfg: dict[str, Any]) -> None:
        net = self.get(ref)
        sb = self.sandboxes.get(cid)
        if sb is None:
            raise NetworkError(f"container {cid} has no network configuration")
        if net.driver != BRIDGE or sb.mode in (HOST, NONE):
            raise NetworkForbidden("container cannot be disconnected from host network or connected to host network"
                                   if HOST in (net.name, sb.mode) else "container sharing network namespace with another container or host cannot be connected to any other network")  # fmt: skip
        if net.id in sb.attachments:
            raise NetworkForbidden(f"endpoint with name {sb.name} already exists in network {net.name}")
        att = self._attachment(net, cfg or {})
        async with self.lock:
            sb.attachments[net.id] = att
            if sb.netns:
                self._allocate(sb, att)
                att.ifname = f"eth{len([a for a in sb.attachments.values() if a.ifname])}"
                try:
                    await self._plug_links(sb, [att], new_netns=False)
                except NetworkError:
                    sb.attachments.pop(net.id, None)
                    raise
            self.store.save_sandbox(sb)
        self._event("connect", net, cid)

    async def disconnect(self: NetworkManager, ref: str, cid: str, force: bool) -> None:
        net = self.get(ref)
        sb = self.sandboxes.get(cid)
        if sb is None or net.id not in sb.attachments:
            if force:
                return
            raise NetworkForbidden(f"container {cid[:12]} is not connected to network {net.name}")
        async with self.lock:
            att = sb.attachments.pop(net.id)
            if sb.netns and att.ip:
                await self.kernel.ip_batch([f"link del {kernel.veth_name(cid, net.id)}"], force=True)
            self.store.save_sandbox(sb)
        self._event("disconnect", net, cid)


def _created(net: Network) -> float:
    from toolbox_agent.containers.logs import parse_rfc3339

    try:
        return parse_rfc3339(net.created)
    except ValueError:
        return time.time()


def _labels_match(net: Network, wanted: list[str]) -> bool:
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in net.labels or (eq and net.labels[key] != value):
            return False
    return True


def _matches(net: Network, filters: dict[str, list[str]]) -> bool:
    """Docker's `network ls` filters: name (substring), id (prefix), driver, type, label, scope."""
    for key, values in filters.items():
        if not values:
            continue
        if key == "name" and not any(v in net.name for v in values):
            return False
        if key == "id" and not any(net.id.startswith(v) for v in values):
            return False
        if key == "driver" and net.driver not in values:
            return False
        if key == "type" and ("builtin" if net.predefined else "custom") not in values:
            return False
        if key == "label" and not _labels_match(net, values):
            return False
        if key == "scope" and "local" not in values:
            return False
    return True
