"""The agent as init starts it early in the boot (vm-image init-steps.sh, step_agent): it
imports its modules at once, then waits for TOOLBOX_AGENT_GATE before it touches any state,
and from then on writes to TOOLBOX_AGENT_LOG (the data disk's log, mounted meanwhile).

A real `python -m toolbox_agent` process, as in the VM (dry network, a state root in tmp).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

AGENT_SRC = Path(__file__).resolve().parents[3] / "guest-agent"


def _ping(sock: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(4096)


def _wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Path]]]:
    short = Path(tempfile.mkdtemp(prefix="tbg", dir="/tmp"))  # unix socket paths stay short
    paths = {"root": tmp_path / "state", "socket": short / "docker.sock", "gate": tmp_path / "booted",
             "early": tmp_path / "early.log", "log": tmp_path / "data-disk.log"}
    env = {**os.environ, "PYTHONPATH": str(AGENT_SRC), "TOOLBOX_AGENT_ROOT": str(paths["root"]),
           "TOOLBOX_AGENT_SOCKET": str(paths["socket"]), "TOOLBOX_AGENT_GATE": str(paths["gate"]),
           "TOOLBOX_AGENT_LOG": str(paths["log"])}
    with open(paths["early"], "ab") as early:
        proc = subprocess.Popen([sys.executable, "-m", "toolbox_agent"], env=env, stdout=early, stderr=early)
    try:
        yield proc, paths
    finally:
        proc.terminate()
        proc.wait(10)
        for p in short.iterdir():
            p.unlink()
        short.rmdir()


def test_agent_waits_for_the_gate_then_serves_and_logs_to_the_data_disk_log(gated: tuple) -> None:
    proc, paths = gated
    # Its modules take well under this natively; the gate is not there: nothing may happen.
    time.sleep(2.0)
    assert proc.poll() is None
    assert not paths["socket"].exists()
    assert not paths["root"].exists(), "state touched before init released the agent"
    assert os.getpriority(os.PRIO_PROCESS, proc.pid) == 10  # init's steps and sshd come first
    gate_at = time.monotonic()  # CLOCK_MONOTONIC: the agent's marks are on the same clock
    paths["gate"].touch()
    assert _wait_for(paths["socket"], 20), paths["early"].read_text()
    assert _ping(paths["socket"]).startswith(b"HTTP/1.1 200")
    assert paths["root"].is_dir()
    log = paths["log"].read_text()
    assert "serving the Docker API" in log
    # one line with the start-up's steps, in seconds since boot, in order
    line = next(x for x in log.splitlines() if "start-up, seconds since boot" in x)
    steps = dict(part.rsplit(" ", 1) for part in line.split("seconds since boot: ")[1].split(", "))
    assert list(steps) == ["process", "main", "imported", "released", "built", "listening"]
    times = [float(t) for t in steps.values()]
    assert times == sorted(times)
    assert steps["released"] and float(steps["released"]) >= gate_at  # it waited for the gate
    if os.geteuid() == 0:  # back to the normal priority once released (__main__ lowered it)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == 0
    assert "serving the Docker API" not in paths["early"].read_text()


def test_agent_without_a_gate_starts_at_once(tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="tbg", dir="/tmp"))
    sock = short / "docker.sock"
    env = {**os.environ, "PYTHONPATH": str(AGENT_SRC), "TOOLBOX_AGENT_ROOT": str(tmp_path / "state"),
           "TOOLBOX_AGENT_SOCKET": str(sock)}
    env.pop("TOOLBOX_AGENT_GATE", None)
    env.pop("TOOLBOX_AGENT_LOG", None)
    proc = subprocess.Popen([sys.executable, "-m", "toolbox_agent"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        assert _wait_for(sock, 20)
        assert _ping(sock).startswith(b"HTTP/1.1 200")
    finally:
        proc.terminate()
        proc.wait(10)
        sock.unlink(missing_ok=True)
        short.rmdir()
