"""CLI tests: typer's CliRunner, TOOLBOX_HOME in tmp_path, the fake driver as "qemu",
and an image (a tiny ISO made with xorriso) served from loopback."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_http import FileServer
from typer.testing import CliRunner

from toolbox import drivers
from toolbox.cli import app


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TOOLBOX_HOME", str(home))
    # The user's home is shared by default: a folder of the test's own stands in for it.
    (tmp_path / "user").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("TOOLBOX_ACCEL", "tcg")
    monkeypatch.delenv("TOOLBOX_IMAGE_URL", raising=False)
    monkeypatch.setitem(drivers.DRIVERS, "qemu", "fake_driver:FakeDriver")
    return home


def make_iso(root: Path, marker: str = "") -> Path:
    src = root / "isosrc"
    (src / "boot").mkdir(parents=True, exist_ok=True)
    (src / "boot" / "vmlinuz").write_bytes(b"KERNEL")
    (src / "boot" / "initrd.img").write_bytes(b"INITRD" + marker.encode())
    (src / "boot" / "cmdline.txt").write_text("console=ttyS0\n")
    iso = root / "toolbox.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-V", "TOOLBOX", "-o", str(iso), str(src)],
                   check=True, capture_output=True)
    return iso


def write_release(root: Path, version: str, marker: str = "") -> str:
    root.mkdir(parents=True, exist_ok=True)
    iso = make_iso(root, marker)
    sha = hashlib.sha256(iso.read_bytes()).hexdigest()
    (root / "SHA256SUMS").write_text(f"{sha}  toolbox.iso\n")
    (root / "manifest.json").write_text(json.dumps({
        "format": 1, "name": "toolbox", "version": version, "arch": "x86_64", "cmdline": "console=ttyS0",
        "files": {"toolbox.iso": {"sha256": sha, "size": iso.stat().st_size}},
    }))
    return sha


@pytest.fixture(scope="session")
def release_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("xorriso"):
        pytest.skip("needs xorriso")
    root = tmp_path_factory.mktemp("release")
    write_release(root / "v1", "1.0")
    write_release(root / "v2", "2.0", marker="v2")
    return root


@pytest.fixture(scope="session")
def server(release_root: Path) -> Iterator[FileServer]:
    srv = FileServer(release_root)
    yield srv
    srv.close()


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Any:
        return self.runner.invoke(app, list(args), input=input)


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture
def engine(tmp_path: Path, env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real guest agent in a thread (fake_crun.py for crun), served as the instance's
    docker.sock (a link to its socket, as the host agent's would be). Its clock route
    would set THIS host's clock: `clock_settime_ns` records the request instead."""
    import time

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "agent"))
    from agent_harness import AgentThread

    clock_set: list[int] = []
    monkeypatch.setattr(time, "clock_settime_ns", lambda clk, ns: clock_set.append(ns))

    with AgentThread(tmp_path) as agent:
        (env / "default").mkdir(parents=True, exist_ok=True)
        (env / "default" / "docker.sock").symlink_to(agent.settings.socket)
        agent.clock_set = clock_set
        yield agent


@pytest.fixture
def inited(cli: Cli, server: FileServer, env: Path) -> Path:
    server.faults.__init__()  # type: ignore[misc]
    result = cli("init", "--manifest-url", f"{server.url}/v1/manifest.json")
    assert result.exit_code == 0, result.output
    return env / "default"
