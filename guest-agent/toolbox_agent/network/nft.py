"""The agent's whole nftables table (`ip toolbox`), a pure function of the networks and the
published ports, replaced in one transaction (`nft -f -`) whenever either changes.

Published ports are DNAT, in prerouting (from containers and the outside) and output
(from the VM itself), for every local destination address: 127.0.0.1, the VM's eth0
address and the bridges' gateways. Loopback works because the bridges have
route_localnet on and the 127/8 source is masqueraded on the way into the bridge. DNAT
rather than a userland proxy per port: no process to start (docker run -p stays as fast
as docker run), no copy of every byte through Python, and the rules live in the kernel,
so published ports keep answering while the agent restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolbox_agent.network.model import Network

TABLE = "toolbox"


@dataclass(frozen=True)
class Forward:
    proto: str
    host_ip: str  # 0.0.0.0: every local address
    host_port: int
    dest_ip: str
    dest_port: int


def _q(name: str) -> str:
    return f'"{name}"'


def port_rules(forwards: list[Forward]) -> list[str]:
    rules = []
    for f in forwards:
        match = "" if f.host_ip in ("", "0.0.0.0") else f"ip daddr {f.host_ip} "
        rules.append(f"{match}{f.proto} dport {f.host_port} dnat to {f.dest_ip}:{f.dest_port}")
    return rules


def postrouting_rules(bridges: list[Network]) -> list[str]:
    rules = []
    for net in bridges:
        br = _q(net.bridge)
        rules.append(f"ip saddr 127.0.0.0/8 oifname {br} masquerade")  # loopback DNAT's replies
        rules.append(f"iifname {br} oifname {br} ct status dnat masquerade")  # hairpin
        if not net.internal:
            rules.append(f"ip saddr {net.subnet} oifname != {br} masquerade")  # egress
    return rules


def forward_rules(bridges: list[Network]) -> list[str]:
    rules = ["ct status dnat accept"]  # a published port answers whichever network asks
    names = [n.bridge for n in bridges]
    for net in bridges:
        br = _q(net.bridge)
        if net.internal:
            rules += [f"iifname {br} oifname != {br} drop", f"oifname {br} iifname != {br} drop"]
        others = [_q(n) for n in names if n != net.bridge]
        if others:  # networks are isolated from each other, as Docker's are
            rules.append(f"iifname {br} oifname {{ {', '.join(others)} }} drop")
    return rules


def _chain(name: str, hook: str, rules: list[str]) -> list[str]:
    head = [f"\tchain {name} {{"] + ([f"\t\t{hook}"] if hook else [])
    return head + [f"\t\t{r}" for r in rules] + ["\t}"]


def ruleset(networks: list[Network], forwards: list[Forward]) -> str:
    bridges = [n for n in networks if n.has_bridge]
    lines = [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    lines += _chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", ["fib daddr type local jump ports"])
    lines += _chain("output", "type nat hook output priority -100; policy accept;", ["fib daddr type local jump ports"])
    lines += _chain("ports", "", port_rules(forwards))
    lines += _chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", postrouting_rules(bridges))
    lines += _chain("forward", "type filter hook forward priority filter; policy accept;", forward_rules(bridges))
    return "\n".join(lines + ["}"]) + "\n"
