"""Volumes, mounts, docker cp, limits and restart policies on the session's shared VM (QEMU
under TCG), through the real docker CLI and the host agent's socket. One `toolbox restart`
serves every check that needs a reboot; the VM is left running for the tests after these."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import Toolbox
from registry import RegistryServer, registry  # noqa: F401  (the session's registry fixture)
from docker_session import docker_cli, docker_env  # noqa: F401  (docker_env: a fixture)

pytestmark = pytest.mark.e2e
IMAGE = "learn/tutorial"
BIND_DIR = "/var/lib/toolbox/e2e-bind"  # a guest directory, made by the agent on first -v


def ok(env: dict[str, str], *args: str) -> str:
    out = docker_cli(env, *args)
    assert out.returncode == 0, f"docker {' '.join(args)}: {out.stderr}"
    return out.stdout


def wait_for(env: dict[str, str], name: str, template: str, want: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    got = ""
    while time.monotonic() < deadline:
        got = docker_cli(env, "inspect", "-f", template, name).stdout.strip()
        if got == want:
            return got
        time.sleep(1)
    raise AssertionError(f"{name}: {template} is {got!r}, never {want!r}")


def test_named_volume_outlives_its_container_and_copies_up(docker_env: dict[str, str]) -> None:  # noqa: F811
    env = docker_env
    try:
        assert ok(env, "volume", "create", "--label", "suite=e2e", "keep").strip() == "keep"
        ok(env, "run", "--rm", "-v", "keep:/data", IMAGE, "sh", "-c", "echo persisted > /data/f")
        assert ok(env, "run", "--rm", "-v", "keep:/data:ro", IMAGE, "cat", "/data/f") == "persisted\n"
        doc = json.loads(ok(env, "volume", "inspect", "keep"))[0]
        assert doc["Mountpoint"] == "/var/lib/toolbox/volumes/keep/_data" and doc["Labels"] == {"suite": "e2e"}
        assert ok(env, "volume", "ls", "-q", "--filter", "label=suite=e2e").split() == ["keep"]
        # an empty volume takes the image's content at its path (copy-up); nocopy does not
        assert ok(env, "run", "--rm", "-v", "etcvol:/etc", IMAGE, "cat", "/etc/motd") == "Welcome to the tutorial\n"
        out = docker_cli(env, "run", "--rm", "--mount", "type=volume,source=bare,target=/etc,volume-nocopy", IMAGE, "cat", "/etc/motd")
        assert out.returncode != 0 and "No such file" in out.stderr
        # in use, even by a stopped container: Docker's 409; the engine keeps serving
        cid = ok(env, "create", "-v", "keep:/data", IMAGE, "true").strip()
        out = docker_cli(env, "volume", "rm", "keep")
        assert out.returncode == 1 and f"remove keep: volume is in use - [{cid}]" in out.stderr
        ok(env, "rm", cid)
        assert ok(env, "version", "-f", "{{.Server.Os}}").strip() == "linux"
    finally:
        docker_cli(env, "volume", "rm", "-f", "keep", "etcvol", "bare")


def test_bind_mounts_tmpfs_and_invalid_specs(toolbox_vm: Toolbox, docker_env: dict[str, str]) -> None:  # noqa: F811
    env = docker_env
    ok(env, "run", "--rm", "-v", f"{BIND_DIR}:/b", IMAGE, "sh", "-c", "echo written-inside > /b/x")
    assert toolbox_vm.ssh(f"sudo cat {BIND_DIR}/x").stdout == "written-inside\n"  # really the guest's directory
    out = docker_cli(env, "run", "--rm", "-v", f"{BIND_DIR}:/b:ro", IMAGE, "sh", "-c", "cat /b/x; echo no > /b/y")
    assert out.returncode != 0 and out.stdout == "written-inside\n" and "Read-only file system" in out.stderr
    out = docker_cli(env, "run", "--rm", "--mount", f"type=bind,source={BIND_DIR},target=/m,readonly", IMAGE, "touch", "/m/z")
    assert out.returncode != 0 and "Read-only file system" in out.stderr
    out = docker_cli(env, "run", "--rm", "--tmpfs", "/scratch:size=1m", "--mount", "type=tmpfs,target=/t,tmpfs-mode=1770",
                     IMAGE, "sh", "-c", "grep -E ' /(scratch|t) ' /proc/mounts")  # fmt: skip
    lines = sorted(out.stdout.splitlines())
    assert len(lines) == 2 and "size=1024k" in lines[0] and "mode=1770" in lines[1], out.stdout + out.stderr
    out = docker_cli(env, "run", "--rm", "--mount", "type=bind,source=/nonexistent,target=/x", IMAGE, "true")
    assert out.returncode == 125
    assert 'invalid mount config for type "bind": bind source path does not exist: /nonexistent' in out.stderr
    out = docker_cli(env, "run", "--rm", "-v", "vol:relative", IMAGE, "true")
    assert out.returncode == 125 and "invalid volume specification: 'vol:relative'" in out.stderr
    assert ok(env, "run", "--rm", IMAGE, "echo", "still serving") == "still serving\n"


def test_volumes_from_and_anonymous_volumes(docker_env: dict[str, str]) -> None:  # noqa: F811
    env = docker_env
    before = set(ok(env, "volume", "ls", "-q").split())
    try:
        ok(env, "create", "--name", "donor", "-v", "/shared", IMAGE, "true")
        anon = set(ok(env, "volume", "ls", "-q").split()) - before
        assert len(anon) == 1 and len(next(iter(anon))) == 64
        ok(env, "run", "--rm", "--volumes-from", "donor", IMAGE, "sh", "-c", "echo from-a-friend > /shared/s")
        out = docker_cli(env, "run", "--rm", "--volumes-from", "donor:ro", IMAGE, "sh", "-c", "cat /shared/s; touch /shared/t")
        assert out.stdout == "from-a-friend\n" and "Read-only file system" in out.stderr
        mounts = json.loads(ok(env, "inspect", "-f", "{{json .Mounts}}", "donor"))
        assert [(m["Type"], m["Destination"], m["Driver"], m["RW"]) for m in mounts] == [("volume", "/shared", "local", True)]
    finally:
        docker_cli(env, "rm", "-v", "donor")
    assert set(ok(env, "volume", "ls", "-q").split()) == before  # rm -v took the anonymous volume


def test_cp_both_ways_running_and_stopped(docker_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    env = docker_env
    src = tmp_path / "in.txt"
    try:
        ok(env, "run", "-d", "--name", "cpv", "-v", "cpvol:/data", IMAGE, "sleep", "600")
        src.write_text("while running\n")
        ok(env, "cp", str(src), "cpv:/data/")
        assert ok(env, "exec", "cpv", "cat", "/data/in.txt") == "while running\n"
        ok(env, "exec", "cpv", "sh", "-c", "echo made inside > /data/out.txt")
        ok(env, "cp", "cpv:/data/out.txt", str(tmp_path / "out1.txt"))
        assert (tmp_path / "out1.txt").read_text() == "made inside\n"
        ok(env, "kill", "cpv")
        src.write_text("while stopped\n")
        ok(env, "cp", str(src), "cpv:/data/")  # into the volume's path of a stopped container
        ok(env, "cp", "cpv:/data/out.txt", str(tmp_path / "out2.txt"))
        assert (tmp_path / "out2.txt").read_text() == "made inside\n"
        assert ok(env, "run", "--rm", "-v", "cpvol:/v", IMAGE, "cat", "/v/in.txt") == "while stopped\n"
    finally:
        docker_cli(env, "rm", "-f", "cpv")
        docker_cli(env, "volume", "rm", "cpvol")


def test_limits_in_cgroup_inspect_stats_and_update(docker_env: dict[str, str]) -> None:  # noqa: F811
    env = docker_env
    try:
        ok(env, "run", "-d", "--name", "lim", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "50", IMAGE, "sleep", "600")
        files = ok(env, "exec", "lim", "cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/pids.max")
        assert files.split("\n")[:3] == ["67108864", "50000 100000", "50"]
        hc = json.loads(ok(env, "inspect", "-f", "{{json .HostConfig}}", "lim"))
        assert (hc["Memory"], hc["NanoCpus"], hc["PidsLimit"]) == (64 << 20, 500_000_000, 50)
        usage, limit, pids = ok(env, "stats", "--no-stream", "--format", "{{.MemUsage}}|{{.PIDs}}", "lim").strip().replace(" / ", "|").split("|")
        assert limit == "64MiB" and pids == "1" and not usage.startswith("0B"), usage
        ok(env, "update", "--memory", "128m", "--pids-limit", "60", "--restart", "on-failure:2", "lim")
        assert ok(env, "exec", "lim", "cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max").split() == ["134217728", "60"]
        assert ok(env, "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "lim").strip() == "on-failure"
    finally:
        docker_cli(env, "rm", "-f", "lim")


def test_restart_policies_across_agent_kill_and_reboot(toolbox_vm: Toolbox, docker_env: dict[str, str]) -> None:  # noqa: F811
    env = docker_env
    names = ["always", "unless", "unless-stopped-by-hand", "norestart"]
    loop = "echo boot >> /data/boots; trap 'exit 0' TERM; while true; do sleep 1; done"
    try:
        ok(env, "run", "-d", "--name", "always", "--restart", "always", "-v", "rebootvol:/data", IMAGE, "sh", "-c", loop)
        ok(env, "run", "-d", "--name", "unless", "--restart", "unless-stopped", IMAGE, "sleep", "100000")
        ok(env, "run", "-d", "--name", "unless-stopped-by-hand", "--restart", "unless-stopped", IMAGE, "sleep", "100000")
        ok(env, "run", "-d", "--name", "norestart", IMAGE, "sleep", "100000")
        ok(env, "stop", "-t", "1", "unless-stopped-by-hand")
        # the agent killed: the containers run on under their monitors, and policies still hold
        started = ok(env, "inspect", "-f", "{{.State.StartedAt}}", "always").strip()
        toolbox_vm.ssh("sudo pkill -9 -f '^python3 -m toolbox_agent'")
        time.sleep(2)
        wait_for(env, "always", "{{.State.Status}} {{.State.StartedAt}}", f"running {started}")
        ok(env, "kill", "always")  # not a stop: `always` brings it back
        wait_for(env, "always", "{{.State.Status}} {{.RestartCount}}", "running 1")
        toolbox_vm.run("restart", "-n", toolbox_vm.name)
        for name, want in (("always", "running"), ("unless", "running"), ("unless-stopped-by-hand", "exited"), ("norestart", "exited")):
            wait_for(env, name, "{{.State.Status}}", want)
        assert ok(env, "exec", "always", "cat", "/data/boots") == "boot\nboot\nboot\n"  # the volume kept every run's line
        assert ok(env, "run", "--rm", "-v", "rebootvol:/d", IMAGE, "wc", "-l", "/d/boots").split()[0] == "3"
    finally:
        docker_cli(env, "rm", "-f", *names)
        docker_cli(env, "volume", "rm", "rebootvol")
