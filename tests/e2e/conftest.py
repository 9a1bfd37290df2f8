"""The shared booted VM for every end-to-end test (QEMU under TCG here).

One VM per session: a loopback HTTP server serves vm-image/out like a release, then
`toolbox init --manifest-url ...` and `toolbox up` run once; at the end `toolbox delete -f`
must leave nothing behind. Tests get a `Toolbox` (fixture `toolbox_vm`): the instance
name, the environment (TOOLBOX_HOME ...) and helpers that run the real CLI.

Skips when vm-image/out/toolbox.iso is missing, unless TOOLBOX_REQUIRE_E2E=1 (then fails).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_http import FileServer

from toolbox_cli import IMAGE_OUT, Toolbox, require_image, toolbox_env


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
    # Shares: the stand-in home folder (the default) and a read-only one (test_shares.py).
    read_only = tmp_path_factory.mktemp("tbshare-ro")
    (read_only / "hello").write_text("read-only from the host\n")
    tb.run("init", "-n", tb.name, "--memory", "1G", "--mount", f"{read_only}:ro",
           "--manifest-url", f"{release_server.url}/v1/manifest.json")
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
