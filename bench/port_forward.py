"""Throughput through a localhost port forward: the host agent's (a container's published
port, forwarded by toolbox/hostagent/ports.py over paramiko) vs the system OpenSSH
client's `ssh -L` to the same guest port, pairs alternated in one run.

A busybox httpd in a container publishes a SIZE-byte file on port P. The host agent
listens on 127.0.0.1:P; `ssh -L` forwards another local port to 127.0.0.1:P in the guest.
Both ride an SSH connection to the same guest sshd with one `direct-tcpip` channel per
connection and reach the container through the guest agent's published port, so the
guest side is the same and the figure compares the host sides. Each sample is one HTTP
GET of the file, read to the end.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from figures import Figure, Skipped, Target
from lab import BenchError, Instance, Lab
from toolbox.instance import free_port

SIZE = 8 * 1024 * 1024
NOTE = (f"{SIZE >> 20} MiB guest → host per sample (an HTTP GET from a container's busybox httpd); seconds, "
        "so the issue's throughput ≥ 0.8× of ssh -L is a time ≤ 1.25×")



def _read_all(port: int) -> float:
    """Seconds to GET the file through the forward at 127.0.0.1:port, to its last byte."""
    start = time.perf_counter()
    data = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(b"GET /f HTTP/1.0\r\n\r\n")
        while chunk := s.recv(1 << 20):
            data += chunk
    took = time.perf_counter() - start
    body = data.partition(b"\r\n\r\n")[2]
    if len(body) != SIZE:
        raise BenchError(f"read {len(body)} body bytes through 127.0.0.1:{port}, not {SIZE}")
    return took


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise BenchError(f"nothing listens on 127.0.0.1:{port}")


def _ssh_l(inst: Instance, ssh_port: int, local: int, guest: int, work: Path) -> subprocess.Popen[bytes]:
    """The system OpenSSH client forwarding 127.0.0.1:local to the guest's 127.0.0.1:guest."""
    from toolbox.ssh import known_hosts_line

    known = work / "known_hosts"
    known.write_text(known_hosts_line("toolbox-bench", inst.dir / "ssh_host_ed25519_key.pub"))
    argv = ["ssh", "-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{guest}", "-p", str(ssh_port),
            "-i", str(inst.dir / "id_ed25519"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "HostKeyAlias=toolbox-bench", "-o", "ExitOnForwardFailure=yes", "toolbox@127.0.0.1"]  # fmt: skip
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _ssh_port(config: Path) -> int:
    import tomllib

    return int(tomllib.loads(config.read_text())["ssh_port"])


def run(lab: Lab, rounds: int, say: Callable[[str], None]) -> list[Figure | Skipped]:
    if shutil.which("ssh") is None or shutil.which("docker") is None:
        return [Skipped("port forward vs ssh -L", "needs the OpenSSH client (ssh) and the docker CLI")]
    from docker_client import _docker_env
    from registry import RegistryServer, publish_defaults

    inst = lab.instance("qemu")
    inst.run("up")
    port, local = free_port(), free_port()
    with RegistryServer() as reg:
        publish_defaults(reg)
        env = _docker_env(lab, inst.name, reg.port)
        serve = f"mkdir /www && head -c {SIZE} /dev/zero > /www/f && exec httpd -f -p 80 -h /www"
        cid = subprocess.run(["docker", "run", "-d", "-p", f"{port}:80", "learn/tutorial", "sh", "-c", serve], env=env,
                             capture_output=True, text=True, timeout=600, check=True).stdout.strip()  # fmt: skip
    proc = _ssh_l(inst, _ssh_port(inst.dir / "instance.toml"), local, port, lab.work)
    try:
        _wait_port(port)
        _wait_port(local)
        ours, theirs = [], []
        for _ in range(2):  # warm-up: both SSH paths and the container's page cache hot
            _read_all(port), _read_all(local)
        for i in range(max(rounds, 3) * 2):
            pair = [(ours, port), (theirs, local)]
            for samples, p in pair if i % 2 == 0 else reversed(pair):
                samples.append(_read_all(p))
        say(f"port forward: host agent {_mbps(ours):.2f} MB/s, ssh -L {_mbps(theirs):.2f} MB/s (medians)")
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run(["docker", "rm", "-f", cid], env=env, capture_output=True, timeout=120)
    return [
        Figure("port forward guest → host: the host agent's (paramiko)", "s", ours, lab.accel,
               baseline=theirs, baseline_name="ssh -L (OpenSSH)", target=Target("ratio", 1.25, 6), note=NOTE),
        Figure("port forward throughput, the host agent's", "MB/s", [SIZE / 1e6 / s for s in ours], lab.accel,
               baseline=[SIZE / 1e6 / s for s in theirs], baseline_name="ssh -L (OpenSSH)"),
    ]


def _mbps(samples: list[float]) -> float:
    return SIZE / 1e6 / sorted(samples)[len(samples) // 2]
