"""The docker CLI session the e2e tests share: `docker_env`, the environment of a shell after
`eval "$(toolbox shellinit)"` on the session's VM, with the guest agent pointed at the
session's loopback registry (tests/e2e/registry.py) as its registry mirror.

A test module uses it with both fixtures imported (pytest finds a fixture's own fixtures
from the module that asks):

    from docker_session import docker_cli, docker_env  # noqa: F401
    from registry import registry  # noqa: F401
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from registry import RegistryServer

from toolbox_cli import Toolbox

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
GUEST = "10.0.2.2"  # the host's loopback, seen from the guest (QEMU user networking)


@pytest.fixture(scope="module")
def docker_env(toolbox_vm: Toolbox, registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a shell after `eval "$(toolbox shellinit)"`, the agent pointed at the registry."""
    port = registry.port
    settings = {"insecure_registries": [f"{GUEST}:{port}"], "registry_mirrors": [f"http://{GUEST}:{port}"]}
    toolbox_vm.ssh(
        f"echo '{json.dumps(settings)}' | sudo tee /run/toolbox/agent.json >/dev/null && "
        "sudo pkill -f '^python3 -m toolbox_agent'"
    )
    bindir = tmp_path_factory.mktemp("bin")
    wrapper = bindir / "toolbox"  # `toolbox` as typed; this session's instance is not "default"
    wrapper.write_text(
        f'#!/bin/sh\nif [ "$1" = shellinit ]; then set -- "$@" -n {toolbox_vm.name}; fi\n'
        f'exec {sys.executable} -m toolbox "$@"\n'
    )
    wrapper.chmod(0o755)
    env = {**toolbox_vm.env, "PATH": f"{bindir}:{os.environ['PATH']}", "DOCKER_CONFIG": str(bindir / "docker-config")}
    out = subprocess.run(["sh", "-c", 'eval "$(toolbox shellinit)" && echo "$DOCKER_HOST"'], env=env,
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    env["DOCKER_HOST"] = out.stdout.strip()
    deadline = time.monotonic() + 120
    while subprocess.run([DOCKER, "version"], env=env, capture_output=True, timeout=60).returncode != 0:
        assert time.monotonic() < deadline, "the guest agent did not come back after its restart"
        time.sleep(1)
    yield env


def docker_cli(env: dict[str, str], *args: str, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True, input=input, timeout=timeout)
