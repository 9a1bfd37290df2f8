"""Load on the real engine: 50 concurrent `docker run --rm` (the real docker CLI, busybox
from the loopback registry) and 500 concurrent API requests through the host socket, all
of which must succeed; afterwards the guest holds nothing more than before: no mount under
the agent's root or /run/netns, no cgroup below /sys/fs/cgroup/toolbox, no shim or crun
process, no veth or network namespace (the `sleeper` container's own stay, as before).

    TOOLBOX_RELIABILITY_RUNS=20 .venv/bin/pytest tests/reliability/test_load.py   # fewer runs (default 50)
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import threading
import time

import pytest
from registry import registry  # noqa: F401  (the session's registry fixture, for sleeper)
from tally import Tally
from test_agents import DOCKER, sleeper  # noqa: F401  (sleeper: the docker env and a running container)
from toolbox_cli import Toolbox

pytestmark = pytest.mark.e2e
RUNS = int(os.environ.get("TOOLBOX_RELIABILITY_RUNS", "50"))
REQUESTS = 500
# What the guest holds for containers: every line names one thing that must not outlive them.
HELD = r"""import json, os
root = "/var/lib/toolbox/"
mounts = [l.split()[1] for l in open("/proc/mounts") if l.split()[1].startswith((root, "/run/netns/"))]
cg = "/sys/fs/cgroup/toolbox"
cgroups = [d for d, _, _ in os.walk(cg)][1:] if os.path.isdir(cg) else []
procs = []
for p in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if os.path.basename(argv[0]) == b"crun" or b"toolbox_agent.containers.shim" in argv:
        procs.append(" ".join(a.decode(errors="replace") for a in argv[:4]))
veths = [n for n in os.listdir("/sys/class/net") if n.startswith("veth")]
netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
print(json.dumps({"mounts": mounts, "cgroups": cgroups, "processes": procs, "veths": veths, "netns": netns}))
"""


def _held(tb: Toolbox) -> dict[str, set[str]]:
    out = tb.ssh(f"sudo python3 -c '{HELD}'").stdout
    return {k: set(v) for k, v in json.loads(out).items()}


def _leaked(tb: Toolbox, before: dict[str, set[str]], settle: float = 20.0) -> dict[str, set[str]]:
    """What the guest holds beyond `before`, once it settles (removal may finish just after the CLI)."""
    deadline = time.monotonic() + settle
    while True:
        extra = {k: v - before[k] for k, v in _held(tb).items() if v - before[k]}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(1)


def _containers(env: dict[str, str]) -> list[str]:
    out = subprocess.run([DOCKER, "ps", "-aq", "--no-trunc"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_50_concurrent_docker_run_rm(toolbox_vm: Toolbox, sleeper: tuple[dict[str, str], str], tally: Tally) -> None:  # noqa: F811
    env, _ = sleeper
    before, containers_before = _held(toolbox_vm), set(_containers(env))
    started = time.monotonic()
    procs = [subprocess.Popen([DOCKER, "run", "--rm", "busybox", "sh", "-c", f"echo run-{i}"], env=env, text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(RUNS)]  # fmt: skip
    results = []
    for i, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=max(1.0, 600 - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        results.append((i, p.returncode, out.strip(), err.strip()[-300:]))
    took = time.monotonic() - started
    failed = [r for r in results if r[1] != 0 or r[2] != f"run-{r[0]}"]
    leaked = _leaked(toolbox_vm, before)
    left = set(_containers(env)) - containers_before
    print(f"\n{RUNS} concurrent docker run --rm: {took:.1f} s; failed {len(failed)}; leaked {leaked or 'nothing'}")
    tally.add(f"{RUNS} concurrent `docker run --rm`", injected=RUNS, survived=RUNS - len(failed))
    assert not failed, failed[:5]
    assert not leaked, f"left in the guest after {RUNS} runs: {leaked}"
    assert not left, f"--rm left containers: {left}"


def _one_request(sock: str, target: str) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(120)
        s.connect(sock)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]) if head else 0, body


def test_500_concurrent_api_requests(toolbox_vm: Toolbox, sleeper: tuple[dict[str, str], str], tally: Tally) -> None:  # noqa: F811
    _, cid = sleeper
    before = _held(toolbox_vm)
    sock = str(toolbox_vm.instance_dir / "docker.sock")
    targets = ["/_ping", "/v1.44/containers/json", "/v1.44/images/json", f"/v1.44/containers/{cid}/json", "/v1.44/version"]
    plan = [random.Random(i).choice(targets) for i in range(REQUESTS)]
    results: list[tuple[str, int, str]] = [("", 0, "")] * REQUESTS
    gate = threading.Barrier(REQUESTS)

    def worker(i: int) -> None:
        try:
            gate.wait(60)
            status, body = _one_request(sock, plan[i])
            results[i] = (plan[i], status, body[:200].decode(errors="replace"))
        except Exception as exc:  # noqa: BLE001 - counted as a failure below
            results[i] = (plan[i], 0, repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(REQUESTS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    took = time.monotonic() - started
    failed = [r for r in results if r[1] != 200]
    print(f"\n{REQUESTS} concurrent API requests: {took:.1f} s, {len(failed)} failed")
    tally.add(f"{REQUESTS} concurrent API requests", injected=REQUESTS, survived=REQUESTS - len(failed))
    assert not failed, failed[:5]
    assert not _leaked(toolbox_vm, before, settle=5)
