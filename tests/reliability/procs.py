"""Looking at the host's processes and sockets through /proc, for the reliability tests."""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether the process lives (a zombie waiting for its parent does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def qemu_pids(instance_dir: Path, launchers: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Live QEMUs whose command line names a file of this instance: one per VM.

    `-daemonize` forks twice, so while a VM starts there is the QEMU its launcher ran
    (waiting for the daemon to report) and the daemon itself, with the same command line.
    A QEMU whose parent is another QEMU or one of `launchers` (the pids of the toolbox
    commands that start VMs) is such a launching QEMU, not a second VM.
    """
    needle = os.fsencode(str(instance_dir) + "/")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv0 = cmdline.split(b"\0", 1)[0]
        if b"qemu-system" in argv0 and needle in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(pid for pid in found if _ppid(pid) not in {*found, *launchers})


@dataclass(frozen=True)
class Sock:
    proto: str  # tcp, tcp6, udp, udp6
    address: str
    port: int
    listening: bool  # TCP LISTEN, or any bound UDP socket


def _addr(hex_addr: str, v6: bool) -> str:
    raw = bytes.fromhex(hex_addr)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", struct.unpack(">I", raw)[0]))
    words = struct.unpack(">4I", raw)  # /proc prints each 32-bit word in host order
    return socket.inet_ntop(socket.AF_INET6, b"".join(struct.pack("<I", w) for w in words))


def sockets_of(pid: int) -> list[Sock]:
    """The inet sockets a process holds, from /proc/PID/fd and /proc/PID/net/*."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        for line in lines:
            f = line.split()
            if f[9] not in inodes:
                continue
            local, state = f[1], f[3]
            hex_addr, hex_port = local.split(":")
            listening = state == "0A" if proto.startswith("tcp") else f[2].split(":")[1] == "0000"
            found.append(Sock(proto, _addr(hex_addr, proto.endswith("6")), int(hex_port, 16), listening))
    return found


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1") or address.startswith("::ffff:127.")
