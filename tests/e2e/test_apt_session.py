"""The seed's second command, as typed, on the session's VM:

    docker run learn/tutorial apt-get install -y iputils-ping

learn/tutorial is, for this module, a Debian bookworm image (tests/e2e/debian_image.py) whose
apt installs from a flat repository this test serves on 127.0.0.1, reached from the
container at 10.0.2.2 through the VM's NAT. The module puts the session's busybox
learn/tutorial back afterwards, in the registry and in the guest.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from debian_image import debian_build, debian_image
from docker_session import docker_cli, docker_env  # noqa: F401  (docker_env: a fixture)
from helpers_http import FileServer
from registry import RegistryServer, publish_defaults, push, registry  # noqa: F401  (registry: a fixture)

pytestmark = pytest.mark.e2e
TUTORIAL = "learn/tutorial"


@pytest.fixture(scope="module")
def build() -> Path:
    """tests/images/build-debian's cached result (the tests never build it)."""
    return debian_build()


@pytest.fixture(scope="module")
def apt_repo(build: Path) -> Iterator[FileServer]:
    """The cached flat repository (iputils-ping and its missing dependencies) on 127.0.0.1."""
    server = FileServer(build / "repo")
    yield server
    server.close()


@pytest.fixture(scope="module")
def debian_tutorial(docker_env: dict[str, str], registry: RegistryServer, build: Path,  # noqa: F811
                    apt_repo: FileServer) -> Iterator[None]:
    """learn/tutorial:latest is the Debian image while the module runs."""
    push(registry, f"{TUTORIAL}:latest", debian_image(build, apt_repo.port))
    docker_cli(docker_env, "rmi", "-f", TUTORIAL)  # a busybox learn/tutorial pulled earlier
    try:
        yield
    finally:
        ids = docker_cli(docker_env, "ps", "-aq", "--filter", f"ancestor={TUTORIAL}").stdout.split()
        if ids:
            docker_cli(docker_env, "rm", "-f", *ids)
        publish_defaults(registry)
        docker_cli(docker_env, "rmi", "-f", TUTORIAL)


def test_apt_get_install_as_typed(docker_env: dict[str, str], debian_tutorial: None, apt_repo: FileServer,  # noqa: F811
                                  tmp_path: Path) -> None:
    script = (
        'eval "$(toolbox shellinit)"\n'
        f"docker pull {TUTORIAL}\n"
        f"docker run {TUTORIAL} apt-get install -y iputils-ping\n"
    )
    env = {k: v for k, v in docker_env.items() if k != "DOCKER_HOST"}
    out = subprocess.run(["bash", "-e"], input=script, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Setting up iputils-ping" in out.stdout, out.stdout + out.stderr
    fetched = [p for p in apt_repo.served if p.endswith(".deb")]
    assert any("iputils-ping_" in p for p in fetched), apt_repo.served
    # dpkg's database in the (exited) container's own layer says it is installed
    cid = docker_cli(docker_env, "ps", "-alq", "--filter", f"ancestor={TUTORIAL}").stdout.strip()
    assert docker_cli(docker_env, "cp", f"{cid}:/var/lib/dpkg/status", str(tmp_path / "status")).returncode == 0
    assert "Package: iputils-ping\nStatus: install ok installed\n" in (tmp_path / "status").read_text()


def test_installed_ping_runs(docker_env: dict[str, str], debian_tutorial: None) -> None:  # noqa: F811
    """Each container starts from the image; this one installs and then uses ping."""
    out = docker_cli(docker_env, "run", "--rm", TUTORIAL, "sh", "-c",
                     "apt-get install -y -q iputils-ping >/dev/null && ping -V && ping -c 1 -W 5 127.0.0.1",
                     timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ping from iputils" in out.stdout
    assert "1 packets transmitted, 1 received" in out.stdout
    out = docker_cli(docker_env, "run", "--rm", TUTORIAL, "sh", "-c", "command -v ping || echo absent")
    assert out.stdout.strip() == "absent", "the image itself must not have changed"
