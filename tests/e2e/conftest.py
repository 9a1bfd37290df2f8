"""The shared booted VM for every end-to-end test (QEMU under TCG here).

One VM per session: a loopback HTTP server serves vm-image/out like a release, then
`toolbox init --manifest-url ...` and `toolbox up` run once; at the end `toolbox delete -f`
must leave nothing behind. Tests get a `Toolbox` (fixture `toolbox_vm`): the instance
name, the environment (TOOLBOX_HOME ...) and helpers that run the real CLI.

Skips when vm-image/out/toolbox.iso is missing, unless TOOLBOX_REQUIRE_E2E=1 (then fails).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers_http import FileServer

REPO = Path(__file__).resolve().parents[2]
IMAGE_OUT = REPO / "vm-image" / "out"
CLI_TIMEOUT = 900  # seconds for one CLI call (a TCG boot is slow on a busy host)


def require_image() -> None:
    if (IMAGE_OUT / "toolbox.iso").is_file() and (IMAGE_OUT / "manifest.json").is_file():
        return
    message = f"no guest image in {IMAGE_OUT} (build it with: make -C vm-image)"
    if os.environ.get("TOOLBOX_REQUIRE_E2E") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Toolbox:
    """A toolbox home with one instance, driven through the real CLI."""

    name: str
    home: Path
    server_url: str  # the loopback release server; /v1/ is vm-image/out
    env: dict[str, str] = field(default_factory=dict)

    @property
    def instance_dir(self) -> Path:
        return self.home / self.name

    @property
    def docker_host(self) -> str:
        return f"unix://{self.instance_dir / 'docker.sock'}"

    def run(self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`toolbox ARGS -n NAME` (the name is added when the command takes one)."""
        argv = [sys.executable, "-m", "toolbox", *args]
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"toolbox {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the guest (as the `toolbox` user; sudo is passwordless)."""
        return self.run("ssh", "-n", self.name, "--", "sh", "-c", command, check=check)

    def qemu_pid(self) -> int | None:
        try:
            return int((self.instance_dir / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None


def toolbox_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBOX_") and k != "DOCKER_HOST"}
    env.update(TOOLBOX_HOME=str(home), TOOLBOX_ACCEL="tcg", PYTHONPATH=str(REPO))
    return env


@pytest.fixture(scope="session")
def release_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """Loopback HTTP server: /v1/ is vm-image/out; tests may add more releases under root."""
    require_image()
    root = tmp_path_factory.mktemp("releases")
    (root / "v1").symlink_to(IMAGE_OUT)
    server = FileServer(root)
    yield server
    server.close()


@pytest.fixture(scope="session")
def toolbox_vm(release_server: FileServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toolbox]:
    """THE booted VM, shared by every e2e test of the session. Leave it running."""
    home = tmp_path_factory.mktemp("tbhome")
    tb = Toolbox(name="e2e", home=home, server_url=release_server.url, env=toolbox_env(home))
    tb.run("init", "-n", tb.name, "--memory", "1G", "--manifest-url", f"{release_server.url}/v1/manifest.json")
    try:
        tb.run("up", "-n", tb.name)
        yield tb
    finally:
        pid = tb.qemu_pid()
        tb.run("delete", "-f", "-n", tb.name, check=False)
        leftovers = list(tb.instance_dir.parent.glob(f"{tb.name}*"))
        alive = pid is not None and _running(pid)
        if pid is not None and alive:
            os.kill(pid, 9)  # our own VM: never leave it running
        assert not leftovers and not alive, f"delete left {leftovers} (qemu alive: {alive})"


def _running(pid: int, grace: float = 5.0) -> bool:
    """Whether the process lives (a zombie waiting for its parent does not count)."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.2)
    return True
