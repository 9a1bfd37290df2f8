"""toolbox's own container commands (run, ps, images, logs, exec, stop, rm, rmi, inspect)
through CliRunner, against a real guest agent running in a thread of this process with
fake_crun.py standing in for crun (tests/unit/agent/agent_harness.py): the instance's
docker.sock is a link to that agent's socket, as the host agent's would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "agent"))
from agent_harness import AgentThread  # noqa: E402
from e2e.registry import registry  # noqa: E402,F401  (the session's loopback registry)

from toolbox.cli.engine_views import PullProgress, ago, human_size, ports  # noqa: E402
from toolbox.engine.client import split_reference  # noqa: E402
from toolbox.engine.session import RunOptions, container_config  # noqa: E402
from toolbox.engine.stdio import HEADER, FrameDecoder  # noqa: E402
from toolbox.errors import UsageError  # noqa: E402


def test_run_prints_and_passes_the_exit_code(cli: Any, engine: AgentThread) -> None:
    result = cli("run", "--rm", "fake", "echo", "hi")
    assert (result.exit_code, result.stdout) == (0, "hi\n")
    result = cli("run", "--rm", "fake", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert cli("ps", "-aq").stdout == ""  # --rm removed both


def test_run_stdin_env_name_and_detach(cli: Any, engine: AgentThread) -> None:
    result = cli("run", "-i", "--rm", "-e", "GREETING=hello", "fake", "sh", "-c", 'echo "$GREETING"; cat', input="piped\n")
    assert (result.exit_code, result.stdout) == (0, "hello\npiped\n"), result.output
    detached = cli("run", "-d", "--name", "web", "fake", "sh", "-c", "echo started; sleep 30")
    assert detached.exit_code == 0 and len(detached.stdout.strip()) == 64
    table = cli("ps").stdout
    assert table.splitlines()[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert detached.stdout[:12] in table and "web" in table and "Up " in table
    again = cli("run", "--name", "web", "fake", "true")
    assert again.exit_code == 125 and 'The container name "/web" is already in use' in again.output
    # `toolbox ps`'s fast path (no typer, no rich), as a user's shell runs it, prints
    # what typer's path prints, byte for byte (taken before and after it: "Up 2 seconds"
    # may tick in between)
    for args in (["ps"], ["ps", "-a"], ["ps", "-aq"], ["ps", "--all", "--quiet", "-n", "default"]):
        before = cli(*args).stdout
        fast = subprocess.run([sys.executable, "-m", "toolbox", *args], capture_output=True, text=True, timeout=60)
        assert fast.returncode == 0 and fast.stdout in (before, cli(*args).stdout), (fast.stdout, before)
    assert detached.stdout[:12] in fast.stdout


def test_ps_fast_path_takes_only_plain_ps() -> None:
    from toolbox.cli import _ps_args

    assert _ps_args(["ps"]) == ("default", False, False)
    assert _ps_args(["ps", "-aq", "--instance", "dev"]) == ("dev", True, True)
    assert _ps_args(["ps", "--name=dev", "-q"]) == ("dev", False, True)
    for other in (["ps", "--help"], ["ps", "-n"], ["ps", "-ax"], ["ps", "--debug"], ["status"], []):
        assert _ps_args(other) is None, other


def test_ps_fast_path_says_why_without_an_instance(tmp_path: Path) -> None:
    env = {**os.environ, "TOOLBOX_HOME": str(tmp_path)}
    fast = subprocess.run([sys.executable, "-m", "toolbox", "ps", "-n", "nope"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert fast.returncode != 0 and "nope" in fast.stderr and fast.stdout == ""


def test_ctrl_c_goes_to_the_container(cli: Any, engine: AgentThread) -> None:
    """SIGINT to toolbox while attached (no TTY) reaches the container, whose exit code is ours."""
    import os
    import signal
    import threading

    timer = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = cli("run", "--rm", "fake", "sh", "-c", "trap 'echo got INT; exit 7' INT; echo ready; sleep 30 & wait")
    finally:
        timer.cancel()
    assert (result.exit_code, result.stdout) == (7, "ready\ngot INT\n"), result.output


def test_logs_exec_stop_rm_inspect(cli: Any, engine: AgentThread) -> None:
    assert cli("run", "-d", "--name", "box", "fake", "sh", "-c", "echo out; echo err >&2; sleep 30").exit_code == 0
    assert cli("exec", "box", "sh", "-c", "echo in-exec; exit 7").stdout == "in-exec\n"
    assert cli("exec", "box", "sh", "-c", "exit 7").exit_code == 7
    logs = cli("logs", "box")
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
    doc = json.loads(cli("inspect", "box").stdout)
    assert doc[0]["Name"] == "/box" and doc[0]["State"]["Running"] is True
    busy = cli("rm", "box")
    assert busy.exit_code == 1 and "container is running" in busy.output
    assert cli("stop", "-t", "1", "box").stdout == "box\n"
    assert json.loads(cli("inspect", "box").stdout)[0]["State"]["Running"] is False
    assert "box" in cli("ps", "-a").stdout and "box" not in cli("ps").stdout
    assert cli("rm", "box").stdout == "box\n"
    assert cli("ps", "-aq").stdout == ""


def test_missing_things_are_one_line_with_dockers_codes(cli: Any, engine: AgentThread) -> None:
    for args in (("rm", "ghost"), ("stop", "ghost"), ("logs", "ghost"), ("exec", "ghost", "true")):
        result = cli(*args)
        assert result.exit_code == 1, args
        assert "Error: No such container: ghost" in result.output and "Traceback" not in result.output
    missing = cli("inspect", "ghost")
    assert missing.exit_code == 1 and "No such object: ghost" in missing.output and missing.stdout.strip() == "[]"
    no_program = cli("run", "--rm", "fake", "no-such-program")
    assert no_program.exit_code == 127 and "not found" in no_program.output


def test_pull_images_rmi_inspect_with_the_real_store(cli: Any, env: Path, tmp_path: Path, registry: Any) -> None:
    """The agent's real image store (no fake) pulling from the loopback registry."""
    agent = AgentThread(tmp_path)
    agent.images = None  # build_agent then makes the real store and its routes
    agent.settings.insecure_registries = [registry.host]
    with agent:
        (env / "default").mkdir(parents=True)
        (env / "default" / "docker.sock").symlink_to(agent.settings.socket)
        ref = f"{registry.host}/learn/tutorial"
        pulled = cli("pull", ref)
        assert pulled.exit_code == 0, pulled.output
        assert pulled.stdout.startswith("Digest: sha256:") and f"Downloaded newer image for {ref}:latest" in pulled.stdout
        assert "Pulling from learn/tutorial" in pulled.stderr
        assert "Image is up to date" in cli("pull", ref).stdout
        rows = cli("images").stdout.splitlines()
        assert rows[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
        image_id = json.loads(cli("inspect", ref).stdout)[0]["Id"]
        assert rows[1].split()[:3] == [ref, "latest", image_id[7:19]]
        assert cli("images", "-q").stdout == image_id[7:19] + "\n"
        missing = cli("pull", f"{registry.host}/no/such:tag")
        assert missing.exit_code == 1 and "Error:" in missing.output and "Traceback" not in missing.output
        removed = cli("rmi", ref)
        assert removed.exit_code == 0 and f"Untagged: {ref}:latest" in removed.stdout and "Deleted: sha256:" in removed.stdout
        again = cli("rmi", ref)
        assert again.exit_code == 1 and "No such image" in again.output
        assert cli("images", "-q").stdout == ""


def test_tty_needs_a_terminal(cli: Any, engine: AgentThread) -> None:
    result = cli("run", "-it", "--rm", "fake", "sh")
    assert result.exit_code == 2 and "the input device is not a TTY" in result.output
    assert cli("ps", "-aq").stdout == ""  # refused before anything was created


def test_engine_down_says_what_to_do(cli: Any, env: Path) -> None:
    (env / "default").mkdir(parents=True)
    result = cli("ps")
    assert result.exit_code == 1
    assert "cannot reach the container engine of 'default'" in result.output and "toolbox up -n default" in result.output
    assert cli("ps", "-n", "other").exit_code == 1 and "does not exist" in cli("ps", "-n", "other").output


def test_stop_without_containers_is_down(cli: Any, inited: Path) -> None:
    result = cli("stop")
    assert result.exit_code == 0 and "Stopped 'default'" in result.output
    assert "no console output yet" in cli("logs").output


def test_run_options_become_dockers_create_body() -> None:
    body = container_config(RunOptions("img", ["sh"], rm=True, interactive=True, env=["A=1"], volumes=["./src:/src:ro"],
                                       publish=["8080:80", "127.0.0.1:5353:53/udp", "9000"]))
    assert body["HostConfig"]["AutoRemove"] is True and body["Env"] == ["A=1"]
    assert body["HostConfig"]["Binds"] == [f"{Path.cwd() / 'src'}:/src:ro"]
    assert body["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
        "9000/tcp": [{"HostIp": "", "HostPort": ""}]}
    assert body["OpenStdin"] and body["StdinOnce"] and body["AttachStdin"]
    with pytest.raises(UsageError):
        container_config(RunOptions("img", publish=["http:80"]))
    with pytest.raises(UsageError):
        container_config(RunOptions("img", volumes=["/only"]))


def test_run_labels_network_restart_hostname_become_dockers_body() -> None:
    body = container_config(RunOptions("img", hostname="box", labels=["a=1", "b", "c=x=y"], network="host",
                                       restart="on-failure:3"))
    assert body["Hostname"] == "box" and body["Labels"] == {"a": "1", "b": "", "c": "x=y"}
    assert body["HostConfig"]["NetworkMode"] == "host"
    assert body["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert container_config(RunOptions("img", restart="no", rm=True))["HostConfig"]["RestartPolicy"]["Name"] == ""
    for bad in ("sometimes", "always:3", "on-failure:x"):
        with pytest.raises(UsageError, match="invalid restart policy"):
            container_config(RunOptions("img", restart=bad))
    with pytest.raises(UsageError, match="conflicting options: --restart and --rm"):
        container_config(RunOptions("img", restart="always", rm=True))
    with pytest.raises(UsageError, match="invalid label"):
        container_config(RunOptions("img", labels=["=v"]))


def test_run_with_labels_and_restart_reaches_the_engine(cli: Any, engine: AgentThread) -> None:
    result = cli("run", "-d", "--name", "tagged", "-l", "team=web", "--restart", "unless-stopped", "--hostname", "h1",
                 "fake", "sh", "-c", "sleep 30")
    assert result.exit_code == 0, result.output
    doc = json.loads(cli("inspect", "tagged").stdout)[0]
    assert doc["Config"]["Labels"] == {"team": "web"} and doc["Config"]["Hostname"] == "h1"
    assert doc["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    bad = cli("run", "--restart", "sometimes", "fake", "true")
    assert bad.exit_code == 2 and "invalid restart policy 'sometimes'" in bad.output


def test_frames_split_anywhere() -> None:
    data = HEADER.pack(1, 3) + b"out" + HEADER.pack(2, 4) + b"err\n"
    decoder = FrameDecoder()
    got = [f for i in range(len(data)) for f in decoder.feed(data[i:i + 1])]
    assert got == [(1, b"out"), (2, b"err\n")]


def test_views() -> None:
    assert human_size(4_260_000) == "4.26MB" and human_size(999) == "999B"
    assert ago(1000, now=1000 + 180) == "3 minutes ago" and ago(0, now=0.2) == "Less than a second ago"
    assert ports({"Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]}) == "0.0.0.0:8080->80/tcp"
    assert split_reference("127.0.0.1:5000/busybox") == ("127.0.0.1:5000/busybox", "latest")
    assert split_reference("busybox:1.36") == ("busybox", "1.36")
    assert split_reference("busybox@sha256:ab") == ("busybox@sha256:ab", None)


def test_pull_progress_prints_dockers_summary(capsys: pytest.CaptureFixture[str]) -> None:
    progress = PullProgress()
    for msg in ({"status": "Pulling from library/busybox", "id": "latest"},
                {"status": "Pulling fs layer", "id": "aaa"},
                {"status": "Downloading", "id": "aaa", "progressDetail": {"current": 10, "total": 20}},
                {"status": "Pull complete", "id": "aaa"},
                {"status": "Digest: sha256:0123"},
                {"status": "Status: Downloaded newer image for busybox:latest"}):
        progress(msg)
    out = capsys.readouterr()
    assert out.out == "Digest: sha256:0123\nStatus: Downloaded newer image for busybox:latest\n"
    assert "latest: Pulling from library/busybox" in out.err
