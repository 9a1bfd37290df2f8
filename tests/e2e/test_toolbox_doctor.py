"""`toolbox shellinit --docker-context` with the real docker CLI, and `toolbox doctor`, on
the session's shared VM: all green while it runs; a broken piece gives the advice that
mends it, and exit code 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Toolbox

pytestmark = pytest.mark.e2e
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


def _failures(vm: Toolbox) -> tuple[int, dict[str, dict[str, str]]]:
    out = vm.run("doctor", "-n", vm.name, "--json", check=False)
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    return out.returncode, {name: c for name, c in checks.items() if c["status"] != "ok"}


def test_doctor_all_green_on_the_running_vm(toolbox_vm: Toolbox) -> None:
    out = toolbox_vm.run("doctor", "-n", toolbox_vm.name, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("vm: running", "ssh: 127.0.0.1:", "docker socket:", "clock: guest", "hypervisor: qemu"):
        assert f"✓ {name}" in out.stdout, out.stdout
    assert "via the guest agent" in out.stdout and "✗" not in out.stdout


def test_doctor_advice_for_a_private_dir_and_a_lost_socket(toolbox_vm: Toolbox) -> None:
    idir = toolbox_vm.instance_dir
    os.chmod(idir, 0o755)
    try:
        code, bad = _failures(toolbox_vm)
        assert code == 1 and bad[f"mode {idir}"]["advice"] == f"run: chmod go-wrx {idir}", bad
    finally:
        os.chmod(idir, 0o700)
    (idir / "docker.sock").unlink()  # as a cleaner or a crash might: the host agent then exits
    try:
        code, bad = _failures(toolbox_vm)
        assert code == 1 and [n for n, c in bad.items() if c["status"] == "fail"] == ["docker socket"], bad
        assert bad["docker socket"]["advice"] == f"restart the host agent: toolbox up -n {toolbox_vm.name}"
        assert bad["clock"]["status"] == "skip"
    finally:
        toolbox_vm.run("up", "-n", toolbox_vm.name)  # the advice, followed (and the VM whole for later tests)
    deadline = time.monotonic() + 60
    while (result := _failures(toolbox_vm))[0] != 0 and time.monotonic() < deadline:
        time.sleep(2)
    assert result[0] == 0 and not [c for c in result[1].values() if c["status"] == "fail"], result


@pytest.mark.skipif(not Path(DOCKER).exists(), reason="needs the docker CLI")
def test_shellinit_docker_context_with_the_real_docker_cli(toolbox_vm: Toolbox, tmp_path: Path) -> None:
    env = {**toolbox_vm.env, "DOCKER_CONFIG": str(tmp_path / "docker-config")}  # never the user's contexts
    env.pop("DOCKER_HOST", None)
    argv = [sys.executable, "-m", "toolbox", "shellinit", "-n", toolbox_vm.name, "--docker-context", "--shell", "bash"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "unset DOCKER_HOST" in out.stdout
    assert "export TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE='/run/toolbox/docker.sock'" in out.stdout
    assert "export TESTCONTAINERS_HOST_OVERRIDE='127.0.0.1'" in out.stdout
    context = f"toolbox-{toolbox_vm.name}"

    def docker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True, timeout=120)

    assert docker("context", "show").stdout.strip() == context
    version = docker("--context", context, "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}")
    assert version.returncode == 0 and version.stdout.strip() == "linux/amd64", version.stderr
    assert docker("info", "--format", "{{.OperatingSystem}}").returncode == 0  # the selected context, no flag
    users = subprocess.run([DOCKER, "context", "show"], env=toolbox_vm.env, capture_output=True, text=True).stdout
    assert users.strip() != context  # the user's own docker config was never touched
