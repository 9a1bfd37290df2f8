"""Restart policies (decisions, Docker's backoff, the restarting state) and `docker update`,
through the real docker CLI with fake_crun.py standing in for crun."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import agent_harness  # noqa: F401
from toolbox_agent.containers.model import Container, State, should_restart
from toolbox_agent.containers.resources import cgroup_values
from toolbox_agent.containers.restarts import next_delay


def run(agent, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(["docker", *args], env=agent.env(), capture_output=True, text=True, timeout=30)


def _container(policy: str, retries: int = 0, **state: object) -> Container:
    hc = {"RestartPolicy": {"Name": policy, "MaximumRetryCount": retries}}
    return Container("c" * 64, "/c", "", "img", "sha256:x", "sh", [], {}, hc, State(**state), dir=Path("."))  # type: ignore[arg-type]


def test_policy_decisions_and_backoff() -> None:
    assert should_restart(_container("always", exit_code=0))
    assert not should_restart(_container("always", manually_stopped=True))
    assert should_restart(_container("always", manually_stopped=True), booting=True)  # Docker: back at daemon start
    assert not should_restart(_container("unless-stopped", manually_stopped=True), booting=True)
    assert should_restart(_container("unless-stopped"), booting=True)
    assert should_restart(_container("on-failure", exit_code=1)) and not should_restart(_container("on-failure", exit_code=0))
    limited = _container("on-failure", 2, exit_code=1)
    limited.restart_count = 2
    assert not should_restart(limited)
    assert not should_restart(_container("no", exit_code=1)) and not should_restart(_container("always", status="removing"))
    delays = [0.0]
    for _ in range(12):
        delays.append(next_delay(delays[-1], ran_for=0.5))
    assert delays[1:5] == [0.1, 0.2, 0.4, 0.8] and delays[-1] == 60.0  # doubling, capped at a minute
    assert next_delay(60.0, ran_for=10.0) == 0.1  # a run of 10 s resets it
    assert cgroup_values({"Memory": 64 << 20, "NanoCpus": 500_000_000, "PidsLimit": 50}) == {
        "memory.max": str(64 << 20), "cpu.max": "50000 100000", "pids.max": "50"}  # fmt: skip
    assert cgroup_values({}) == {"memory.max": "max", "cpu.max": "max 100000", "pids.max": "max"}


def test_always_backs_off_shows_restarting_and_stop_ends_it(agent) -> None:  # type: ignore[no-untyped-def]
    cid = run(agent, "run", "-d", "--restart", "always", "fake", "sh", "-c", "exit 1").stdout.strip()
    deadline = time.time() + 30
    seen = ["", "0"]
    while time.time() < deadline and not (seen[0] == "restarting" and int(seen[1]) >= 3):
        seen = run(agent, "inspect", "-f", "{{.State.Status}} {{.RestartCount}}", cid).stdout.split()
        time.sleep(0.05)
    assert seen[0] == "restarting" and int(seen[1]) >= 3  # 0.1 + 0.2 + 0.4 s of backoff behind it
    assert run(agent, "ps", "--format", "{{.Status}}").stdout.startswith("Restarting (1)")
    out = run(agent, "exec", cid, "true")
    assert out.returncode != 0 and "is restarting, wait until the container is running" in out.stderr
    assert run(agent, "stop", cid).returncode == 0
    count = run(agent, "inspect", "-f", "{{.RestartCount}}", cid).stdout.strip()
    assert int(count) >= 3
    time.sleep(1.5)
    assert run(agent, "inspect", "-f", "{{.State.Status}} {{.RestartCount}}", cid).stdout.strip() == f"exited {count}"
    assert run(agent, "start", cid).returncode == 0  # by hand: the count starts over
    assert run(agent, "inspect", "-f", "{{.RestartCount}}", cid).stdout.strip() in ("0", "1")
    assert run(agent, "rm", "-f", cid).returncode == 0


def test_update_restart_policy_and_limits(agent) -> None:  # type: ignore[no-untyped-def]
    assert run(agent, "create", "--name", "upd", "--memory", "32m", "fake", "true").returncode == 0
    out = run(agent, "update", "--restart", "on-failure:3", "--memory", "64m", "--memory-swap", "128m", "--cpus", "0.5",
              "--pids-limit", "50", "upd")  # fmt: skip
    assert out.returncode == 0, out.stderr
    hc = json.loads(run(agent, "inspect", "-f", "{{json .HostConfig}}", "upd").stdout)
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert (hc["Memory"], hc["NanoCpus"], hc["PidsLimit"]) == (64 << 20, 500_000_000, 50)
    out = run(agent, "update", "--memory", "1m", "upd")
    assert out.returncode == 1 and "Minimum memory limit allowed is 6MB" in out.stderr
    out = run(agent, "run", "--cpus", "64", "fake", "true")
    assert out.returncode == 125 and "Range of CPUs is from 0.01 to" in out.stderr
    assert run(agent, "run", "--rm", "--name", "auto", "-d", "fake", "sleep", "5").returncode == 0
    out = run(agent, "update", "--restart", "always", "auto")
    assert out.returncode == 1 and "Restart policy cannot be updated because AutoRemove is enabled" in out.stderr
    run(agent, "rm", "-f", "auto")


def test_restarts_at_agent_start_wait_until_the_api_answers() -> None:
    """recover() holds restarts by policy; start() releases them once the socket listens, so a
    boot with restart-policy containers answers /_ping as soon as one without them."""
    import asyncio

    from toolbox_agent.containers.restarts import RestartManager

    class Engine:
        def __init__(self, c: Container) -> None:
            self.containers = {c.id: c}
            self.started: list[str] = []

        async def start(self, cid: str, by_policy: bool = False) -> None:
            self.started.append(cid)

    async def scenario() -> tuple[list[str], list[str], str]:
        c = _container("always", status="exited", started_at="2026-11-28T10:00:00Z")
        engine = Engine(c)
        restarts = RestartManager(engine)  # type: ignore[arg-type]
        restarts.hold()
        restarts.at_boot(c)
        await asyncio.sleep(0.2)
        held = list(engine.started)
        status = c.state.status
        restarts.release()
        await asyncio.sleep(0.05)
        return held, engine.started, status

    held, started, status = asyncio.run(scenario())
    assert held == [] and status == "restarting" and started == ["c" * 64]
