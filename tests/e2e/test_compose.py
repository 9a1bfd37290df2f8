"""Debian's docker-compose (1.29, over docker-py) against the guest agent, on the session's VM:
a two-service project (a busybox httpd serving a page from a named volume on a published
port, and a client that reaches it by service name) through up -d, ps, logs, exec and
down -v, after which nothing of the project is left.

Compose's own calls exercise networks (create with labels, NetworkingConfig aliases,
connect/disconnect), volumes (create, inspect, label filters) and container labels.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Toolbox
from docker_session import docker_cli, docker_env  # noqa: F401  (docker_env: a fixture)
from registry import free_port, registry  # noqa: F401  (registry: a fixture)

pytestmark = pytest.mark.e2e
COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
PROJECT = "tbcompose"
LABEL = f"label=com.docker.compose.project={PROJECT}"
PAGE = "served from the named volume"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, whatever the environment

# sh as pid 1 traps TERM, so `down` stops the services at once (no 10 s wait for SIGKILL).
COMPOSE_FILE = """\
services:
  web:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; echo '{page}' > /www/index.html; echo web ready; httpd -f -p 80 -h /www & wait"]
    volumes:
      - site:/www
    ports:
      - "{port}:80"
  client:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; echo client ready; while true; do sleep 1; done"]
    depends_on:
      - web
volumes:
  site:
"""


@pytest.fixture
def project(docker_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:  # noqa: F811
    """A project directory, compose's environment and the web service's published port;
    `down -v` afterwards whatever the test did."""
    if not Path(COMPOSE).is_file():
        pytest.fail(f"{COMPOSE} is missing (./scripts/setup installs Debian's docker-compose)")
    port = free_port()  # a port number no other test of the session publishes in the VM
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.format(page=PAGE, port=port))
    env = {**docker_env, "COMPOSE_PROJECT_NAME": PROJECT}
    yield env, port
    compose(env, tmp_path, "down", "-v", "--timeout", "5")


def compose(env: dict[str, str], cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMPOSE, "--ansi", "never", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)  # fmt: skip


def leftovers(env: dict[str, str]) -> dict[str, list[str]]:
    """The project's containers, networks and volumes the engine still has."""
    return {
        "containers": docker_cli(env, "ps", "-aq", "--filter", LABEL).stdout.split(),
        "networks": docker_cli(env, "network", "ls", "-q", "--filter", LABEL).stdout.split(),
        "volumes": docker_cli(env, "volume", "ls", "-q", "--filter", LABEL).stdout.split(),
    }


def test_compose_up_ps_logs_exec_down(project: tuple[dict[str, str], int], tmp_path: Path, toolbox_vm: Toolbox) -> None:
    env, port = project
    out = compose(env, tmp_path, "up", "-d")
    assert out.returncode == 0, out.stdout + out.stderr

    out = compose(env, tmp_path, "ps")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[2:] if line.strip()}
    assert set(rows) == {f"{PROJECT}_web_1", f"{PROJECT}_client_1"}, out.stdout
    assert all(re.search(r"\bUp\b", row) for row in rows.values()), out.stdout
    assert f"0.0.0.0:{port}->80/tcp" in rows[f"{PROJECT}_web_1"], out.stdout

    # the client reaches the web service by its name on the project's network: through the
    # docker CLI (compose's default) and through docker-py's own exec stream
    fetch = ("exec", "-T", "client", "wget", "-q", "-O", "-", "http://web/")
    out = compose(env, tmp_path, *fetch)
    assert (out.returncode, out.stdout.strip()) == (0, PAGE), out.stdout + out.stderr
    out = compose({**env, "COMPOSE_INTERACTIVE_NO_CLI": "1"}, tmp_path, *fetch)
    assert (out.returncode, out.stdout.strip()) == (0, PAGE), out.stdout + out.stderr
    # the published port answers inside the VM, and on the host's loopback (the host agent)
    out = toolbox_vm.ssh(f"busybox wget -q -O - http://127.0.0.1:{port}/", check=False)
    assert out.stdout.strip() == PAGE, out.stdout + out.stderr
    assert _get(f"http://127.0.0.1:{port}/") == PAGE

    # a second `up` finds the project's containers by their labels and leaves them be
    out = compose(env, tmp_path, "up", "-d")
    assert out.returncode == 0 and out.stderr.count("is up-to-date") == 2, out.stdout + out.stderr

    out = compose(env, tmp_path, "logs", "--no-color")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "web ready" in out.stdout and "client ready" in out.stdout, out.stdout

    # the page lives in the project's named volume, labelled by compose
    volume = json.loads(docker_cli(env, "volume", "inspect", f"{PROJECT}_site").stdout or "[]")
    assert volume and volume[0]["Labels"]["com.docker.compose.project"] == PROJECT, volume
    mounts = json.loads(docker_cli(env, "inspect", "-f", "{{json .Mounts}}", f"{PROJECT}_web_1").stdout)
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [("volume", f"{PROJECT}_site", "/www")]
    assert leftovers(env)["networks"], "compose made no network for the project"

    out = compose(env, tmp_path, "down", "-v", "--timeout", "5")
    assert out.returncode == 0, out.stdout + out.stderr
    assert leftovers(env) == {"containers": [], "networks": [], "volumes": []}
    out = toolbox_vm.ssh(f"busybox wget -q -T 5 -O - http://127.0.0.1:{port}/", check=False)
    assert out.returncode != 0, "the published port still answers after down"


def _get(url: str, timeout: float = 60) -> str:
    """The body at url, retried while the host agent's forward comes up (it follows events)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with NO_PROXY.open(url, timeout=10) as resp:
                return resp.read().decode().strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
