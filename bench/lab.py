"""What the benchmarks share: a snapshot of the guest image served like a release on
loopback, a toolbox home in a short temporary directory, the real CLI, a libvirtd.

The image is copied out of vm-image/out at the start, so a rebuild during the run cannot
change what is measured half-way. Every process the lab starts is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE_OUT = REPO / "vm-image" / "out"
IMAGE_FILES = ("toolbox.iso", "vmlinuz", "initrd", "manifest.json", "cmdline.txt", "SHA256SUMS")
for extra in (REPO / "tests", REPO / "tests" / "e2e", REPO):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

ACCEL = os.environ.get("TOOLBOX_ACCEL", "tcg")  # nested KVM hangs on these machines
CLI_TIMEOUT = 900.0


class BenchError(Exception):
    """A benchmark could not run; the message says why."""


def timed(argv: list[str], env: dict[str, str], timeout: float = CLI_TIMEOUT) -> float:
    """Wall seconds of one command, which must exit 0."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])} ... exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return took


@dataclass
class Instance:
    """One toolbox instance driven through the real CLI, as a user types it."""

    lab: Lab
    name: str
    driver: str

    @property
    def dir(self) -> Path:
        return self.lab.home / self.name

    def cli(self, command: str, *args: str) -> list[str]:
        """`toolbox COMMAND -n NAME ARGS` (the name before any `--`)."""
        return [sys.executable, "-m", "toolbox", command, "-n", self.name, *args]

    def run(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        proc = subprocess.run(self.cli(*args), env=self.lab.env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise BenchError(f"toolbox {args[0]} -n {self.name} exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
        return proc.stdout

    def timed(self, *args: str) -> float:
        return timed(self.cli(*args), self.lab.env)

    def status(self) -> str:
        return self.run("status").split("\n", 1)[0].strip()

    def qemu_pid(self) -> int | None:
        try:
            return int((self.dir / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None


@dataclass
class Lab:
    work: Path
    release: Path  # /v1/ of the loopback release server
    server: object  # helpers_http.FileServer
    accel: str = ACCEL
    instances: dict[str, Instance] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.work / "h"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBOX_") and k != "DOCKER_HOST"}
        # The user's home is shared by default: the lab's own folder stands in for it.
        (self.work / "user").mkdir(exist_ok=True)
        env.update(TOOLBOX_HOME=str(self.home), TOOLBOX_ACCEL=self.accel, PYTHONPATH=str(REPO),
                   HOME=str(self.work / "user"))
        if uri := os.environ.get("TOOLBOX_LIBVIRT_URI"):
            env["TOOLBOX_LIBVIRT_URI"] = uri
        return env

    @property
    def manifest_url(self) -> str:
        return f"{self.server.url}/v1/manifest.json"  # type: ignore[attr-defined]

    @property
    def manifest(self) -> dict[str, object]:
        return json.loads((self.release / "manifest.json").read_text())

    def instance(self, driver: str, memory: str = "1G", cpus: int = 2) -> Instance:
        """The lab's instance for `driver`, made (toolbox init) on first use; left stopped or running."""
        if driver not in self.instances:
            inst = Instance(self, f"b{driver[:3]}", driver)
            inst.run("init", "--driver", driver, "--memory", memory, "--cpus", str(cpus),
                     "--manifest-url", self.manifest_url)
            self.instances[driver] = inst
        return self.instances[driver]

    def drop(self, driver: str) -> None:
        """Delete the instance for `driver` (toolbox delete -f); its QEMU never outlives it."""
        inst = self.instances.pop(driver, None)
        if inst is None:
            return
        pid = inst.qemu_pid()
        subprocess.run(inst.cli("delete", "-f"), env=self.env, capture_output=True, timeout=300)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)  # our own VM: never leave it running

    def close(self) -> None:
        for driver in list(self.instances):
            self.drop(driver)
        self.server.close()  # type: ignore[attr-defined]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@contextmanager
def lab() -> Iterator[Lab]:
    from helpers_http import FileServer

    if not (IMAGE_OUT / "toolbox.iso").is_file():
        raise BenchError(f"no guest image in {IMAGE_OUT}: build it with make -C vm-image")
    work = Path(tempfile.mkdtemp(prefix="tbb-"))  # short: unix socket paths must fit 104 bytes
    release = work / "rel" / "v1"
    release.mkdir(parents=True)
    for name in IMAGE_FILES:
        if (IMAGE_OUT / name).exists():
            shutil.copy2(IMAGE_OUT / name, release / name)
    the_lab = Lab(work, release, FileServer(work / "rel"))
    try:
        yield the_lab
    finally:
        the_lab.close()
        shutil.rmtree(work, ignore_errors=True)


# --- libvirtd: the system one if it answers, else ours, stopped by pid at the end ----

LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _stop_pid_file(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


@contextmanager
def libvirtd() -> Iterator[str]:
    """A libvirt URI that answers: someone's running libvirtd (left alone) or one we start."""
    if _answers(LIBVIRT_SOCKET):
        yield "qemu:///system"
        return
    if not (shutil.which("libvirtd") and shutil.which("virtlogd")):
        raise BenchError("libvirtd is not installed (apt-get install libvirt-daemon-system)")
    for d in ("/var/log/libvirt", "/run/libvirt"):
        os.makedirs(d, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tbb-libvirtd-") as tmp:
        pids = [Path(tmp) / "virtlogd.pid", Path(tmp) / "libvirtd.pid"]
        try:
            for daemon, pid_file in zip(("virtlogd", "libvirtd"), pids):
                subprocess.run([daemon, "--daemon", "--pid-file", str(pid_file)], check=True, timeout=30)
            deadline = time.monotonic() + 30
            while not _answers(LIBVIRT_SOCKET):
                if time.monotonic() > deadline:
                    raise BenchError("libvirtd did not open its socket within 30 s")
                time.sleep(0.2)
            yield "qemu:///system"
        finally:
            for pid_file in reversed(pids):
                _stop_pid_file(pid_file)
