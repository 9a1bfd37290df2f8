"""Containers through the real docker CLI and the docker SDK, with fake_crun.py standing in
for crun (which cannot run on the test host): create/start/attach/wait/logs/exec/stop/rm."""

from __future__ import annotations

import subprocess
import time

import docker
import pytest

import agent_harness  # noqa: F401
from toolbox_agent.containers.model import merge_config
from toolbox_agent.containers.spec import DEFAULT_CAPS, SpecInput, build_spec, resolve_user, signal_number


def run(agent, *args: str, input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(["docker", *args], env=agent.env(), capture_output=True, text=True, input=input, timeout=timeout)


def test_merge_config_with_image() -> None:
    image = {"Cmd": ["sh"], "Entrypoint": None, "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/w", "User": "nobody"}
    merged = merge_config({"Cmd": ["echo", "hi"], "Env": ["A=2", "B=3"], "Entrypoint": None}, image)
    assert merged["Cmd"] == ["echo", "hi"] and merged["Env"] == ["PATH=/bin", "A=2", "B=3"]
    assert merged["WorkingDir"] == "/w" and merged["User"] == "nobody"
    assert merge_config({"Entrypoint": ["/x"]}, {"Cmd": ["sh"], "Entrypoint": ["/e"]}).get("Cmd") is None


def test_spec_has_docker_defaults() -> None:
    inp = SpecInput("c1", ["sh"], ["PATH=/bin"], "/", 0, 0, [], "h", "/r", False, "/h", "/hn", "/rc",
                    {"SecurityOpt": ["no-new-privileges"], "CapDrop": ["NET_RAW"], "Memory": 1 << 20})  # fmt: skip
    s = build_spec(inp)
    caps = s["process"]["capabilities"]["bounding"]
    assert "CAP_NET_RAW" not in caps and set(caps) == set(DEFAULT_CAPS) - {"CAP_NET_RAW"}
    assert s["process"]["noNewPrivileges"] is True
    assert "/proc/kcore" in s["linux"]["maskedPaths"] and "/proc/sys" in s["linux"]["readonlyPaths"]
    assert s["linux"]["cgroupsPath"] == "/toolbox/c1" and s["linux"]["resources"]["memory"]["limit"] == 1 << 20
    assert {m["destination"] for m in s["mounts"]} >= {"/proc", "/dev", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}
    denied = s["linux"]["seccomp"]["syscalls"][0]["names"]
    assert "kexec_load" in denied and "mount" in denied and "read" not in denied
    inp.host_config = {"Privileged": True}
    assert "seccomp" not in build_spec(inp)["linux"]


def test_resolve_user_and_signals() -> None:
    passwd = "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/:/bin/false\n"
    group = "root:x:0:\nwww:x:33:\nextra:x:50:web\n"
    assert resolve_user("web", passwd, group) == (33, 33, [50])
    assert resolve_user("1000:50", passwd, group) == (1000, 50, [])
    with pytest.raises(ValueError):
        resolve_user("nosuch", passwd, group)
    assert signal_number("SIGTERM") == 15 and signal_number("KILL") == 9 and signal_number("2") == 2


def test_run_output_and_exit_code(agent) -> None:  # type: ignore[no-untyped-def]
    out = run(agent, "run", "fake", "echo", "hello word")
    assert out.returncode == 0 and out.stdout == "hello word\n", out.stderr
    out = run(agent, "run", "--name", "failing", "fake", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert out.returncode == 3 and out.stdout == "out\n" and out.stderr == "err\n"
    out = run(agent, "logs", "failing")
    assert out.stdout == "out\n" and out.stderr == "err\n"


def test_name_conflict_and_rm_running(agent) -> None:  # type: ignore[no-untyped-def]
    assert run(agent, "run", "-d", "--name", "web", "fake", "sleep", "30").returncode == 0
    out = run(agent, "run", "--name", "web", "fake", "true")
    assert out.returncode == 125 and 'Conflict. The container name "/web" is already in use' in out.stderr
    out = run(agent, "rm", "web")
    assert out.returncode == 1 and "container is running" in out.stderr
    assert run(agent, "rm", "-f", "web").returncode == 0
    assert "No such" in run(agent, "inspect", "web").stderr


def test_detached_logs_follow_stop_rm(agent) -> None:  # type: ignore[no-untyped-def]
    cid = run(agent, "run", "-d", "fake", "sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.2; done; sleep 30").stdout.strip()
    time.sleep(1)
    logs = subprocess.Popen(["docker", "logs", "-f", "-t", cid], env=agent.env(), stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert run(agent, "stop", "-t", "1", cid).returncode == 0
    out, _ = logs.communicate(timeout=10)
    assert [line.split(" ", 1)[1] for line in out.splitlines()] == ["tick 1", "tick 2", "tick 3"]
    assert run(agent, "inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == "143"
    assert run(agent, "logs", "--tail", "1", cid).stdout == "tick 3\n"
    ps = run(agent, "ps", "-a", "--filter", "status=exited", "--format", "{{.ID}}").stdout.split()
    assert cid[:12] in ps
    assert run(agent, "rm", cid).returncode == 0


def test_stdin_rm_and_exec(agent) -> None:  # type: ignore[no-untyped-def]
    out = run(agent, "run", "-i", "--rm", "fake", "cat", input="piped\n")
    assert out.returncode == 0 and out.stdout == "piped\n", out.stderr
    assert run(agent, "ps", "-aq").stdout.strip() == ""
    run(agent, "run", "-d", "--name", "box", "--label", "team=a", "fake", "sleep", "30")
    assert run(agent, "exec", "box", "echo", "from exec").stdout == "from exec\n"
    assert run(agent, "exec", "box", "sh", "-c", "exit 7").returncode == 7
    assert run(agent, "ps", "--filter", "label=team=a", "--format", "{{.Names}}").stdout.strip() == "box"
    assert run(agent, "rename", "box", "box2").returncode == 0
    assert run(agent, "kill", "box2").returncode == 0
    assert run(agent, "wait", "box2").stdout.strip() == "137"
    assert "box2" in run(agent, "container", "prune", "-f").stdout or run(agent, "ps", "-aq").stdout == ""


def test_missing_command_is_127_style_error(agent) -> None:  # type: ignore[no-untyped-def]
    out = run(agent, "run", "fake", "no-such-program")
    assert out.returncode in (125, 127) and "not found" in out.stderr


def test_sdk_run_logs_exec(agent) -> None:  # type: ignore[no-untyped-def]
    client = docker.DockerClient(base_url=agent.url, version="auto")
    assert client.containers.run("fake", ["echo", "sdk"], remove=True) == b"sdk\n"
    c = client.containers.run("fake", ["sleep", "30"], detach=True, name="sdkbox")
    assert c.status in ("created", "running")
    code, output = c.exec_run(["sh", "-c", "echo $IMAGE_VAR; exit 4"])
    assert (code, output) == (4, b"1\n")
    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited"
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("sdkbox")
    with pytest.raises(docker.errors.APIError) as info:
        client.api.create_container("fake", ["true"], name="bad name!")
    assert info.value.status_code == 400


def test_restart_policy_on_failure(agent) -> None:  # type: ignore[no-untyped-def]
    cid = run(agent, "run", "-d", "--restart", "on-failure:2", "fake", "sh", "-c", "echo run; exit 1").stdout.strip()
    deadline = time.time() + 20
    while time.time() < deadline and run(agent, "inspect", "-f", "{{.RestartCount}} {{.State.Status}}", cid).stdout.strip() != "2 exited":
        time.sleep(0.3)
    assert run(agent, "inspect", "-f", "{{.RestartCount}} {{.State.Status}}", cid).stdout.strip() == "2 exited"
    assert run(agent, "logs", cid).stdout == "run\nrun\nrun\n"


def test_docker_cp_in_and_out(agent, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "hello.txt"
    src.write_text("copied in\n")
    assert run(agent, "create", "--name", "cpbox", "fake", "true").returncode == 0
    assert run(agent, "cp", str(src), "cpbox:/etc/").returncode == 0
    assert run(agent, "cp", "cpbox:/etc/hello.txt", str(tmp_path / "out.txt")).returncode == 0
    assert (tmp_path / "out.txt").read_text() == "copied in\n"
    out = run(agent, "cp", "cpbox:/no/such", str(tmp_path / "x"))
    assert out.returncode == 1 and "Could not find the file /no/such" in out.stderr
