"""Throughput through a localhost port forward: the host agent's forward (paramiko,
toolbox/hostagent/ports.py) vs the system OpenSSH client's `ssh -L`, to the same guest.

In the guest a small Python server sends SIZE bytes to each connection on
127.0.0.1:GUEST_PORT; on the host each sample connects to one forward's local port and
reads to the end. Both forwards ride an SSH connection to the same guest sshd, opening a
`direct-tcpip` channel per connection, so the guest side is the same and the figure
compares the host sides. The pairs alternate ours / ssh -L in one run.

The host agent's forward code runs in this process (TcpForward over an SSHLink, as the
host agent builds it), pointed at the guest server's port: the published-port path adds
only the guest agent's relay in the VM, which both sides would share.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from figures import Figure, Skipped, Target
from lab import BenchError, Instance, Lab

SIZE = 8 * 1024 * 1024
NOTE = (f"{SIZE >> 20} MiB guest → host per sample; seconds, so the issue's throughput ≥ 0.8× of ssh -L "
        "is a time ≤ 1.25×")
SOURCE = (  # the guest's data source: SIZE bytes to every connection, then close
    "import socket,threading\n"
    "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('127.0.0.1',{port}));s.listen(16)\n"
    "buf=memoryview(bytes(1<<20))\n"
    "def send(c):\n"
    "  for _ in range({size}>>20): c.sendall(buf)\n"
    "  c.close()\n"
    "while True:\n"
    "  c,_=s.accept();threading.Thread(target=send,args=(c,),daemon=True).start()\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_all(port: int) -> float:
    """Seconds to read everything the guest sends through the forward at 127.0.0.1:port."""
    start = time.perf_counter()
    got = 0
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        while chunk := s.recv(1 << 20):
            got += len(chunk)
    took = time.perf_counter() - start
    if got != SIZE:
        raise BenchError(f"read {got} bytes through 127.0.0.1:{port}, not {SIZE}")
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
    if shutil.which("ssh") is None:
        return [Skipped("port forward vs ssh -L", "no OpenSSH client (ssh) on PATH")]
    from toolbox.hostagent.forward import SSHLink
    from toolbox.hostagent.ports import TcpForward
    from toolbox.ssh import connect

    inst = lab.instance("qemu")
    inst.run("up")
    guest_port = _free_port()  # the forward listens on the host at the guest's port number
    script = base64.b64encode(SOURCE.format(port=guest_port, size=SIZE).encode()).decode()
    inst.run("ssh", "--", "sh", "-c", f"echo {script} | base64 -d > /tmp/bench-source.py && "
             "nohup python3 /tmp/bench-source.py </dev/null >/dev/null 2>&1 & echo $! > /tmp/bench-source.pid")
    ssh_port = _ssh_port(inst.dir / "instance.toml")
    link = SSHLink(lambda: connect("127.0.0.1", ssh_port, inst.dir / "id_ed25519", inst.dir / "ssh_host_ed25519_key.pub"))
    ours = TcpForward(guest_port, link)
    ours.start()
    local = _free_port()
    proc = _ssh_l(inst, ssh_port, local, guest_port, lab.work)
    try:
        _wait_port(local)
        ours_s, ssh_s = [], []
        _read_all(guest_port), _read_all(local)  # warm-up: both connections made, both guest paths hot
        for i in range(max(rounds, 3) * 2):
            pair = [(ours_s, guest_port), (ssh_s, local)]
            for samples, port in pair if i % 2 == 0 else reversed(pair):
                samples.append(_read_all(port))
        mbps = [SIZE / 1e6 / s for s in ours_s]
        say(f"port forward: ours {sorted(mbps)[len(mbps) // 2]:.1f} MB/s, "
            f"ssh -L {sorted(SIZE / 1e6 / s for s in ssh_s)[len(ssh_s) // 2]:.1f} MB/s")
    finally:
        ours.close()
        link.close()
        proc.terminate()
        proc.wait(10)
        inst.run("ssh", "--", "sh", "-c", "kill $(cat /tmp/bench-source.pid)")
    return [
        Figure("port forward guest → host: the host agent's (paramiko)", "s", ours_s, lab.accel,
               baseline=ssh_s, baseline_name="ssh -L (OpenSSH)", target=Target("ratio", 1.25, 6), note=NOTE),
        Figure("port forward throughput, the host agent's", "MB/s", [SIZE / 1e6 / s for s in ours_s], lab.accel,
               baseline=[SIZE / 1e6 / s for s in ssh_s], baseline_name="ssh -L (OpenSSH)"),
    ]
