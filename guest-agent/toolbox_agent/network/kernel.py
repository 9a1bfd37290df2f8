"""The VM's network stack behind one choke point: every `ip`/`nft` call and /proc/sys
write goes through Kernel, which logs it. A dry Kernel records instead of acting (unit
tests on the build host, and an agent run outside the VM, must never touch the host's
network). The argv and batch builders are pure functions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from toolbox_agent.network.errors import NetworkError

log = logging.getLogger("toolbox_agent.network")
NETNS_DIR = Path("/run/netns")
# iproute2's and nftables' own binaries: busybox's `ip` (first in the init's PATH) has no -batch
IP, NFT = "/usr/sbin/ip", "/usr/sbin/nft"


def netns_name(cid: str) -> str:
    return f"tb-{cid[:12]}"


def netns_path(cid: str) -> str:
    return str(NETNS_DIR / netns_name(cid))


def veth_name(cid: str, net_id: str) -> str:
    """The VM side of a container's veth: stable, so a restarted agent can find it."""
    # crc32, not sha256[:8] (as many bits): hashlib would load libcrypto into an agent
    # that needs it only for pulls (lean.py).
    return f"veth{zlib.crc32(f'{cid}/{net_id}'.encode()):08x}"


def bridge_name(net_id: str) -> str:
    return f"br-{net_id[:12]}"


def bridge_lines(bridge: str, gateway: str, prefixlen: int, create: bool) -> list[str]:
    lines = [f"link add name {bridge} type bridge"] if create else []
    return lines + [f"addr replace {gateway}/{prefixlen} dev {bridge}", f"link set {bridge} up"]


def veth_lines(netns: str, veth: str, ifname: str, mac: str, bridge: str, new_netns: bool) -> list[str]:
    """In the VM's namespace: (the namespace,) the veth pair with its peer moved in, on the bridge."""
    lines = [f"netns add {netns}"] if new_netns else []
    return lines + [
        f"link add {veth} type veth peer name {ifname} address {mac} netns {netns}",
        f"link set {veth} master {bridge}",
        f"link set {veth} type bridge_slave hairpin on",  # a container reaches its own published port
        f"link set {veth} up",
    ]


def inside_lines(ifname: str, ip: str, prefixlen: int, gateway: str, default_route: bool, first: bool) -> list[str]:
    """In the container's namespace: address, links up, the default route through the bridge."""
    lines = [f"addr add {ip}/{prefixlen} dev {ifname}", f"link set {ifname} up"]
    if first:
        lines.append("link set lo up")
    if default_route:
        lines.append(f"route replace default via {gateway} dev {ifname}")
    return lines


def teardown_lines(netns: str, veths: list[str]) -> list[str]:
    """Delete the veths first: a namespace's devices otherwise go away asynchronously."""
    return [f"link del {v}" for v in veths] + [f"netns del {netns}"]


@dataclass
class Kernel:
    dry: bool = False
    calls: list[tuple[str, ...]] = field(default_factory=list)  # what a dry kernel was asked

    async def run(self, argv: list[str], stdin: str = "", check: bool = True) -> str:
        log.debug("run: %s%s", " ".join(argv), "" if not stdin else " <<\n" + stdin)
        if self.dry:
            self.calls.append((*argv, stdin))
            return ""
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
        if check and proc.returncode != 0:
            msg = err.decode(errors="replace").strip() or f"{argv[0]} exited {proc.returncode}"
            raise NetworkError(f"{' '.join(argv[:3])}: {msg}")
        return out.decode(errors="replace")

    async def ip_batch(self, lines: list[str], netns: str = "", force: bool = False) -> None:
        if not lines:
            return
        argv = [IP, *(["-n", netns] if netns else []), *(["-force"] if force else []), "-batch", "-"]
        await self.run(argv, "\n".join(lines) + "\n", check=not force)

    async def nft(self, script: str) -> None:
        await self.run([NFT, "-f", "-"], script)

    def sysctl(self, key: str, value: str) -> None:
        path = Path("/proc/sys") / key.replace(".", "/")
        log.debug("sysctl %s=%s", key, value)
        if self.dry:
            self.calls.append(("sysctl", key, value))
            return
        try:
            path.write_text(value)
        except OSError as exc:
            log.warning("sysctl %s=%s: %s", key, value, exc)

    def link_exists(self, name: str) -> bool:
        return False if self.dry else os.path.exists(f"/sys/class/net/{name}")

    def netns_exists(self, path: str) -> bool:
        return True if self.dry else os.path.exists(path)
