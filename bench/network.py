"""Figures for container networking, through the real docker CLI and the host agent:

- container-to-container TCP throughput over the bridge (two containers on a user-defined
  network) beside the same two programs over the guest's loopback (both containers in the
  VM's namespace, `--network host`, 127.0.0.1), runs alternated;
- `docker run --rm -p 8080:80 busybox true` beside `docker run --rm busybox true`,
  alternated pair by pair (target: ≤ 1.2×, issue #5).

busybox is loaded with `docker load` (scripts/demo-image); the TCP programs are the VM's own
python3, bind-mounted read-only into busybox containers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from figures import Figure, Skipped, Target
from lab import REPO, BenchError, Lab, timed

IMAGE = "bench/busybox:latest"
PORT = 5001
MIB = 64  # sent per throughput sample
VM_PYTHON = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]
SINK = (
    "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('0.0.0.0', {PORT})); s.listen(4)\n"
    "while True:\n    c, _ = s.accept(); n = 0\n"
    "    while (b := c.recv(1 << 18)):\n        n += len(b)\n"
    "    c.sendall(str(n).encode()); c.close()\n"
)
SOURCE = (
    "import socket, sys, time\nbuf = bytes(1 << 18); total = {mib} << 20\n"
    "for attempt in range(100):\n    try:\n        c = socket.create_connection((sys.argv[1], {port})); break\n"
    "    except OSError:\n        time.sleep(0.1)\n"
    "t = time.perf_counter(); sent = 0\nwhile sent < total:\n    c.sendall(buf); sent += len(buf)\n"
    "c.shutdown(socket.SHUT_WR); assert int(c.recv(64)) == sent\n"
    "print(sent / (1 << 20) / (time.perf_counter() - t))\n"
).format(mib=MIB, port=PORT)


def _docker(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    proc = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"docker {' '.join(args[:3])} ... exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def _env(lab: Lab) -> dict[str, str]:
    inst = lab.instance("qemu")
    inst.run("up")
    env = dict(lab.env)
    for line in inst.run("shellinit", "--shell", "bash").splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'")
    archive = subprocess.run([sys.executable, str(REPO / "scripts" / "demo-image"), IMAGE], capture_output=True, check=True).stdout
    subprocess.run(["docker", "load"], input=archive, env=env, capture_output=True, check=True, timeout=600)
    return env


def _throughput(env: dict[str, str], network: str, target: str) -> float:
    """MiB/s of one SOURCE run (a fresh client container) into the running sink."""
    out = _docker(env, "run", "--rm", "--network", network, *VM_PYTHON, IMAGE, "/usr/bin/python3", "-c", SOURCE, target)
    return float(out.strip())


def _throughputs(env: dict[str, str], rounds: int) -> tuple[list[float], list[float]]:
    _docker(env, "network", "create", "benchnet")
    sinks = []
    try:
        sinks.append(_docker(env, "run", "-d", "--network", "benchnet", "--name", "benchsink", *VM_PYTHON, IMAGE,
                             "/usr/bin/python3", "-c", SINK).strip())  # fmt: skip
        sinks.append(_docker(env, "run", "-d", "--network", "host", *VM_PYTHON, IMAGE, "/usr/bin/python3", "-c", SINK).strip())
        bridge, loopback = [], []
        for _ in range(rounds * 2):
            bridge.append(_throughput(env, "benchnet", "benchsink"))
            loopback.append(_throughput(env, "host", "127.0.0.1"))
        return bridge, loopback
    finally:
        for cid in sinks:
            subprocess.run(["docker", "rm", "-f", cid], env=env, capture_output=True, timeout=300)
        subprocess.run(["docker", "network", "rm", "benchnet"], env=env, capture_output=True, timeout=300)


def run(lab: Lab, rounds: int, say: Callable[[str], None]) -> list[Figure | Skipped]:
    env = _env(lab)
    timed(["docker", "run", "--rm", IMAGE, "true"], env)  # warm-up: first container
    timed(["docker", "run", "--rm", "-p", "8080:80", IMAGE, "true"], env)
    published, plain = [], []
    for _ in range(rounds * 3):
        published.append(timed(["docker", "run", "--rm", "-p", "8080:80", IMAGE, "true"], env))
        plain.append(timed(["docker", "run", "--rm", IMAGE, "true"], env))
        time.sleep(0.2)
    bridge, loopback = _throughputs(env, rounds)
    say(f"network: run -p median {sorted(published)[len(published) // 2]:.2f} s vs {sorted(plain)[len(plain) // 2]:.2f} s; "
        f"bridge {sorted(bridge)[len(bridge) // 2]:.0f} MiB/s vs loopback {sorted(loopback)[len(loopback) // 2]:.0f} MiB/s")
    return [
        Figure("docker run --rm -p 8080:80 busybox true vs without -p (CLI wall)", "s", published, lab.accel,
               baseline=plain, baseline_name="without -p", target=Target("ratio", 1.2, 5)),
        Figure("container-to-container TCP over the bridge vs the guest's loopback", "MiB/s", bridge, lab.accel,
               baseline=loopback, baseline_name="loopback, --network host",
               note=f"{MIB} MiB per sample, python3 sockets, a new client container each"),
    ]  # fmt: skip
