"""A container's /etc/hosts and /etc/resolv.conf as Docker writes them, from the VM's own
resolv.conf and the container's --dns/--dns-search/--dns-option/--add-host."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

FALLBACK_NAMESERVER = "10.0.2.3"  # QEMU user networking's resolver


@dataclass
class Resolv:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def parse_resolv(text: str) -> Resolv:
    r = Resolv()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver":
            r.nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            r.search = words[1:]
        elif words[0] == "options":
            r.options += words[1:]
    return r


def vm_resolv(path: Path = Path("/etc/resolv.conf")) -> Resolv:
    try:
        r = parse_resolv(path.read_text())
    except OSError:
        r = Resolv()
    # a resolver on the VM's loopback is not reachable from a container's namespace
    r.nameservers = [ns for ns in r.nameservers if not ns.startswith("127.")] or [FALLBACK_NAMESERVER]
    return r


def upstreams(host_config: dict[str, object], vm: Resolv) -> list[str]:
    """Where a container's queries go (through the embedded DNS or directly)."""
    dns = [str(d) for d in host_config.get("Dns") or []]  # type: ignore[union-attr]
    return dns or vm.nameservers


def resolv_conf(host_config: dict[str, object], vm: Resolv, embedded: str = "") -> str:
    """`embedded`: the address of the network's DNS server (user-defined networks)."""
    search = [str(s) for s in host_config.get("DnsSearch") or []] or vm.search  # type: ignore[union-attr]
    options = [str(o) for o in host_config.get("DnsOptions") or []] or list(vm.options)  # type: ignore[union-attr]
    servers = [embedded] if embedded else upstreams(host_config, vm)
    if embedded and not any(o.startswith("ndots:") for o in options):
        options.append("ndots:0")
    lines = [f"nameserver {ns}" for ns in servers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def hosts_file(hostname: str, ip: str, extra_hosts: list[str], host_gateway: str) -> str:
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    for entry in extra_hosts:
        name, sep, addr = entry.partition(":") if ":" in entry else entry.partition("=")
        if not sep:
            continue
        if addr == "host-gateway":
            addr = host_gateway
        if addr:
            lines.append(f"{addr}\t{name}")
    lines.append(f"{ip or '127.0.1.1'}\t{hostname}")
    return "\n".join(lines) + "\n"


def default_gateway(route_table: Path = Path("/proc/net/route")) -> str:
    """The VM's default gateway (the host's loopback under QEMU user networking)."""
    try:
        for line in route_table.read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) > 2 and parts[1] == "00000000":
                return socket.inet_ntoa(struct.pack("<I", int(parts[2], 16)))
    except (OSError, ValueError):
        pass
    return ""
