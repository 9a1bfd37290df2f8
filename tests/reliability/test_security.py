"""Security checks on a running instance: the guest's sshd offers no password login; a host
key other than the pinned one is refused with a clear message; the instance's secrets are
0600 in a 0700 directory; nothing toolbox starts listens on a non-loopback host address.

A container sees only its own processes and cannot write /proc/sys (its capabilities and
seccomp profile are checked in tests/e2e/test_docker_cli.py).
"""

from __future__ import annotations

import stat
from pathlib import Path

import paramiko
import pytest
from toolbox_cli import Toolbox
from procs import alive, is_loopback, sockets_of
from registry import registry  # noqa: F401  (the session's registry fixture, for sleeper)
from test_agents import docker, sleeper  # noqa: F401  (sleeper: the docker env and a running container)

pytestmark = pytest.mark.e2e
SECRETS = ("id_ed25519", "instance.toml", "cidata.iso", "docker.sock")  # cidata.iso carries the guest's host key


def _ssh_port(tb: Toolbox) -> int:
    import tomllib

    doc = tomllib.loads((tb.instance_dir / "instance.toml").read_text())
    return int(doc["ssh_port"])


@pytest.mark.parametrize("user", ["toolbox", "root"])
def test_sshd_offers_no_password_login(toolbox_vm: Toolbox, user: str) -> None:
    toolbox_vm.run("up", "-n", toolbox_vm.name)
    transport = paramiko.Transport(("127.0.0.1", _ssh_port(toolbox_vm)))
    try:
        transport.start_client(timeout=60)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_none(user)
        allowed = set(refused.value.allowed_types)
        assert allowed == {"publickey"}, allowed
        with pytest.raises(paramiko.SSHException):  # asked anyway, it must not get in
            transport.auth_password(user, "toolbox")
    finally:
        transport.close()


def test_other_host_key_is_refused(toolbox_vm: Toolbox) -> None:
    from toolbox.keys import generate_ed25519

    tb = toolbox_vm
    tb.run("up", "-n", tb.name)
    pinned = tb.instance_dir / "ssh_host_ed25519_key.pub"
    good = pinned.read_text()
    pinned.write_text(generate_ed25519("impostor").public_openssh.strip() + "\n")
    try:
        out = tb.run("ssh", "-n", tb.name, "--", "true", check=False)
    finally:
        pinned.write_text(good)
    assert out.returncode != 0
    assert "not the pinned" in out.stderr and "refusing to connect" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert tb.run("ssh", "-n", tb.name, "--", "true").returncode == 0  # the real key again


def test_secrets_are_private(toolbox_vm: Toolbox) -> None:
    tb = toolbox_vm
    tb.run("up", "-n", tb.name)
    root = tb.instance_dir
    assert stat.S_IMODE(root.stat().st_mode) == 0o700, oct(root.stat().st_mode)
    modes = {name: stat.S_IMODE((root / name).stat().st_mode) for name in SECRETS if (root / name).exists()}
    assert set(modes) == set(SECRETS), f"missing: {set(SECRETS) - set(modes)}"
    assert all(m == 0o600 for m in modes.values()), {k: oct(v) for k, v in modes.items()}
    writable = [p.name for p in root.iterdir() if p.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)]
    assert not writable, f"group/world-writable: {writable}"


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def test_nothing_listens_beyond_loopback(toolbox_vm: Toolbox) -> None:
    tb = toolbox_vm
    tb.run("up", "-n", tb.name)
    pids = {name: _pid(tb.instance_dir / f"{name}.pid") for name in ("qemu", "hostagent")}
    assert all(pids.values()), pids
    listening = {name: [s for s in sockets_of(pid) if s.listening] for name, pid in pids.items() if pid}
    assert any(s.port == _ssh_port(tb) for s in listening["qemu"]), listening  # the SSH forward is seen
    exposed = {name: [s for s in socks if not is_loopback(s.address)] for name, socks in listening.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"


def test_container_sees_only_itself(toolbox_vm: Toolbox, sleeper: tuple[dict[str, str], str]) -> None:  # noqa: F811
    """Its own PID namespace (none of the VM's processes), and /proc/sys it cannot write.
    (Docker's default capabilities and seccomp, without CAP_SYS_ADMIN/CAP_SYS_MODULE for
    mount and module loading, are checked in tests/e2e/test_docker_cli.py.)"""
    env, _ = sleeper
    out = docker(env, "run", "--rm", "busybox", "sh", "-c", "ls /proc; echo 1 > /proc/sys/kernel/panic && echo WROTE")
    pids = [x for x in out.stdout.split() if x.isdigit()]
    assert 1 <= len(pids) <= 2, pids  # sh, and ls while it runs
    assert "WROTE" not in out.stdout
