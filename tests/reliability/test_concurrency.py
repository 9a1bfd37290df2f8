"""Commands racing on one instance: the per-instance lock (toolbox/lock.py) must make three
concurrent `toolbox up` boot one VM, and `down` during `up` must leave a clean instance.

What toolbox does (and these tests hold it to): `up` waits for the lock as long as a boot
may take (instance.UP_LOCK_TIMEOUT), so in a three-way race one boots the VM and the other
two wait, find it running and succeed. Other commands wait up to 10 s
(lock.DEFAULT_TIMEOUT), then exit 1 with "is busy with another toolbox command": that is
what `down` during a boot under TCG meets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from toolbox_cli import Toolbox
from procs import alive, qemu_pids, wait_gone
from tally import Tally

pytestmark = pytest.mark.e2e
BUSY = "is busy with another toolbox command"


def _spawn(tb: Toolbox, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "toolbox", *args, "-n", tb.name], env=tb.env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _state(tb: Toolbox) -> str:
    return tb.run("status", "-n", tb.name, check=False).stdout.split("\n", 1)[0].strip()


def _stopped(tb: Toolbox) -> None:
    tb.run("down", "-n", tb.name, "--timeout", "20")
    assert _state(tb) == "stopped"
    assert qemu_pids(tb.instance_dir) == []


def _wait_for_qemu(tb: Toolbox, proc: subprocess.Popen[str], timeout: float = 60) -> int:
    """The daemonized QEMU's pid, once its pid file names a live process."""
    deadline = time.monotonic() + timeout
    while (pid := tb.qemu_pid()) is None or not alive(pid):
        assert proc.poll() is None, f"up ended before QEMU started: {proc.communicate()}"
        assert time.monotonic() < deadline, "QEMU did not start"
        time.sleep(0.1)
    return pid


def test_three_concurrent_ups_boot_one_vm(toolbox_vm: Toolbox, tally: Tally) -> None:
    tb = toolbox_vm
    _stopped(tb)
    procs = [_spawn(tb, "up") for _ in range(3)]
    seen: set[int] = set()
    try:
        while any(p.poll() is None for p in procs):  # watch for a second VM during the race
            pids = qemu_pids(tb.instance_dir, {p.pid for p in procs})
            assert len(pids) <= 1, f"two QEMUs for one instance: {pids}"
            seen.update(pids)
            time.sleep(0.2)
    finally:
        _reap(procs)
    results = [(p.returncode, *p.communicate()) for p in procs]
    # Each `up` waits for the one booting, then finds the VM running: all succeed.
    assert [code for code, _, _ in results] == [0, 0, 0], results
    assert qemu_pids(tb.instance_dir) == [tb.qemu_pid()], seen
    assert _state(tb) == "running"
    again = _spawn(tb, "up")  # and one more on the running VM changes nothing
    assert again.wait(120) == 0, again.communicate()
    assert qemu_pids(tb.instance_dir) == [tb.qemu_pid()]
    tally.add("3 concurrent `toolbox up`", injected=1, survived=1)


def test_down_during_up_leaves_a_clean_instance(toolbox_vm: Toolbox, tally: Tally) -> None:
    tb = toolbox_vm
    _stopped(tb)
    up = _spawn(tb, "up")
    try:
        _down_during(tb, up)
    finally:
        _reap([up], timeout=60)
    assert qemu_pids(tb.instance_dir) == [] and _state(tb) == "stopped"
    assert _no_live_pid(tb.instance_dir / "hostagent.pid")
    tb.run("up", "-n", tb.name)  # the next up works
    assert tb.ssh("echo ok").stdout.strip() == "ok"
    assert len(qemu_pids(tb.instance_dir)) == 1
    tally.add("`down` (and Ctrl-C) during `up`", injected=1, survived=1)


def _down_during(tb: Toolbox, up: subprocess.Popen[str]) -> None:
    qemu = _wait_for_qemu(tb, up)
    down = tb.run("down", "-n", tb.name, check=False)  # while up holds the lock and waits for SSH
    if down.returncode == 0:  # up was done within down's lock wait: down then stopped it
        up.wait(60)
    else:  # the lock holds it off: a clear message, nothing changed
        assert down.returncode == 1 and BUSY in down.stderr, down.stderr
        assert alive(qemu) and up.poll() is None
        up.send_signal(signal.SIGINT)  # the user gives up on the boot (Ctrl-C) ...
        if up.wait(60) == 0:  # ... too late: up had finished (a quiet host boots within down's lock wait)
            assert _state(tb) == "running", "up exited 0 but left no running instance"
        tb.run("down", "-n", tb.name, "--timeout", "10")  # ... and stops the half-booted VM
    assert wait_gone(qemu), "QEMU outlived down"


def _reap(procs: list[subprocess.Popen[str]], timeout: float = 600) -> None:
    """Wait for our CLI processes; kill any still running (a failed test must not leave them)."""
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _no_live_pid(pid_file: os.PathLike[str]) -> bool:
    try:
        return not alive(int(open(pid_file).read().strip()))
    except (OSError, ValueError):
        return True
