"""kill -9 of the hypervisor while the guest writes to its data disk, several times: each
time `toolbox up` comes back, the disk mounts read-write without ext4 errors, and every
write the guest acknowledged after `sync` is there.

The guest writes a token file and syncs (committed), then loops: append a line to a
journal, sync, print "ACK <line>", churn an unsynced scratch file. The host kills QEMU
(SIGKILL) a moment after the first ACKs, so writes are in flight when it dies. Committed
means: the guest said so on stdout before the kill.

    TOOLBOX_RELIABILITY_KILLS=5 .venv/bin/pytest tests/reliability/test_crash.py   # more rounds (default 3)
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import pytest
from toolbox_cli import Toolbox
from procs import qemu_pids, wait_gone
from tally import Tally

pytestmark = pytest.mark.e2e
KILLS = int(os.environ.get("TOOLBOX_RELIABILITY_KILLS", "3"))
DIR = "/var/lib/toolbox/reliability"
ACKS_BEFORE_KILL = 3

WRITER = """set -e
sudo mkdir -p {dir}; sudo chown "$(id -u):$(id -g)" {dir}; cd {dir}
printf '%s\\n' {token} > committed-{round}; sync
echo COMMITTED
n=0
while :; do
  n=$((n + 1)); echo "{round}-$n" >> journal; sync; echo "ACK {round}-$n"
  dd if=/dev/urandom of=scratch bs=64k count=16 2>/dev/null
done
"""


def _write_until_killed(tb: Toolbox, round_: int, token: str) -> list[str]:
    """Start the writer, SIGKILL QEMU after a few ACKs; the journal lines acknowledged."""
    qemu = tb.qemu_pid()
    assert qemu is not None
    script = WRITER.format(dir=DIR, token=token, round=round_)
    proc = subprocess.Popen([sys.executable, "-m", "toolbox", "ssh", "-n", tb.name, "--", "sh", "-c", script],
                            env=tb.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    acked: list[str] = []
    committed = False
    deadline = time.monotonic() + 300
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            committed |= line.strip() == "COMMITTED"
            if line.startswith("ACK "):
                acked.append(line.split()[1])
            if len(acked) >= ACKS_BEFORE_KILL:
                time.sleep(0.3)  # let the next writes get under way
                break
            assert time.monotonic() < deadline, "the guest writer made no progress"
        assert committed, f"the writer did not commit: {proc.stderr.read() if proc.stderr else ''}"
        os.kill(qemu, signal.SIGKILL)
        assert wait_gone(qemu), "QEMU survived SIGKILL"
    finally:
        if proc.poll() is None:
            try:
                proc.wait(30)  # the SSH connection died with QEMU
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return acked


def test_kill_9_while_writing_loses_nothing_committed(toolbox_vm: Toolbox, tally: Tally) -> None:
    tb = toolbox_vm
    tb.run("up", "-n", tb.name)
    tokens: dict[int, str] = {}
    acked: list[str] = []
    failures: list[str] = []
    missing: set[str] = set()  # committed writes found missing so far (each counted once)
    for r in range(KILLS):
        tokens[r] = secrets.token_hex(8)
        acked += _write_until_killed(tb, r, tokens[r])
        status = tb.run("status", "-n", tb.name, check=False).stdout
        up = tb.run("up", "-n", tb.name, check=False)
        survived = up.returncode == 0 and len(qemu_pids(tb.instance_dir)) == 1
        now_missing: set[str] = set()
        if survived:
            files = tb.ssh(f"cd {DIR} && for r in {' '.join(map(str, tokens))}; do echo \"$r $(cat committed-$r)\"; done; "
                           "echo JOURNAL; cat journal").stdout  # fmt: skip
            head, _, journal = files.partition("JOURNAL\n")
            got = dict(line.split(" ", 1) for line in head.splitlines() if " " in line)
            now_missing |= {f"committed-{k}" for k, v in tokens.items() if got.get(str(k), "").strip() != v}
            lines = set(journal.split())
            now_missing |= {a for a in acked if a not in lines}
            mount = tb.ssh("grep ' /var/lib/toolbox ' /proc/mounts; sudo dmesg | grep -c 'EXT4-fs error' || true").stdout
            if " rw," not in mount or not mount.strip().endswith("0"):
                failures.append(f"round {r}: data disk not healthy after recovery: {mount!r}")
            tb.ssh(f"echo after-{r} >> {DIR}/journal && sync")  # writable again
        else:
            failures.append(f"round {r}: up failed ({up.returncode}): {up.stderr.strip()[-300:]}")
        lost = len(now_missing - missing)
        missing |= now_missing
        if not status.startswith("stopped"):
            failures.append(f"round {r}: status after kill -9 said {status!r}, not stopped")
        if lost:
            failures.append(f"round {r}: committed writes missing: {sorted(now_missing)}")
        tally.add("kill -9 of QEMU while the guest writes (data disk)", injected=1, survived=int(survived), lost=lost)
    print(f"\n{KILLS} kills, {len(acked)} acknowledged journal writes checked, failures: {failures or 'none'}")
    assert not failures, failures
