"""The real docker CLI and docker SDK against the guest agent, through the host agent's
socket and `toolbox shellinit`, on the session's shared VM (QEMU under TCG).

Images come from Debian's docker-registry on loopback (tests/e2e/registry.py), reached
from the guest at 10.0.2.2:PORT; the guest agent is told about it (registry mirror and
insecure registry) by rewriting /run/toolbox/agent.json and restarting the agent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import docker
import pytest
from docker_session import DOCKER, docker_cli, docker_env  # noqa: F401  (docker_env: a fixture)
from registry import registry  # noqa: F401  (the session's registry fixture)

pytestmark = pytest.mark.e2e


def test_seed_session_verbatim(docker_env: dict[str, str]) -> None:
    script = (
        'eval "$(toolbox shellinit)"\n'
        "docker version\n"
        "docker search tutorial\n"
        "docker pull learn/tutorial\n"
        'docker run learn/tutorial echo "hello word"\n'
    )
    env = {k: v for k, v in docker_env.items() if k != "DOCKER_HOST"}
    out = subprocess.run(["bash", "-e"], input=script, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Client:" in out.stdout and "Server:" in out.stdout
    assert "learn/tutorial" in out.stdout
    assert "Status: " in out.stdout
    assert out.stdout.rstrip().endswith("hello word")


def test_failing_command_exit_code_and_missing_program(docker_env: dict[str, str]) -> None:
    out = docker_cli(docker_env, "run", "--rm", "learn/tutorial", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (out.returncode, out.stdout, out.stderr) == (3, "out\n", "err\n")
    out = docker_cli(docker_env, "run", "--rm", "learn/tutorial", "no-such-program")
    assert out.returncode == 127 and "executable file not found" in out.stderr


def test_detached_logs_follow_stop_rm(docker_env: dict[str, str]) -> None:
    cid = docker_cli(docker_env, "run", "-d", "learn/tutorial", "sh", "-c",
                     "trap 'echo bye; exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done").stdout.strip()  # fmt: skip
    assert len(cid) == 64
    follow = subprocess.Popen([DOCKER, "logs", "-f", cid], env=docker_env, stdout=subprocess.PIPE, text=True)
    time.sleep(4)
    assert docker_cli(docker_env, "stop", cid).returncode == 0
    out, _ = follow.communicate(timeout=60)
    assert out.startswith("tick 1\n") and out.rstrip().endswith("bye")
    assert docker_cli(docker_env, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", cid).stdout.strip() == "exited 0"
    assert cid[:12] in docker_cli(docker_env, "ps", "-a", "--filter", "status=exited").stdout
    assert docker_cli(docker_env, "rm", cid).returncode == 0
    assert cid[:12] not in docker_cli(docker_env, "ps", "-a").stdout


def _tmux(session: str, command: str, env: dict[str, str]) -> None:
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                    f"DOCKER_HOST={env['DOCKER_HOST']} {command}; echo EXIT=$?; sleep 60"], check=True, env=env)  # fmt: skip


def _screen_until(session: str, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = subprocess.run(["tmux", "capture-pane", "-t", session, "-p"], capture_output=True, text=True).stdout
        if text in screen:
            return screen
        time.sleep(0.5)
    raise AssertionError(f"{text!r} never appeared on the terminal:\n{screen}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_run_it_through_tmux(docker_env: dict[str, str]) -> None:
    _tmux("tb-run-it", f"{DOCKER} run -it --rm learn/tutorial sh", docker_env)
    try:
        _screen_until("tb-run-it", "/ #")
        subprocess.run(["tmux", "send-keys", "-t", "tb-run-it", "echo typed $((6*7)); stty size; exit 5", "Enter"], check=True)
        screen = _screen_until("tb-run-it", "EXIT=")
        assert "typed 42" in screen and "30 100" in screen and "EXIT=5" in screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", "tb-run-it"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_exec_it_through_tmux(docker_env: dict[str, str]) -> None:
    assert docker_cli(docker_env, "run", "-d", "--name", "execbox", "learn/tutorial", "sleep", "600").returncode == 0
    try:
        _tmux("tb-exec-it", f"{DOCKER} exec -it execbox sh", docker_env)
        _screen_until("tb-exec-it", "/ #")
        subprocess.run(["tmux", "send-keys", "-t", "tb-exec-it", "echo in-exec; exit 9", "Enter"], check=True)
        screen = _screen_until("tb-exec-it", "EXIT=")
        assert "in-exec" in screen and "EXIT=9" in screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", "tb-exec-it"], capture_output=True)
        docker_cli(docker_env, "rm", "-f", "execbox")


def test_stdin_pipe_and_name_conflict(docker_env: dict[str, str]) -> None:
    out = docker_cli(docker_env, "run", "-i", "--rm", "learn/tutorial", "cat", input="through stdin\n")
    assert out.stdout == "through stdin\n"
    assert docker_cli(docker_env, "run", "-d", "--name", "taken", "learn/tutorial", "sleep", "600").returncode == 0
    try:
        out = docker_cli(docker_env, "run", "--name", "taken", "learn/tutorial", "true")
        assert out.returncode == 125 and 'The container name "/taken" is already in use' in out.stderr
        out = docker_cli(docker_env, "rm", "taken")
        assert out.returncode != 0 and "container is running" in out.stderr
    finally:
        assert docker_cli(docker_env, "rm", "-f", "taken").returncode == 0


def test_docker_sdk(docker_env: dict[str, str]) -> None:
    client = docker.DockerClient(base_url=docker_env["DOCKER_HOST"], version="auto", timeout=300)
    assert client.containers.run("learn/tutorial", ["echo", "from sdk"], remove=True) == b"from sdk\n"
    c = client.containers.run("learn/tutorial", ["sh", "-c", "echo logged; sleep 600"], detach=True)
    try:
        assert c.exec_run(["sh", "-c", "cat /etc/motd; exit 4"]) == (4, b"Welcome to the tutorial\n")
        deadline = time.monotonic() + 60
        while b"logged" not in c.logs() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert c.logs() == b"logged\n"
    finally:
        c.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(c.id)


def test_cp_stats_top_inspect_and_filters(docker_env: dict[str, str], tmp_path: Path) -> None:
    run = docker_cli(docker_env, "run", "-d", "--name", "toolbelt", "--label", "suite=e2e", "learn/tutorial", "sleep", "600")
    assert run.returncode == 0, run.stderr
    try:
        src = tmp_path / "note.txt"
        src.write_text("copied in\n")
        assert docker_cli(docker_env, "cp", str(src), "toolbelt:/tmp/").returncode == 0
        assert docker_cli(docker_env, "exec", "toolbelt", "cat", "/tmp/note.txt").stdout == "copied in\n"
        assert docker_cli(docker_env, "cp", "toolbelt:/etc/motd", str(tmp_path / "motd")).returncode == 0
        assert (tmp_path / "motd").read_text() == "Welcome to the tutorial\n"
        stats = docker_cli(docker_env, "stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "toolbelt").stdout.split()
        assert stats == ["toolbelt", "1"]
        assert "sleep 600" in docker_cli(docker_env, "top", "toolbelt").stdout
        names = docker_cli(docker_env, "ps", "--filter", "label=suite=e2e", "--filter", "ancestor=learn/tutorial", "--format", "{{.Names}}")
        assert names.stdout.split() == ["toolbelt"]
        caps = docker_cli(docker_env, "exec", "toolbelt", "grep", "-E", "^(CapEff|Seccomp):", "/proc/1/status").stdout.split()
        assert caps == ["CapEff:", "00000000a80425fb", "Seccomp:", "2"]  # Docker's default capabilities, filtered
        doc = json.loads(docker_cli(docker_env, "inspect", "toolbelt").stdout)[0]
        assert doc["State"]["Running"] and doc["Config"]["Labels"]["suite"] == "e2e" and doc["Name"] == "/toolbelt"
    finally:
        docker_cli(docker_env, "rm", "-f", "toolbelt")
