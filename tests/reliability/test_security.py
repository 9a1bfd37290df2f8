"""Security checks on a running instance: the guest's sshd offers no password login; a host
key other than the pinned one is refused with a clear message; the instance's secrets are
0600 in a 0700 directory; nothing toolbox starts listens on a non-loopback host address.

A container sees only its own processes and cannot write /proc/sys; it gets exactly Docker's
default capabilities (also its bounding set) and a seccomp filter, and cannot mount or load
a kernel module (refused with EPERM). With a published port (TCP and UDP), `ss` shows the
host agent's and QEMU's sockets all on loopback.
"""

from __future__ import annotations

import re
import stat
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from toolbox_cli import Toolbox
from procs import alive, is_loopback, sockets_of
from registry import registry  # noqa: F401  (the session's registry fixture, for sleeper)
from registry import free_port
from test_agents import docker, sleeper  # noqa: F401  (sleeper: the docker env and a running container)
from tools_image import tools_image  # noqa: F401  (a busybox image with mount, insmod, sync)

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
    """Its own PID namespace (none of the VM's processes), and /proc/sys it cannot write."""
    env, _ = sleeper
    out = docker(env, "run", "--rm", "busybox", "sh", "-c", "ls /proc; echo 1 > /proc/sys/kernel/panic && echo WROTE")
    pids = [x for x in out.stdout.split() if x.isdigit()]
    assert 1 <= len(pids) <= 2, pids  # sh, and ls while it runs
    assert "WROTE" not in out.stdout


# Docker's default capability set (moby's oci/caps/defaults.go), by number (linux/capability.h).
DOCKER_DEFAULT_CAPS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
                       "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27,
                       "AUDIT_WRITE": 29, "SETFCAP": 31}  # fmt: skip


def test_container_gets_dockers_default_capabilities_and_seccomp(sleeper: tuple[dict[str, str], str], tools_image: str) -> None:  # noqa: F811
    env, _ = sleeper
    out = docker(env, "run", "--rm", tools_image, "grep", "-E", "^(CapEff|CapBnd|Seccomp|NoNewPrivs):", "/proc/self/status",
                 timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    status = dict(line.split(":\t", 1) for line in out.stdout.strip().splitlines())
    caps = {name for name in DOCKER_DEFAULT_CAPS if int(status["CapEff"], 16) >> DOCKER_DEFAULT_CAPS[name] & 1}
    expected = sum(1 << bit for bit in DOCKER_DEFAULT_CAPS.values())
    assert int(status["CapEff"], 16) == expected, f"CapEff {status['CapEff']}: has {sorted(caps)}, expected all and only {sorted(DOCKER_DEFAULT_CAPS)}"
    assert int(status["CapBnd"], 16) == expected, status  # nothing more to gain by exec'ing a setuid binary
    assert status["Seccomp"].strip() == "2", status  # a filter, not just strict mode or none


def test_container_cannot_mount_or_load_modules(sleeper: tuple[dict[str, str], str], tools_image: str) -> None:  # noqa: F811
    env, _ = sleeper
    script = ("mkdir -p /m; mount -t tmpfs none /m; echo mount=$?; mount -o remount,rw /proc/sys; echo remount=$?; "
              "insmod /bin/busybox; echo insmod=$?")  # fmt: skip
    out = docker(env, "run", "--rm", tools_image, "sh", "-c", script, timeout=300)
    codes = dict(line.split("=") for line in out.stdout.split() if "=" in line)
    assert set(codes) == {"mount", "remount", "insmod"}, (out.stdout, out.stderr)
    assert all(code != "0" for code in codes.values()), (codes, out.stderr)
    # EPERM: refused for want of a capability, not for a bad argument (a module file that is
    # no module fails with "Invalid module format" when the capability is there)
    assert out.stderr.count("not permitted") + out.stderr.lower().count("permission denied") >= 3, out.stderr


def _ss_listeners(pids: set[int]) -> list[tuple[str, str, int]]:
    """(proto, local address, pid) of every listening TCP and bound UDP socket these pids hold, per `ss`."""
    out = subprocess.run(["ss", "-Htulnp"], capture_output=True, text=True, timeout=30, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        for pid in owners & pids:
            found.append((fields[0], fields[4], pid))
    return found


def test_ss_shows_no_listener_beyond_loopback_with_a_published_port(toolbox_vm: Toolbox, sleeper: tuple[dict[str, str], str],  # noqa: F811
                                                                    tools_image: str) -> None:  # fmt: skip
    env, _ = sleeper
    port = free_port()
    run = docker(env, "run", "-d", "-p", f"{port}:80", "-p", f"{port}:53/udp", tools_image, "sleep", "600", timeout=300)
    assert run.returncode == 0, run.stderr
    try:
        pids = {p for p in (_pid(toolbox_vm.instance_dir / f"{n}.pid") for n in ("qemu", "hostagent")) if p}
        deadline = time.monotonic() + 30
        found = _ss_listeners(pids)
        while not any(addr.endswith(f":{port}") for _, addr, _ in found):
            assert time.monotonic() < deadline, f"the host agent never listened on {port}: {found}"
            time.sleep(0.5)
            found = _ss_listeners(pids)
        exposed = [s for s in found if not is_loopback(s[1].rsplit(":", 1)[0].strip("[]").split("%")[0])]
        assert not exposed, f"listening beyond loopback: {exposed} (all: {found})"
    finally:
        docker(env, "rm", "-f", run.stdout.strip())
