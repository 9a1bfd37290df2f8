"""What the e2e tests share besides fixtures: the Toolbox handle on an instance driven
through the real CLI, and where the guest image lives. (A uniquely named module, so a
test can import it; `from conftest import` is ambiguous with several conftest files.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE_OUT = REPO / "vm-image" / "out"
CLI_TIMEOUT = 900  # seconds for one CLI call (a TCG boot is slow on a busy host)


def require_image() -> None:
    if (IMAGE_OUT / "toolbox.iso").is_file() and (IMAGE_OUT / "manifest.json").is_file():
        return
    message = f"no guest image in {IMAGE_OUT} (build it with: make -C vm-image)"
    if os.environ.get("TOOLBOX_REQUIRE_E2E") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Toolbox:
    """A toolbox home with one instance, driven through the real CLI."""

    name: str
    home: Path
    server_url: str  # the loopback release server; /v1/ is vm-image/out
    env: dict[str, str] = field(default_factory=dict)

    @property
    def instance_dir(self) -> Path:
        return self.home / self.name

    @property
    def docker_host(self) -> str:
        return f"unix://{self.instance_dir / 'docker.sock'}"

    def run(self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`toolbox ARGS -n NAME` (the name is added when the command takes one)."""
        argv = [sys.executable, "-m", "toolbox", *args]
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"toolbox {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
                                 f"{self.console_tail()}")
        return proc

    def console_tail(self, lines: int = 80) -> str:
        """The end of the guest's serial console, for a failure message (CI keeps nothing else)."""
        try:
            text = (self.instance_dir / "serial.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n--- the guest console's last lines ---\n" + "\n".join(text.splitlines()[-lines:])

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the guest (as the `toolbox` user; sudo is passwordless)."""
        return self.run("ssh", "-n", self.name, "--", "sh", "-c", command, check=check)

    @property
    def user_home(self) -> Path:
        """The folder standing in for the user's home: shared by default (toolbox_env)."""
        return Path(self.env["HOME"])

    def qemu_pid(self) -> int | None:
        try:
            return int((self.instance_dir / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None


def toolbox_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBOX_") and k != "DOCKER_HOST"}
    # toolbox shares the user's home by default: a folder of the test's own stands in for
    # it, so no test shares (or writes through the guest into) the real one.
    user = home.with_name(home.name + "-user")
    user.mkdir(exist_ok=True)
    env.update(TOOLBOX_HOME=str(home), TOOLBOX_ACCEL="tcg", PYTHONPATH=str(REPO), HOME=str(user))
    return env
