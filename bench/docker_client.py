"""Figures for the real docker CLI through `toolbox shellinit` and the host agent's socket:
`docker ps` round trip and `docker run --rm busybox true`, alternating.

Figures for toolbox's engine alone; the comparison with Docker's own engine (the docker
variant image) is docker_compare.py. busybox comes from Debian's docker-registry on loopback (tests/e2e/
registry.py), which the guest reaches at 10.0.2.2 as its registry mirror.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable

from figures import Figure, Skipped
from lab import BenchError, Lab, timed

GUEST_HOST = "10.0.2.2"  # the host's loopback, seen from the guest (QEMU user network)
NOTE = "toolbox's engine alone; vs dockerd: the docker-compare benchmark"


def _docker_env(lab: Lab, name: str, registry_port: int) -> dict[str, str]:
    inst = lab.instances["qemu"]
    settings = {"insecure_registries": [f"{GUEST_HOST}:{registry_port}"],
                "registry_mirrors": [f"http://{GUEST_HOST}:{registry_port}"]}
    inst.run("ssh", "--", "sh", "-c", f"echo '{json.dumps(settings)}' | sudo tee /run/toolbox/agent.json >/dev/null"
             " && sudo pkill -f '^python3 -m toolbox_agent'")  # the supervisor restarts it with these
    env = dict(lab.env)
    for line in inst.run("shellinit", "--shell", "bash").splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'")
    deadline = time.monotonic() + 120
    while subprocess.run(["docker", "version"], env=env, capture_output=True, timeout=60).returncode != 0:
        if time.monotonic() > deadline:
            raise BenchError("docker version did not answer through the host agent within 120 s")
        time.sleep(1)
    return env


def run(lab: Lab, rounds: int, say: Callable[[str], None]) -> list[Figure | Skipped]:
    if shutil.which("docker") is None:
        return [Skipped("docker ps / docker run", "no docker CLI on PATH")]
    from registry import RegistryServer, publish_defaults

    inst = lab.instance("qemu")
    inst.run("up")
    with RegistryServer() as reg:
        publish_defaults(reg)
        env = _docker_env(lab, inst.name, reg.port)
        timed(["docker", "pull", "busybox"], env)
        timed(["docker", "run", "--rm", "busybox", "true"], env)  # warm-up: first container
        ps, runs = [], []
        for i in range(rounds * 3):
            ps.append(timed(["docker", "ps"], env) * 1000)
            runs.append(timed(["docker", "run", "--rm", "busybox", "true"], env))
        say(f"docker: {len(ps)} pairs, ps median {sorted(ps)[len(ps) // 2]:.0f} ms, "
            f"run median {sorted(runs)[len(runs) // 2]:.2f} s")
    return [
        Figure("docker ps through the host socket (CLI wall)", "ms", ps, lab.accel, note=NOTE),
        Figure("docker run --rm busybox true (CLI wall)", "s", runs, lab.accel, note=NOTE),
    ]
