"""Address management: which subnet a new network gets, which address a container gets.

Pure functions over what is allocated; the allocations themselves live in the sandboxes'
records (model.py), so there is one source of truth and nothing to reconcile.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

DEFAULT_BRIDGE_SUBNET = IPv4Network("172.17.0.0/16")


def default_pools() -> list[IPv4Network]:
    """Docker's default address pools: 172.17-31.0.0/16, then 192.168.0.0/16 cut into /20s."""
    pools = [IPv4Network(f"172.{n}.0.0/16") for n in range(17, 32)]
    pools += list(IPv4Network("192.168.0.0/16").subnets(new_prefix=20))
    return pools


def pick_subnet(used: Iterable[IPv4Network], avoid: Iterable[IPv4Network] = ()) -> IPv4Network:
    """The first default pool overlapping none of `used` (networks) nor `avoid` (the VM's own)."""
    taken = list(used) + list(avoid)
    for pool in default_pools():
        if not any(pool.overlaps(t) for t in taken):
            return pool
    raise ValueError("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")


def parse_subnet(text: str) -> IPv4Network:
    try:
        return IPv4Network(text, strict=False)
    except ValueError:
        raise ValueError(f"invalid subnet {text}") from None


def gateway_for(subnet: IPv4Network, requested: str = "") -> IPv4Address:
    if requested:
        gw = IPv4Address(requested)
        if gw not in subnet:
            raise ValueError(f"gateway {gw} is not in subnet {subnet}")
        return gw
    return subnet.network_address + 1


def allocate(subnet: IPv4Network, gateway: IPv4Address, taken: Iterable[str], requested: str = "") -> IPv4Address:
    """The lowest free host address (or `requested`, if free)."""
    used = {IPv4Address(a) for a in taken if a} | {gateway}
    if requested:
        want = IPv4Address(requested)
        if want not in subnet or want in (subnet.network_address, subnet.broadcast_address):
            raise ValueError(f"no available IPv4 address: {want} is not in subnet {subnet}")
        if want in used:
            raise ValueError(f"Address already in use: {want}")
        return want
    for host in subnet.hosts():
        if host not in used:
            return host
    raise ValueError(f"no available IPv4 addresses on this network's address pools: {subnet}")


def mac_for(ip: IPv4Address | str) -> str:
    """02:42 followed by the address's four bytes, as Docker derived MACs."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(str(ip)).packed)
