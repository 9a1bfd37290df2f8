"""`toolbox status` stays fast: a path without typer, and nothing heavy imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolbox.cli import _status_name
from toolbox.state import guest_hung, guest_panicked

HEAVY = ("paramiko", "requests", "pycdlib", "cryptography", "typer", "pydantic", "rich")


@pytest.mark.parametrize(("argv", "name"), [
    (["status"], "default"), (["status", "-n", "dev"], "dev"), (["status", "--name", "x"], "x"),
    (["status", "--name=y"], "y"), (["status", "--help"], None), (["--debug", "status"], None),
    (["up"], None), ([], None),
])
def test_fast_path_takes_only_plain_status(argv: list[str], name: str | None) -> None:
    assert _status_name(argv) == name


def test_status_imports_nothing_heavy(inited: Path, env: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "toolbox", "status"],
        env={**os.environ, "TOOLBOX_HOME": str(env)}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("stopped"), proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), imported & set(HEAVY)


def test_panic_is_read_from_the_console_tail(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    assert guest_panicked(log) is None
    log.write_bytes(b"boot...\n[ 6.7] Kernel panic - not syncing: Attempted to kill init! ]---\nmore\n")
    assert guest_panicked(log) == "Kernel panic - not syncing: Attempted to kill init!"
    assert guest_panicked(log, since=log.stat().st_size) is None  # an earlier boot's panic


def test_a_lockup_of_a_minute_or_more_is_a_hung_guest(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    assert guest_hung(log) is None
    # a starved vCPU's one short report is not a hung guest; the seen hang's reports grow
    log.write_bytes(b"[ 30.1] watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [kworker/0:1:12]\nready\n")
    assert guest_hung(log) is None
    log.write_bytes(b"[ 56.5] watchdog: BUG: soft lockup - CPU#0 stuck for 48s! [swapper/0:0]\n"
                    b"[ 84.6] watchdog: BUG: soft lockup - CPU#1 stuck for 74s! [sshd:214]\n[ 91.9] rcu: INFO: ...\n")
    assert guest_hung(log) == "soft lockup - CPU#1 stuck for 74s! [sshd:214]"
    assert guest_hung(log, since=log.stat().st_size) is None  # an earlier boot's hang
