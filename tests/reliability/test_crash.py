"""kill -9 of the hypervisor while a container writes to a named volume, several times:
each time `toolbox up` comes back, the engine's store is consistent (containers and images
list, the killed writer inspects, a new container runs), the data disk mounts read-write
without ext4 errors, and every write the container committed is in the volume.

The writer (a container from tests/reliability/tools_image.py, the volume at /data) writes
a token file and syncs (committed), then loops: append a numbered line to a journal, sync,
print "ACK <line>", churn an unsynced scratch file. The host follows its output with
`docker logs -f` and kills QEMU (SIGKILL, by the pid in qemu.pid) a moment after the first
ACKs, so writes are in flight when it dies. Committed means: the host saw the ACK before
the kill.

    TOOLBOX_RELIABILITY_KILLS=2 .venv/bin/pytest tests/reliability/test_crash.py   # fewer rounds (default 5)
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time

import pytest
from procs import qemu_pids, wait_gone
from registry import registry  # noqa: F401  (the session's registry fixture, for sleeper)
from tally import Tally
from test_agents import DOCKER, docker, sleeper  # noqa: F401  (sleeper: the docker env, registry settings)
from toolbox_cli import Toolbox
from tools_image import tools_image  # noqa: F401  (busybox with sync)

pytestmark = pytest.mark.e2e
KILLS = int(os.environ.get("TOOLBOX_RELIABILITY_KILLS", "5"))
VOLUME = "reliability-journal"
ACKS_BEFORE_KILL = 3
WRITER = """cd /data
printf '%s\\n' {token} > committed-{round}; sync; echo COMMITTED
n=0
while :; do
  n=$((n + 1)); echo "{round}-$n" >> journal; sync; echo "ACK {round}-$n"
  dd if=/dev/urandom of=scratch bs=64k count=16 2>/dev/null
done
"""


def _write_until_killed(tb: Toolbox, env: dict[str, str], image: str, round_: int, token: str) -> list[str]:
    """Start the writer container, SIGKILL QEMU after a few ACKs; the journal lines acknowledged."""
    qemu = tb.qemu_pid()
    assert qemu is not None
    script = WRITER.format(token=token, round=round_)
    run = docker(env, "run", "-d", "--name", f"writer-{round_}", "-v", f"{VOLUME}:/data", image, "sh", "-c", script, timeout=300)
    assert run.returncode == 0, run.stderr
    follow = subprocess.Popen([DOCKER, "logs", "-f", f"writer-{round_}"], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    acked: list[str] = []
    committed = False
    deadline = time.monotonic() + 300
    try:
        assert follow.stdout is not None
        for line in follow.stdout:
            committed |= line.strip() == "COMMITTED"
            if line.startswith("ACK "):
                acked.append(line.split()[1])
            if len(acked) >= ACKS_BEFORE_KILL:
                time.sleep(0.3)  # let the next writes get under way
                break
            assert time.monotonic() < deadline, "the writer made no progress"
        assert committed, "the writer did not commit"
        os.kill(qemu, signal.SIGKILL)
        assert wait_gone(qemu), "QEMU survived SIGKILL"
    finally:
        try:
            follow.wait(60)  # the SSH connection died with QEMU
        except subprocess.TimeoutExpired:
            follow.kill()
            follow.wait()
    return acked


def _store_problems(env: dict[str, str], image: str, rounds: int) -> list[str]:
    """What is wrong with the engine's store after a crash: lists, inspect, a new container."""
    problems = []
    ps = docker(env, "ps", "-a", "--format", "{{.Names}} {{.State}}")
    names = dict(line.split() for line in ps.stdout.splitlines())
    if ps.returncode != 0 or any(f"writer-{r}" not in names for r in range(rounds)):
        problems.append(f"docker ps -a: {ps.returncode} {ps.stdout!r} {ps.stderr!r}")
    if any(names.get(f"writer-{r}") == "running" for r in range(rounds)):
        problems.append(f"a writer is running after a reboot: {names}")  # its process died with the VM
    images = docker(env, "images", "--format", "{{.Repository}}:{{.Tag}}")
    if images.returncode != 0 or image not in images.stdout.split():
        problems.append(f"docker images: {images.returncode} {images.stdout!r} {images.stderr!r}")
    inspect = docker(env, "inspect", "-f", "{{.State.Status}} {{.Mounts}}", f"writer-{rounds - 1}")
    if inspect.returncode != 0 or VOLUME not in inspect.stdout:
        problems.append(f"docker inspect: {inspect.returncode} {inspect.stdout!r} {inspect.stderr!r}")
    return problems


def _read_volume(env: dict[str, str], image: str, tokens: dict[int, str]) -> tuple[dict[str, str], set[str], str]:
    """Through a new container: each round's committed token, the journal lines, and any error."""
    listing = " ".join(map(str, tokens))
    out = docker(env, "run", "--rm", "-v", f"{VOLUME}:/data", image, "sh", "-c",
                 f"cd /data; for r in {listing}; do echo \"$r $(cat committed-$r)\"; done; echo JOURNAL; cat journal",
                 timeout=300)  # fmt: skip
    head, _, journal = out.stdout.partition("JOURNAL\n")
    got = dict(line.split(" ", 1) for line in head.splitlines() if " " in line)
    return got, set(journal.split()), "" if out.returncode == 0 else f"new container: {out.returncode} {out.stderr!r}"


def _round(tb: Toolbox, env: dict[str, str], image: str, r: int, tokens: dict[int, str], acked: list[str]) -> tuple[bool, set[str], list[str]]:
    """One kill -9 and recovery: (survived, committed writes missing, failures)."""
    acked += _write_until_killed(tb, env, image, r, tokens[r])
    failures: list[str] = []
    status = tb.run("status", "-n", tb.name, check=False).stdout
    if not status.startswith("stopped"):
        failures.append(f"round {r}: status after kill -9 said {status!r}, not stopped")
    up = tb.run("up", "-n", tb.name, check=False)
    if up.returncode != 0 or len(qemu_pids(tb.instance_dir)) != 1:
        return False, set(), [*failures, f"round {r}: up failed ({up.returncode}): {up.stderr.strip()[-300:]}"]
    failures += [f"round {r}: {p}" for p in _store_problems(env, image, r + 1)]
    got, lines, error = _read_volume(env, image, tokens)
    failures += [f"round {r}: {error}"] if error else []
    missing = {f"committed-{k}" for k, v in tokens.items() if got.get(str(k), "").strip() != v}
    missing |= {a for a in acked if a not in lines}
    mount = tb.ssh("grep ' /var/lib/toolbox ' /proc/mounts; sudo dmesg | grep -c 'EXT4-fs error' || true").stdout
    if " rw," not in mount or not mount.strip().endswith("0"):
        failures.append(f"round {r}: data disk not healthy after recovery: {mount!r}")
    return not failures, missing, failures


def test_kill_9_while_a_container_writes_to_a_volume(toolbox_vm: Toolbox, sleeper: tuple[dict[str, str], str],  # noqa: F811
                                                     tools_image: str, tally: Tally) -> None:  # noqa: F811  # fmt: skip
    env, _ = sleeper
    tb = toolbox_vm
    assert docker(env, "volume", "create", VOLUME).returncode == 0
    tokens: dict[int, str] = {}
    acked: list[str] = []
    failures: list[str] = []
    missing: set[str] = set()  # committed writes found missing so far (each counted once)
    try:
        for r in range(KILLS):
            tokens[r] = secrets.token_hex(8)
            survived, now_missing, problems = _round(tb, env, tools_image, r, tokens, acked)
            lost = len(now_missing - missing)
            missing |= now_missing
            failures += problems + ([f"round {r}: committed writes missing: {sorted(now_missing)}"] if lost else [])
            tally.add("kill -9 of QEMU while a container writes to a volume", injected=1, survived=int(survived), lost=lost)
    finally:
        docker(env, "rm", "-f", *(f"writer-{r}" for r in tokens))
        docker(env, "volume", "rm", VOLUME)
    print(f"\n{KILLS} kills, {len(acked)} acknowledged journal writes checked, failures: {failures or 'none'}")
    assert not failures, failures
