"""The whole life of an instance through the real CLI, real QEMU (TCG), real guest image,
all fetched from a loopback HTTP server as a release would be.

Uses the session's shared VM (tests/e2e/conftest.py) and leaves it running at the end, so
other e2e modules can still use it. Boots are costly under TCG (~20-60 s each), so each
test here reuses the state the previous one left: run the module in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from toolbox_cli import IMAGE_OUT, Toolbox, require_image, toolbox_env
from helpers_http import FileServer

pytestmark = pytest.mark.e2e

MARKER = "/var/lib/toolbox/e2e-marker"


def _status(tb: Toolbox) -> str:
    return tb.run("status", "-n", tb.name, check=False).stdout


def test_init_downloaded_and_verified(toolbox_vm: Toolbox) -> None:
    info = json.loads(toolbox_vm.run("info", "--json", "-n", toolbox_vm.name).stdout)
    manifest = json.loads((IMAGE_OUT / "manifest.json").read_text())
    assert info["image"]["sha256"] == manifest["files"]["toolbox.iso"]["sha256"]
    cached = toolbox_vm.home / "cache" / info["image"]["sha256"]
    assert hashlib.sha256((cached / "toolbox.iso").read_bytes()).hexdigest() == info["image"]["sha256"]
    assert (cached / "vmlinuz").is_file() and (cached / "initrd.img").is_file()


def test_up_gives_ssh_and_status(toolbox_vm: Toolbox) -> None:
    out = toolbox_vm.ssh("uname -a").stdout
    assert out.startswith("Linux ")
    assert _status(toolbox_vm).strip() == "running"
    assert toolbox_vm.ssh("exit 42", check=False).returncode == 42  # the remote status comes back


def test_stdin_reaches_the_remote_command(toolbox_vm: Toolbox) -> None:
    out = toolbox_vm.run("ssh", "-n", toolbox_vm.name, "--", "tr", "a-z", "A-Z", input="piped\n").stdout
    assert out == "PIPED\n"


@pytest.mark.skipif(not shutil.which("ssh"), reason="needs the OpenSSH client")
def test_ssh_config_works_with_openssh(toolbox_vm: Toolbox, tmp_path: Path) -> None:
    block = toolbox_vm.run("ssh-config", "-n", toolbox_vm.name).stdout
    (tmp_path / "config").write_text(block)
    proc = subprocess.run(["ssh", "-F", str(tmp_path / "config"), "-o", "BatchMode=yes", f"toolbox-{toolbox_vm.name}",
                           "echo", "via-openssh"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "via-openssh"


def test_down_and_up_keep_the_data_disk(toolbox_vm: Toolbox) -> None:
    toolbox_vm.ssh(f"echo kept | sudo tee {MARKER} >/dev/null && sync")
    toolbox_vm.run("down", "-n", toolbox_vm.name)
    assert _status(toolbox_vm).startswith("stopped")
    toolbox_vm.run("up", "-n", toolbox_vm.name)
    assert toolbox_vm.ssh(f"cat {MARKER}").stdout.strip() == "kept"


def _second_release(server: FileServer) -> str:
    """v2: the v1 ISO with one extra file, so its sha256 differs (xorriso, no rebuild)."""
    if not shutil.which("xorriso"):
        pytest.skip("needs xorriso to make the second image")
    v2 = server.root / "v2"
    v2.mkdir(exist_ok=True)
    marker = v2 / "upgrade-marker"
    marker.write_text("v2\n")
    iso = v2 / "toolbox.iso"
    subprocess.run(["xorriso", "-indev", str(IMAGE_OUT / "toolbox.iso"), "-outdev", str(iso),
                    "-boot_image", "any", "keep", "-map", str(marker), "/upgrade-marker"],
                   check=True, capture_output=True)
    manifest = json.loads((IMAGE_OUT / "manifest.json").read_text())
    sha = hashlib.sha256(iso.read_bytes()).hexdigest()
    manifest["version"] = manifest["version"] + "-e2e2"
    manifest["files"] = {"toolbox.iso": {"sha256": sha, "size": iso.stat().st_size}}
    (v2 / "manifest.json").write_text(json.dumps(manifest))
    return sha


def test_upgrade_keeps_the_data(toolbox_vm: Toolbox, release_server: FileServer) -> None:
    sha = _second_release(release_server)
    same = toolbox_vm.run("upgrade", "-n", toolbox_vm.name, "--manifest-url", f"{release_server.url}/v1/manifest.json")
    assert "up to date" in same.stderr
    toolbox_vm.run("upgrade", "-n", toolbox_vm.name, "--manifest-url", f"{release_server.url}/v2/manifest.json")
    info = json.loads(toolbox_vm.run("info", "--json", "-n", toolbox_vm.name).stdout)
    assert info["image"]["sha256"] == sha and info["state"] == "running"
    pid = toolbox_vm.qemu_pid()
    assert pid is not None and sha in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    assert toolbox_vm.ssh(f"cat {MARKER}").stdout.strip() == "kept"


def test_kill_9_is_seen_and_up_recovers(toolbox_vm: Toolbox) -> None:
    pid = toolbox_vm.qemu_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    status = _status(toolbox_vm)
    assert status.startswith("stopped") and len(status.strip().splitlines()) >= 2, status  # with the reason
    toolbox_vm.run("up", "-n", toolbox_vm.name)
    assert toolbox_vm.ssh(f"cat {MARKER}").stdout.strip() == "kept"


def test_save_and_resume(toolbox_vm: Toolbox) -> None:
    toolbox_vm.run("save", "-n", toolbox_vm.name)
    assert _status(toolbox_vm).startswith("suspended")
    toolbox_vm.run("resume", "-n", toolbox_vm.name)
    assert toolbox_vm.ssh(f"cat {MARKER}").stdout.strip() == "kept"


def test_status_is_fast(toolbox_vm: Toolbox) -> None:
    best = min(_timed(toolbox_vm) for _ in range(5))
    assert best < 0.5, f"toolbox status took {best:.3f} s"  # the 150 ms target is measured in bench/


def _timed(tb: Toolbox) -> float:
    start = time.perf_counter()
    tb.run("status", "-n", tb.name)
    return time.perf_counter() - start


# --- downloads, without a VM --------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path, release_server: FileServer) -> Toolbox:
    require_image()
    release_server.faults.__init__()  # type: ignore[misc]
    return Toolbox(name="dl", home=tmp_path / "home", server_url=release_server.url, env=toolbox_env(tmp_path / "home"))


def test_interrupted_download_resumes(fresh: Toolbox, release_server: FileServer) -> None:
    release_server.faults.truncate_next = 1
    out = fresh.run("download", "--manifest-url", f"{fresh.server_url}/v1/manifest.json").stdout.split()
    assert release_server.faults.ranges, "the second request should have asked for the rest"
    assert hashlib.sha256(Path(out[2]).read_bytes()).hexdigest() == out[1]


def test_part_from_a_killed_download_is_resumed(fresh: Toolbox, release_server: FileServer) -> None:
    manifest = json.loads((IMAGE_OUT / "manifest.json").read_text())
    sha = manifest["files"]["toolbox.iso"]["sha256"]
    part = fresh.home / "cache" / sha / "toolbox.iso.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((IMAGE_OUT / "toolbox.iso").read_bytes()[: 10 << 20])
    fresh.run("download", "--manifest-url", f"{fresh.server_url}/v1/manifest.json")
    assert release_server.faults.ranges == [f"bytes={10 << 20}-"]
    assert (fresh.home / "cache" / sha / "toolbox.iso").is_file() and not part.exists()


def test_corrupted_download_is_refused_and_not_cached(fresh: Toolbox, release_server: FileServer) -> None:
    release_server.faults.corrupt = True
    proc = fresh.run("init", "-n", "dl", "--manifest-url", f"{fresh.server_url}/v1/manifest.json", check=False)
    assert proc.returncode == 1 and "sha256 mismatch" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3  # one red line (+ progress, no traceback)
    assert not (fresh.home / "dl").exists()
    assert not any((fresh.home / "cache").iterdir())


def test_delete_leaves_nothing(fresh: Toolbox) -> None:
    fresh.run("init", "-n", "dl", "--manifest-url", f"{fresh.server_url}/v1/manifest.json")
    assert (fresh.home / "dl" / "disk.qcow2").exists()
    fresh.run("delete", "-f", "-n", "dl")
    assert not (fresh.home / "dl").exists()
    assert "dl" not in fresh.run("list").stdout
