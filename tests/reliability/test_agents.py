"""kill -9 of the guest agent and of the host agent while a container runs: the container
keeps running, the agents come back (the guest's supervisor restarts its agent; `toolbox
up` restarts the host agent), and the docker CLI reaches the container again.

busybox comes from Debian's docker-registry on loopback (tests/e2e/registry.py), which the
guest agent uses as its registry mirror at 10.0.2.2 (the host's loopback, from the guest).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from procs import wait_gone
from registry import RegistryServer, registry  # noqa: F401  (the session's registry fixture)
from tally import Tally
from toolbox_cli import Toolbox

pytestmark = pytest.mark.e2e
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
GUEST = "10.0.2.2"
AGENT = "^python3 -m toolbox_agent"


def docker(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def _wait_docker(env: dict[str, str], timeout: float = 120) -> float:
    """Seconds until `docker version` answers through the host socket."""
    start = time.monotonic()
    while docker(env, "version", timeout=60).returncode != 0:
        assert time.monotonic() - start < timeout, "docker did not answer again"
        time.sleep(0.5)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def sleeper(toolbox_vm: Toolbox, registry: RegistryServer) -> Iterator[tuple[dict[str, str], str]]:  # noqa: F811
    """The docker CLI's environment and the id of a running `sleep` container."""
    if not os.path.exists(DOCKER):
        pytest.skip("needs the docker CLI")
    tb = toolbox_vm
    tb.run("up", "-n", tb.name)
    settings = {"insecure_registries": [f"{GUEST}:{registry.port}"], "registry_mirrors": [f"http://{GUEST}:{registry.port}"]}
    tb.ssh(f"echo '{json.dumps(settings)}' | sudo tee /run/toolbox/agent.json >/dev/null && sudo pkill -f '{AGENT}'")
    env = {**tb.env, "DOCKER_HOST": tb.docker_host, "DOCKER_CONFIG": str(tb.home / "docker-config")}
    _wait_docker(env)
    out = docker(env, "run", "-d", "busybox", "sleep", "900", timeout=300)
    assert out.returncode == 0, out.stderr
    cid = out.stdout.strip()
    yield env, cid
    docker(env, "rm", "-f", cid)


def _running(env: dict[str, str], cid: str) -> bool:
    out = docker(env, "inspect", "-f", "{{.State.Running}}", cid)
    return out.returncode == 0 and out.stdout.strip() == "true"


def test_kill_9_guest_agent(toolbox_vm: Toolbox, sleeper: tuple[dict[str, str], str], tally: Tally) -> None:
    env, cid = sleeper
    before = toolbox_vm.ssh(f"pgrep -f '{AGENT}'").stdout.split()
    assert before, "no guest agent running"
    toolbox_vm.ssh(f"sudo kill -9 {' '.join(before)}")
    back = _wait_docker(env)
    after = toolbox_vm.ssh(f"pgrep -f '{AGENT}'").stdout.split()
    ok = bool(after) and not set(after) & set(before) and _running(env, cid)
    ok = ok and docker(env, "exec", cid, "true").returncode == 0
    tally.add("kill -9 of the guest agent (container running)", injected=1, survived=int(ok))
    print(f"\nguest agent back in {back:.1f} s")
    assert ok, f"agent pids {before} -> {after}; container running: {_running(env, cid)}"


def test_kill_9_host_agent(toolbox_vm: Toolbox, sleeper: tuple[dict[str, str], str], tally: Tally) -> None:
    env, cid = sleeper
    tb = toolbox_vm
    pid = int((tb.instance_dir / "hostagent.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    assert docker(env, "ps", timeout=60).returncode != 0  # nobody serves the socket now
    tb.run("up", "-n", tb.name)  # brings the host agent back on a running VM
    ok = docker(env, "ps", "-q", "--no-trunc").stdout.split().count(cid) == 1 and _running(env, cid)
    tally.add("kill -9 of the host agent (container running)", injected=1, survived=int(ok))
    assert ok, docker(env, "ps", "-a").stdout
