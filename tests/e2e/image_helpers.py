"""Boot the guest image straight from vm-image/out with QEMU, for the image's own tests
and bench/boot.py: no toolbox CLI involved, so the image can be checked on its own.

`GuestVM` starts QEMU (TCG) with direct kernel boot, `-cdrom` under SeaBIOS, or `-cdrom`
under OVMF; forwards a loopback port to the guest's sshd; and offers QMP power-down,
the serial log and paramiko logins.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from toolbox import keys
from toolbox.instance import free_port  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parents[2]
IMAGE_OUT = REPO / "vm-image" / "out"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
BOOT_MODES = ("kernel", "bios", "uefi")


@dataclass(frozen=True)
class KeyPair(keys.KeyPair):
    """toolbox's own key pair (toolbox.keys), with what the image tests need on top."""

    @classmethod
    def generate(cls, comment: str) -> KeyPair:
        pair = keys.generate_ed25519(comment)
        return cls(pair.private_openssh, pair.public_openssh)

    def paramiko_key(self) -> paramiko.Ed25519Key:
        import io
        return paramiko.Ed25519Key.from_private_key(io.StringIO(self.private_openssh))


def write_cidata(path: Path, login: KeyPair, host: KeyPair, hostname: str = "imagetest",
                 uid: int = 501, gid: int = 20) -> None:
    """A config drive as the host writes it (toolbox.cidata, pycdlib)."""
    from toolbox.cidata import ConfigDrive, write_config_drive

    write_config_drive(path, ConfigDrive(
        hostname=hostname, uid=uid, gid=gid, authorized_keys=[login.public_openssh],
        host_private_key=host.private_openssh, host_public_key=host.public_openssh,
        agent={"test": True}))



def ssh_banner(port: int, timeout: float = 2.0) -> bytes | None:
    """The server's SSH identification line, or None if nothing answers yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            data = s.recv(256)
            return data if data.startswith(b"SSH-") else None
    except OSError:
        return None


@dataclass
class GuestVM:
    workdir: Path
    mode: str = "kernel"  # one of BOOT_MODES
    cidata: Path | None = None
    disk: Path | None = None
    memory_mb: int = 1024
    cpus: int = 2
    rng: bool = True  # virtio-rng: without it sshd waits for the kernel's entropy
    image: Path | None = None  # a build's output directory; None: IMAGE_OUT (vm-image/out)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    @property
    def serial_log(self) -> Path:
        return self.workdir / f"serial-{self.mode}.log"

    @property
    def qmp_path(self) -> Path:
        return self.workdir / f"qmp-{self.mode}.sock"

    def argv(self) -> list[str]:
        out = self.image or IMAGE_OUT
        iso = out / "toolbox.iso"
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(self.memory_mb), "-smp", str(self.cpus),
                "-display", "none", "-serial", f"file:{self.serial_log}",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", "virtio-net-pci,netdev=net0"]
        if self.rng:
            argv += ["-device", "virtio-rng-pci"]
        if self.mode == "kernel":
            argv += ["-kernel", str(out / "vmlinuz"), "-initrd", str(out / "initrd"),
                     "-append", (out / "cmdline.txt").read_text().strip(),
                     "-device", "virtio-scsi-pci",
                     "-drive", f"file={iso},media=cdrom,readonly=on,if=none,id=cd0",
                     "-device", "scsi-cd,drive=cd0"]
        else:
            argv += ["-cdrom", str(iso)]
        if self.mode == "uefi":
            vars_copy = self.workdir / "OVMF_VARS.fd"
            shutil.copy(OVMF_VARS, vars_copy)
            argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,file={vars_copy}"]
        if self.cidata is not None:
            argv += ["-drive", f"file={self.cidata},media=cdrom,readonly=on,if=ide,index=1"]
        if self.disk is not None:
            argv += ["-drive", f"file={self.disk},if=virtio,format=qcow2"]
        return argv

    def start(self) -> GuestVM:
        self.serial_log.unlink(missing_ok=True)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / f"qemu-{self.mode}.err", "wb"))
        return self

    def serial(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_sshd(self, timeout: float = 240.0) -> float:
        """Seconds from QEMU's start until sshd sends its banner."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited with {self.proc.returncode}; serial log:\n{self.serial()}")
            if ssh_banner(self.port):
                return time.monotonic() - self.started_at
            time.sleep(0.2)
        raise AssertionError(f"no sshd after {timeout:.0f} s; serial log:\n{self.serial()}")

    def wait_for_serial(self, text: str, count: int = 1, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while self.serial().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} x{count} not in the serial log:\n{self.serial()}")
            time.sleep(0.2)

    def ssh(self, key: KeyPair, host_key: KeyPair | None = None) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if host_key is None:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:  # pinned, as the host does
            name, blob = host_key.public_openssh.split()[:2]
            client.get_host_keys().add(f"[127.0.0.1]:{self.port}", name, paramiko.PKey.from_type_string(
                name, __import__("base64").b64decode(blob)))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", self.port, username="toolbox", pkey=key.paramiko_key(),
                       allow_agent=False, look_for_keys=False, timeout=30, banner_timeout=60, auth_timeout=60)
        return client

    def qmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            f.readline()
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while b'"return"' not in (line := f.readline()):
                    if not line:
                        raise AssertionError(f"QMP closed during {cmd}")

    def wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run(client: paramiko.SSHClient, command: str, timeout: float = 120) -> tuple[int, str]:
    """Run a command over SSH; (exit status, stdout+stderr)."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode() + stderr.read().decode()
    return stdout.channel.recv_exit_status(), out


def create_disk(path: Path, size: str = "2G") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path
