"""toolbox's own container commands (no docker CLI involved) on the session's shared VM:
run, ps, images, pull, logs, exec (-it through tmux, a real terminal), stop, rm, rmi,
inspect, all through the host agent's socket to the guest agent."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time

import pytest
import requests
from conftest import Toolbox
from registry import RegistryServer, free_port, registry  # noqa: F401  (the session's registry fixture)
from docker_session import GUEST, docker_env  # noqa: F401  (agent pointed at the registry)
from test_docker_cli import _screen_until, _tmux

pytestmark = pytest.mark.e2e


def tb(vm: Toolbox, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`toolbox ARGS` for the session's instance, never raising (the tests read the code)."""
    flag = "--instance" if args[0] == "run" else "-n"
    return vm.run(args[0], flag, vm.name, *args[1:], check=False, input=input, timeout=600)


def test_run_rm_echo_and_exit_codes(toolbox_vm: Toolbox, docker_env: dict[str, str]) -> None:
    out = tb(toolbox_vm, "run", "--rm", "learn/tutorial", "echo", "hi")
    assert (out.returncode, out.stdout) == (0, "hi\n"), out.stderr
    out = tb(toolbox_vm, "run", "--rm", "learn/tutorial", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (out.returncode, out.stdout, out.stderr) == (3, "out\n", "err\n")
    out = tb(toolbox_vm, "run", "--rm", "learn/tutorial", "no-such-program")
    assert out.returncode == 127 and "executable file not found" in out.stderr
    out = tb(toolbox_vm, "run", "-i", "--rm", "learn/tutorial", "cat", input="through stdin\n")
    assert out.stdout == "through stdin\n"


def test_pull_images_rmi_from_the_loopback_registry(toolbox_vm: Toolbox, docker_env: dict[str, str],
                                                   registry: RegistryServer) -> None:  # noqa: F811
    ref = f"{GUEST}:{registry.port}/test/whiteouts:latest"
    out = tb(toolbox_vm, "pull", ref)
    assert out.returncode == 0, out.stderr
    assert "Pulling from test/whiteouts" in out.stderr and f"Status: Downloaded newer image for {ref}" in out.stdout
    rows = tb(toolbox_vm, "images").stdout.splitlines()
    assert rows[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert [f"{GUEST}:{registry.port}/test/whiteouts", "latest"] in [r.split()[:2] for r in rows[1:]]
    assert json.loads(tb(toolbox_vm, "inspect", ref).stdout)[0]["RepoTags"] == [ref]
    out = tb(toolbox_vm, "rmi", ref)
    assert out.returncode == 0 and f"Untagged: {ref}" in out.stdout
    out = tb(toolbox_vm, "rmi", ref)
    assert out.returncode == 1 and "No such image" in out.stderr and "Traceback" not in out.stderr


def test_detached_ps_logs_stop_rm_inspect(toolbox_vm: Toolbox, docker_env: dict[str, str]) -> None:
    out = tb(toolbox_vm, "run", "-d", "--name", "tbweb", "-e", "WHO=toolbox", "learn/tutorial", "sh", "-c",
             "trap 'echo bye; exit 0' TERM; echo hello $WHO; while true; do sleep 1; done")
    assert out.returncode == 0 and len(out.stdout.strip()) == 64, out.stderr
    try:
        table = tb(toolbox_vm, "ps").stdout
        assert "tbweb" in table and out.stdout[:12] in table and "Up " in table
        assert tb(toolbox_vm, "exec", "tbweb", "sh", "-c", "cat /etc/motd; exit 4").returncode == 4
        assert tb(toolbox_vm, "stop", "tbweb").stdout == "tbweb\n"
        assert tb(toolbox_vm, "logs", "tbweb").stdout == "hello toolbox\nbye\n"
        state = json.loads(tb(toolbox_vm, "inspect", "tbweb").stdout)[0]["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0)
        assert "tbweb" not in tb(toolbox_vm, "ps").stdout and "tbweb" in tb(toolbox_vm, "ps", "-a").stdout
    finally:
        assert tb(toolbox_vm, "rm", "-f", "tbweb").returncode == 0
    gone = tb(toolbox_vm, "rm", "tbweb")
    assert gone.returncode == 1 and "No such container: tbweb" in gone.stderr


def test_run_publish_reaches_the_hosts_localhost(toolbox_vm: Toolbox, docker_env: dict[str, str]) -> None:
    port = free_port()
    out = tb(toolbox_vm, "run", "-d", "--name", "tbhttp", "-p", f"{port}:8080", "learn/tutorial",
             "httpd", "-f", "-p", "8080", "-h", "/etc")
    assert out.returncode == 0, out.stderr
    try:
        assert f"0.0.0.0:{port}->8080/tcp" in tb(toolbox_vm, "ps").stdout
        deadline = time.monotonic() + 60
        while True:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/motd", timeout=5).text
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, "the published port never answered on the host"
                time.sleep(1)
        assert body == "Welcome to the tutorial\n"
    finally:
        assert tb(toolbox_vm, "rm", "-f", "tbhttp").stdout == "tbhttp\n"


def _typed_in_terminal(vm: Toolbox, args: str, keys: str, env: dict[str, str]) -> str:
    """Run `toolbox ARGS` in a tmux pane (a real terminal, 100x30) with this session's home,
    wait for the shell prompt, type `keys`, and return the screen once toolbox exited."""
    session = "tb-own-" + args.split()[0]
    command = f"env TOOLBOX_HOME={vm.home} PYTHONPATH={vm.env['PYTHONPATH']} {shlex.quote(sys.executable)} -m toolbox {args}"
    _tmux(session, command, env)
    try:
        _screen_until(session, "/ #")
        subprocess.run(["tmux", "send-keys", "-t", session, keys, "Enter"], check=True)
        return _screen_until(session, "EXIT=")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_exec_it_and_run_it_through_tmux(toolbox_vm: Toolbox, docker_env: dict[str, str]) -> None:
    assert tb(toolbox_vm, "run", "-d", "--name", "tbexec", "learn/tutorial", "sleep", "600").returncode == 0
    try:
        screen = _typed_in_terminal(toolbox_vm, f"exec -it -n {toolbox_vm.name} tbexec sh",
                                    "echo in-exec $((6*7)); stty size; exit 9", docker_env)
        assert "in-exec 42" in screen and "30 100" in screen and "EXIT=9" in screen
    finally:
        tb(toolbox_vm, "rm", "-f", "tbexec")
    screen = _typed_in_terminal(toolbox_vm, f"run -it --rm --instance {toolbox_vm.name} learn/tutorial sh",
                                "tty; exit 5", docker_env)
    assert "/dev/pts/" in screen and "EXIT=5" in screen
