"""`toolbox shellinit --docker-context` with the real docker CLI (a temp DOCKER_CONFIG, so the
user's contexts are never touched) and `toolbox doctor` over the fake driver and a real
guest agent in a thread: each problem found, with its advice, and exit code 1."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolbox import doctor, hostagent

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    return config


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=60, env=os.environ.copy())


def test_shellinit_prints_testcontainers_settings(cli: Any, inited: Path) -> None:
    out = cli("shellinit", "--shell", "bash").stdout
    assert f"export DOCKER_HOST='unix://{inited / 'docker.sock'}'" in out
    assert "export TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE='/run/toolbox/docker.sock'" in out
    assert "export TESTCONTAINERS_HOST_OVERRIDE='127.0.0.1'" in out


@pytest.mark.skipif(not Path(DOCKER).exists(), reason="needs the docker CLI")
def test_shellinit_docker_context_creates_updates_selects(cli: Any, engine: Any, env: Path, docker_config: Path) -> None:
    result = cli("shellinit", "--docker-context", "--shell", "bash")
    assert result.exit_code == 0, result.output
    assert "unset DOCKER_HOST" in result.stdout and "TESTCONTAINERS_HOST_OVERRIDE='127.0.0.1'" in result.stdout
    assert "docker context 'toolbox'" in result.stderr
    assert docker("context", "show").stdout.strip() == "toolbox"
    version = docker("--context", "toolbox", "version", "--format", "{{.Server.Os}}")
    assert version.returncode == 0 and version.stdout.strip() == "linux", version.stderr
    docker("context", "use", "default")
    again = cli("shellinit", "--docker-context")  # the context exists now: updated, selected again
    assert again.exit_code == 0, again.output
    assert docker("context", "show").stdout.strip() == "toolbox"
    endpoint = json.loads(docker("context", "inspect", "toolbox").stdout)[0]["Endpoints"]["docker"]["Host"]
    assert endpoint == f"unix://{env / 'default' / 'docker.sock'}"


def test_shellinit_docker_context_without_docker(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(inited))  # no docker there
    result = cli("shellinit", "--docker-context")
    assert result.exit_code == 1 and "docker is not installed" in result.output and "Traceback" not in result.output


def test_doctor_on_a_stopped_instance(cli: Any, inited: Path) -> None:
    result = cli("doctor")
    assert result.exit_code == 1
    assert "✗ vm: stopped" in result.stdout and "→ start it with: toolbox up -n default" in result.stdout
    assert "✓ hypervisor" in result.stdout and "- docker socket: the VM is stopped" in result.stdout
    report = json.loads(cli("doctor", "--json").stdout)
    assert report["ok"] is False and [c["name"] for c in report["checks"] if c["status"] == "fail"] == ["vm"]


def test_doctor_finds_bad_modes_and_a_missing_key(cli: Any, inited: Path) -> None:
    os.chmod(inited, 0o755)
    os.chmod(inited / "id_ed25519", 0o644)
    (inited / "ssh_host_ed25519_key.pub").unlink()
    checks = {c["name"]: c for c in json.loads(cli("doctor", "--json").stdout)["checks"]}
    assert checks[f"mode {inited}"]["advice"] == f"run: chmod go-wrx {inited}"
    assert checks["id_ed25519"]["advice"] == f"run: chmod 600 {inited / 'id_ed25519'}"
    assert "is missing" in checks["ssh_host_ed25519_key.pub"]["detail"]
    assert "toolbox init" in checks["ssh_host_ed25519_key.pub"]["advice"]


def test_doctor_without_an_instance(cli: Any, env: Path) -> None:
    result = cli("doctor", "-n", "nothere")
    assert result.exit_code == 1 and "'nothere' does not exist" in result.stdout and "toolbox init -n nothere" in result.stdout


@pytest.fixture
def ssh_banner() -> Iterator[int]:
    """A listener that greets like sshd (the forwarded SSH port of a running VM)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.2 fake\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


def test_doctor_all_green_then_the_socket_gone(cli: Any, inited: Path, engine: Any, ssh_banner: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    vm = json.loads((inited / "fake-vm.json").read_text())
    (inited / "fake-vm.json").write_text(json.dumps({**vm, "state": "running"}))
    text = (inited / "instance.toml").read_text()
    (inited / "instance.toml").write_text(text.replace(f"ssh_port = {vm['spec_port']}", f"ssh_port = {ssh_banner}"))
    (inited / "hostagent.pid").write_text(f"{os.getpid()}\n")  # a live process stands for the host agent
    assert hostagent.read_pid(inited / "hostagent.pid") == os.getpid()
    result = cli("doctor")
    assert result.exit_code == 0, result.output
    assert "✓ docker socket" in result.stdout and "answers /_ping (OK)" in result.stdout
    assert f"✓ ssh: 127.0.0.1:{ssh_banner} (SSH-2.0-OpenSSH_9.2 fake)" in result.stdout
    assert re.search(r"✓ clock: guest [+-]\d+ ms from the host \(via the guest agent\)\n", result.stdout)
    assert engine.clock_set == []
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() - 5_000_000_000)  # the host 5 s behind the guest
    stepped = cli("doctor")
    assert stepped.exit_code == 0 and "the agent set the guest clock" in stepped.stdout
    assert re.search(r"✓ clock: guest \+5\d\d\d ms", stepped.stdout) and len(engine.clock_set) == 1
    monkeypatch.setattr(time, "time_ns", real)
    assert "- ports: the host agent has not reported yet" in stepped.stdout
    report = {"ssh": {"connected": True}, "ports": [{"port": 18080, "proto": "tcp", "problems": []},
                                                     {"port": 18081, "proto": "udp", "problems": ["address already in use"]}]}
    (inited / "hostagent.json").write_text(json.dumps(report))
    taken = cli("doctor")
    assert taken.exit_code == 1
    assert "✗ port 18081/udp: not forwarded to the host: address already in use" in taken.stdout
    assert "→ stop the host program on port 18081 (see: lsof -i :18081)" in taken.stdout
    report["ports"].pop()
    (inited / "hostagent.json").write_text(json.dumps(report))
    assert "✓ ports: 1 published port(s) forwarded" in cli("doctor").stdout
    (inited / "docker.sock").unlink()
    (inited / "docker.sock").touch()  # there, but nothing listens (a dead host agent's leftover)
    broken = cli("doctor")
    assert broken.exit_code == 1
    assert "✗ docker socket" in broken.stdout and "→ restart the host agent: toolbox up -n default" in broken.stdout
    assert "- clock: the docker socket does not answer" in broken.stdout


def test_doctor_clock_over_ssh_without_the_route(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An older guest agent (404 for the clock route): the drift comes from `date` over SSH."""
    from toolbox.engine.client import EngineClient
    from toolbox.errors import EngineError
    from toolbox.paths import InstancePaths

    def no_route(*a: Any, **k: Any) -> Any:
        raise EngineError(404, "page not found")

    monkeypatch.setattr(EngineClient, "json", no_route)
    ipaths = InstancePaths("default", tmp_path)
    monkeypatch.setattr(doctor, "ssh_drift_ms", lambda *a: 12.0)
    assert doctor.clock(ipaths, None, "default") == doctor.ok("clock", "guest +12 ms from the host (via ssh date)")
    monkeypatch.setattr(doctor, "ssh_drift_ms", lambda *a: -4000.0)
    check = doctor.clock(ipaths, None, "default")
    assert check.failed and check.advice == "set it from the host's: toolbox restart -n default"
