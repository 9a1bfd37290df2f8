"""The network engine: networks, each container's sandbox (namespace, veths, addresses,
published ports), the nftables table and the embedded DNS. It knows nothing of HTTP.

The container engine calls plan() at create, attach() before the runtime creates the
container (the namespace exists first and crun joins it), detach() when it has stopped,
forget() when it is removed, and recover() when the agent starts, before any container
starts again: it rebuilds the bridges and NAT after a reboot and keeps a running
container's namespace, address and ports as they were after an agent restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from toolbox_agent.events import EventBus
from toolbox_agent.lean import random_id
from toolbox_agent.network import etc, ipam, kernel, nft, views
from toolbox_agent.network.catalog import Catalog
from toolbox_agent.network.dns import DnsServers
from toolbox_agent.network.errors import InvalidNetworkParameter, NetworkError, NetworkNotFound, PortAllocated
from toolbox_agent.network.kernel import Kernel
from toolbox_agent.network.model import BRIDGE, HOST, NONE, Attachment, NetStore, Network, PortMapping, Sandbox
from toolbox_agent.network.ports import Reservations, requested_ports

log = logging.getLogger("toolbox_agent.network")
DEFAULT_MODES = ("", "default", BRIDGE)


async def _logged(step: Awaitable[None], what: str) -> None:
    try:
        await step
    except (NetworkError, OSError) as exc:
        log.error("network: %s: %s", what, exc)


class NetworkManager(Catalog):
    def __init__(self, root: Path, events: EventBus, dry: bool) -> None:
        self.kernel = Kernel(dry=dry)
        self.events = events
        self.store = NetStore(root)
        self.sandboxes = {sb.container: sb for sb in self.store.load_sandboxes()}
        self.reservations = Reservations(loopback_only=dry)
        self.dns = DnsServers(self.lookup, self.upstreams)
        self.lock = asyncio.Lock()
        super().__init__()

    # ---- create: what a container asks for ------------------------------------------
    def plan(self, host_config: dict[str, Any], networking: dict[str, Any], config: dict[str, Any]) -> tuple[str, dict[str, Attachment]]:
        """The normalised NetworkMode and the container's attachments; raises 400/404."""
        mode = str(host_config.get("NetworkMode") or "")
        mode = BRIDGE if mode in DEFAULT_MODES else mode
        requested_ports(host_config, config)  # a malformed port is refused at create, as Docker does
        endpoints = {(BRIDGE if k in DEFAULT_MODES else k): v for k, v in ((networking or {}).get("EndpointsConfig") or {}).items()}
        if mode in (HOST, NONE) or mode.startswith("container:"):
            if mode.startswith("container:"):
                raise InvalidNetworkParameter("network mode container:<name|id> is not supported by this engine")
            return mode, {}
        try:
            primary = self.get(mode)
        except NetworkNotFound:
            return mode, {}  # as Docker: the container is created, its start fails with 404
        if primary.driver != BRIDGE:
            return primary.name, {}
        atts: dict[str, Attachment] = {}
        for ref in [mode, *[k for k in endpoints if k != mode]]:
            net = primary if ref == mode else self.get(ref)
            atts[net.id] = self._attachment(net, endpoints.get(ref) or {})
        return (primary.name if primary.predefined else mode), atts

    def _attachment(self, net: Network, cfg: dict[str, Any]) -> Attachment:
        aliases = [str(a) for a in cfg.get("Aliases") or []]
        ipv4 = str(((cfg.get("IPAMConfig") or {}).get("IPv4Address")) or "")
        if net.name == BRIDGE and aliases:
            raise InvalidNetworkParameter("network-scoped alias is supported only for containers in user defined networks")
        if net.name == BRIDGE and ipv4:
            raise InvalidNetworkParameter("user specified IP address is supported on user defined networks only")
        return Attachment(net.id, aliases=aliases, ipv4=ipv4)

    def configure(self, cid: str, name: str, mode: str, atts: dict[str, Attachment]) -> None:
        sb = Sandbox(cid, name.lstrip("/"), mode, atts)
        self.sandboxes[cid] = sb
        self.store.save_sandbox(sb)

    def rename(self, cid: str, name: str) -> None:
        sb = self.sandboxes.get(cid)
        if sb is not None:
            sb.name = name.lstrip("/")
            self.store.save_sandbox(sb)

    # ---- start: namespace, veths, addresses, ports ----------------------------------
    async def attach(self, cid: str, name: str, hostname: str, host_config: dict[str, Any], config: dict[str, Any], cdir: Path) -> str | None:
        """The network namespace crun must join (a path), "" for a new empty one, None to
        share the VM's. Writes the container's hosts and resolv.conf (not in host mode)."""
        sb = self.sandboxes.get(cid)
        if sb is None:  # made before this engine kept sandboxes
            mode, atts = self.plan(host_config, {}, config)
            self.configure(cid, name, mode, atts)
            sb = self.sandboxes[cid]
        sb.name = name.lstrip("/")
        if sb.mode == HOST:
            return None
        if sb.mode != NONE and not sb.attachments:  # its network did not exist at create
            sb.attachments = self.plan(host_config, {}, config)[1]
            if not sb.attachments:
                raise NetworkNotFound(sb.mode)
        gone = [a.network for a in sb.attachments.values() if a.network not in self.networks]
        if gone:
            raise NetworkNotFound(gone[0])
        vm = etc.vm_resolv()
        sb.upstream_dns = etc.upstreams(host_config, vm)
        if not sb.attachments:  # none
            self._write_etc(cdir, hostname, "", host_config, etc.resolv_conf(host_config, vm))
            return ""
        async with self.lock:
            if sb.netns or sb.ports:  # left by a crash between plugging and the runtime
                await self._unplug(sb)
            await self._plug(sb)
            try:
                await self._publish_ports(sb, host_config, config)
            except BaseException:
                await self._unplug(sb)
                raise
        first = self.networks[next(iter(sb.attachments))]
        embedded = first.gateway if first.dns else ""
        self._write_etc(cdir, hostname, next(iter(sb.attachments.values())).ip, host_config, etc.resolv_conf(host_config, vm, embedded))
        return sb.netns

    def _write_etc(self, cdir: Path, hostname: str, ip: str, host_config: dict[str, Any], resolv: str) -> None:
        extra = [str(h) for h in host_config.get("ExtraHosts") or []]
        gateway = "" if self.kernel.dry else etc.default_gateway()
        (cdir / "hosts").write_text(etc.hosts_file(hostname, ip, extra, gateway))
        (cdir / "resolv.conf").write_text(resolv)

    def _allocate(self, sb: Sandbox, att: Attachment) -> None:
        net = self.networks[att.network]
        taken = [a.ip for other in self.sandboxes.values() for a in other.attachments.values() if a.network == net.id]
        try:
            ip = ipam.allocate(net.net, net.gateway_ip, taken, att.ipv4)
        except ValueError as exc:
            raise InvalidNetworkParameter(str(exc)) from None
        att.ip, att.mac, att.endpoint = str(ip), ipam.mac_for(ip), random_id()

    async def _plug(self, sb: Sandbox) -> None:
        """Make the namespace and one veth per network; saved first, so a crash is cleaned up."""
        atts = [a for a in sb.attachments.values() if a.network in self.networks]
        for i, att in enumerate(atts):
            self._allocate(sb, att)
            att.ifname = f"eth{i}"
        sb.netns = kernel.netns_path(sb.container)
        self.store.save_sandbox(sb)
        try:
            await self._plug_links(sb, atts, new_netns=True)
        except NetworkError:
            await self._unplug(sb)
            raise

    async def _plug_links(self, sb: Sandbox, atts: list[Attachment], new_netns: bool) -> None:
        ns = kernel.netns_name(sb.container)
        outside: list[str] = []
        inside: list[str] = []
        for i, att in enumerate(atts):
            net = self.networks[att.network]
            veth = kernel.veth_name(sb.container, net.id)
            outside += kernel.veth_lines(ns, veth, att.ifname, att.mac, net.bridge, new_netns and i == 0)
            default = new_netns and i == 0 and not net.internal
            inside += kernel.inside_lines(att.ifname, att.ip, net.net.prefixlen, net.gateway, default, new_netns and i == 0)
        await self.kernel.ip_batch(outside)
        await self.kernel.ip_batch(inside, netns=ns)

    async def _publish_ports(self, sb: Sandbox, host_config: dict[str, Any], config: dict[str, Any]) -> None:
        reqs = requested_ports(host_config, config)
        if not reqs:
            return
        held: list[PortMapping] = []
        try:
            for req in reqs:
                port = self.reservations.reserve(req)
                held.append(PortMapping(req.proto, req.host_ip, port, req.container_port))
        except PortAllocated as exc:
            for m in held:
                self.reservations.release(m)
            endpoint = next(iter(sb.attachments.values())).endpoint
            raise PortAllocated(f"driver failed programming external connectivity on endpoint {sb.name} ({endpoint}): {exc}") from None
        sb.ports = held
        self.store.save_sandbox(sb)
        await self.apply_rules()
        for m in held:
            self._port_event("publish", sb.container, m)

    def _port_event(self, action: str, cid: str, m: PortMapping) -> None:
        attrs = {"proto": m.proto, "host_ip": m.host_ip, "host_port": str(m.host_port), "container_port": str(m.container_port)}
        self.events.publish("toolbox.port", action, cid, attrs)

    # ---- stop, remove ---------------------------------------------------------------
    async def detach(self, cid: str) -> None:
        """The container has stopped: free its ports, namespace, veths and addresses."""
        sb = self.sandboxes.get(cid)
        if sb is None or not (sb.netns or sb.ports):
            return
        async with self.lock:
            await self._unplug(sb)

    async def _unplug(self, sb: Sandbox) -> None:
        ports, sb.ports = sb.ports, []
        for m in ports:
            self.reservations.release(m)
        veths = [kernel.veth_name(sb.container, a.network) for a in sb.attachments.values() if a.ip]
        if sb.netns:
            await self.kernel.ip_batch(kernel.teardown_lines(kernel.netns_name(sb.container), veths), force=True)
        for att in sb.attachments.values():
            att.clear()
        sb.netns = ""
        if sb.container in self.sandboxes:
            self.store.save_sandbox(sb)
        if ports:
            await self.apply_rules()
            for m in ports:
                self._port_event("unpublish", sb.container, m)

    async def forget(self, cid: str) -> None:
        await self.detach(cid)
        self.sandboxes.pop(cid, None)
        self.store.delete_sandbox(cid)

    # ---- the VM's side: bridges, sysctls, rules, DNS ---------------------------------
    async def recover(self) -> None:
        """At agent start: bridges and NAT up, dead sandboxes freed, live ones' ports held.
        A failure is logged: the engine serves on (host-network containers still work)."""
        self.kernel.sysctl("net.ipv4.ip_forward", "1")
        for net in self.networks.values():
            if net.has_bridge:
                await _logged(self.ensure_bridge(net), f"bridge {net.bridge}")
        for sb in list(self.sandboxes.values()):
            if sb.netns and not self.kernel.netns_exists(sb.netns):
                await _logged(self._unplug(sb), f"freeing {sb.container[:12]}")  # the VM rebooted
            for m in sb.ports:
                self.reservations.hold(m)
        await _logged(self.apply_rules(), "nftables")
        for net in self.networks.values():
            if net.dns and not self.kernel.dry:
                await self.dns.listen(net.gateway)

    async def ensure_bridge(self, net: Network) -> None:
        create = not self.kernel.link_exists(net.bridge)
        await self.kernel.ip_batch(kernel.bridge_lines(net.bridge, net.gateway, net.net.prefixlen, create))
        self.kernel.sysctl(f"net.ipv4.conf.{net.bridge}.route_localnet", "1")

    async def apply_rules(self) -> None:
        forwards = []
        for sb in self.sandboxes.values():
            ip = next((a.ip for a in sb.attachments.values() if a.ip), "")
            forwards += [nft.Forward(m.proto, m.host_ip, m.host_port, ip, m.container_port) for m in sb.ports if ip]
        await self.kernel.nft(nft.ruleset(list(self.networks.values()), forwards))

    # ---- the embedded DNS's view ----------------------------------------------------
    def _sandbox_at(self, ip: str) -> Sandbox | None:
        return next((sb for sb in self.sandboxes.values() if any(a.ip == ip for a in sb.attachments.values())), None)

    def lookup(self, source: str, name: str) -> list[str] | None:
        asker = self._sandbox_at(source)
        if asker is None:
            return None
        shared = {a.network for a in asker.attachments.values() if a.ip and a.network in self.networks and self.networks[a.network].dns}
        found: list[str] = []
        for sb in self.sandboxes.values():
            for att in sb.attachments.values():
                if att.network in shared and att.ip and name in self.dns_names(sb, att):
                    found.append(att.ip)
        return found or None

    @staticmethod
    def dns_names(sb: Sandbox, att: Attachment) -> list[str]:
        return [n.lower() for n in [sb.name, sb.container[:12], *att.aliases]]

    def upstreams(self, source: str) -> list[str]:
        sb = self._sandbox_at(source)
        return (sb.upstream_dns if sb is not None and sb.upstream_dns else None) or etc.vm_resolv().nameservers

    def published(self) -> list[dict[str, Any]]:
        """The contract of GET /toolbox/v1/ports."""
        return [{"container": sb.container, "proto": m.proto, "host_ip": m.host_ip, "host_port": m.host_port, "container_port": m.container_port}
                for sb in self.sandboxes.values() for m in sb.ports]  # fmt: skip

    # ---- views for the containers API ------------------------------------------------
    def container_settings(self, cid: str, config: dict[str, Any], host_config: dict[str, Any]) -> dict[str, Any]:
        by_name = {n.name: n for n in self.networks.values()}
        return views.settings_doc(self.sandboxes.get(cid), self.networks, by_name, config, host_config)

    def container_ports(self, cid: str, config: dict[str, Any], host_config: dict[str, Any]) -> list[dict[str, Any]]:
        return views.ps_ports(self.sandboxes.get(cid), config, host_config)
