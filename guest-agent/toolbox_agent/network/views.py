"""Docker's JSON shapes: a network (inspect, list) and a container's NetworkSettings and
`ps` Ports."""

from __future__ import annotations

from typing import Any

from toolbox_agent.network.model import Attachment, Network, Sandbox
from toolbox_agent.network.ports import exposed_ports


def network_doc(net: Network, members: list[tuple[Sandbox, Attachment]] | None) -> dict[str, Any]:
    """`members` None: the list form (Containers empty, as `GET /networks` gives it)."""
    config = [{"Subnet": net.subnet, "Gateway": net.gateway}] if net.subnet else []
    containers = {
        sb.container: {"Name": sb.name, "EndpointID": a.endpoint, "MacAddress": a.mac,
                       "IPv4Address": f"{a.ip}/{net.net.prefixlen}", "IPv6Address": ""}
        for sb, a in members or []
    }  # fmt: skip
    return {
        "Name": net.name, "Id": net.id, "Created": net.created, "Scope": "local", "Driver": net.driver,
        "EnableIPv4": True, "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None if net.predefined else {}, "Config": config},
        "Internal": net.internal, "Attachable": net.attachable, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": containers,
        "Options": dict(net.options), "Labels": dict(net.labels),
    }  # fmt: skip


def _endpoint(net: Network, sb: Sandbox | None, att: Attachment | None) -> dict[str, Any]:
    running = att is not None and bool(att.ip)
    ipam_cfg = {"IPv4Address": att.ipv4} if att is not None and att.ipv4 else None
    names = [sb.name, sb.container[:12], *att.aliases] if sb is not None and att is not None and running and net.dns else None
    return {
        "IPAMConfig": ipam_cfg, "Links": None, "Aliases": (list(att.aliases) or None) if att is not None else None,
        "MacAddress": att.mac if running else "", "DriverOpts": None, "GwPriority": 0, "NetworkID": net.id,
        "EndpointID": att.endpoint if running else "", "Gateway": net.gateway if running else "",
        "IPAddress": att.ip if running else "", "IPPrefixLen": net.net.prefixlen if running else 0,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": names,
    }  # fmt: skip


def ports_doc(sb: Sandbox | None, config: dict[str, Any], host_config: dict[str, Any]) -> dict[str, Any]:
    """NetworkSettings.Ports while running: every exposed port, its bindings or null."""
    if sb is None or not sb.running:
        return {}
    out: dict[str, Any] = {key: None for key in exposed_ports(config, host_config)}
    for m in sb.ports:
        out.setdefault(m.key, None)
        out[m.key] = (out[m.key] or []) + [{"HostIp": m.host_ip, "HostPort": str(m.host_port)}]
    return out


def settings_doc(sb: Sandbox | None, networks: dict[str, Network], by_name: dict[str, Network],
                 config: dict[str, Any], host_config: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """A container's NetworkSettings; the top-level address fields come from the default bridge."""
    nets: dict[str, Any] = {}
    if sb is not None and sb.attachments:
        for att in sb.attachments.values():
            if att.network in networks:
                net = networks[att.network]
                nets[net.name] = _endpoint(net, sb, att)
    else:
        mode = (sb.mode if sb is not None else str(host_config.get("NetworkMode") or "host")) or "host"
        if mode in by_name:
            nets[mode] = _endpoint(by_name[mode], None, None)
    top = nets.get("bridge") or {}
    return {
        "Bridge": "", "SandboxID": (sb.container if sb is not None and sb.running else ""), "SandboxKey": (sb.netns if sb is not None else ""),
        "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports_doc(sb, config, host_config),
        "EndpointID": top.get("EndpointID", ""), "Gateway": top.get("Gateway", ""), "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "IPAddress": top.get("IPAddress", ""), "IPPrefixLen": top.get("IPPrefixLen", 0),
        "IPv6Gateway": "", "MacAddress": top.get("MacAddress", ""), "Networks": nets,
    }  # fmt: skip


def ps_ports(sb: Sandbox | None, config: dict[str, Any], host_config: dict[str, Any]) -> list[dict[str, Any]]:
    """`docker ps`'s Ports: published ones with IP and PublicPort, the others bare."""
    out: list[dict[str, Any]] = []
    published = {m.key for m in (sb.ports if sb is not None else [])}
    for m in sb.ports if sb is not None else []:
        out.append({"IP": m.host_ip, "PrivatePort": m.container_port, "PublicPort": m.host_port, "Type": m.proto})
    for key in exposed_ports(config, host_config):
        if key not in published:
            port, proto = key.split("/")
            out.append({"PrivatePort": int(port), "Type": proto})
    return out
