"""The one error hierarchy of toolbox.

Every failure a user can meet is a ToolboxError. Each carries structured fields and a
message that says what to do; the CLI turns it into one red line and `exit_code` in
one place (toolbox.cli), and shows a traceback only with --debug.
"""

from __future__ import annotations

from collections.abc import Sequence


class ToolboxError(Exception):
    """Base of every error toolbox reports to a user."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(ToolboxError):
    """Bad input from the user: a value out of range, an unknown name."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file or set of options that does not validate; lists every problem."""

    def __init__(self, problems: Sequence[str], *, source: str = "configuration", hint: str | None = None) -> None:
        self.problems = list(problems)
        super().__init__(f"invalid {source}: " + "; ".join(self.problems), hint=hint)


class CommandFailed(ToolboxError):
    """An external command (qemu-img, VBoxManage, ...) exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"{self.argv[0]} failed (exit {returncode}): {last}")


class CommandTimedOut(ToolboxError):
    """An external command did not finish within its time limit."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        super().__init__(f"{self.argv[0]} did not finish within {timeout:g} s")


class ToolMissing(ToolboxError):
    """A program toolbox needs is not installed; the hint names the install command."""

    def __init__(self, tool: str, install_hint: str) -> None:
        self.tool = tool
        super().__init__(f"{tool} is not installed", hint=f"install it with: {install_hint}")


class InstanceNotFound(ToolboxError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"instance {name!r} does not exist", hint=f"create it with: toolbox init -n {name}"
        )


class InstanceExists(ToolboxError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"instance {name!r} already exists",
            hint=f"use it with 'toolbox up -n {name}', or remove it with 'toolbox delete -n {name}'",
        )


class InstanceNotRunning(ToolboxError):
    def __init__(self, name: str, state: str) -> None:
        self.name = name
        self.state = state
        super().__init__(f"instance {name!r} is {state}", hint=f"start it with: toolbox up -n {name}")


class InstanceLocked(ToolboxError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"instance {name!r} is busy with another toolbox command; try again when it ends")


class DownloadError(ToolboxError):
    """A download failed: bad URL, HTTP error, connection lost, or no space left."""

    def __init__(self, url: str, reason: str, *, hint: str | None = None) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"download of {url} failed: {reason}", hint=hint)


class ChecksumMismatch(DownloadError):
    def __init__(self, url: str, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            url,
            f"sha256 mismatch (expected {expected[:16]}..., got {actual[:16]}...); the file was discarded",
        )


class DriverError(ToolboxError):
    """A hypervisor refused or failed an operation."""

    def __init__(self, driver: str, message: str, *, hint: str | None = None) -> None:
        self.driver = driver
        super().__init__(f"{driver}: {message}", hint=hint)


class NotSupported(DriverError):
    """The driver cannot do this (e.g. suspend on a driver without it)."""


class SSHError(ToolboxError):
    """The guest's SSH server could not be reached or refused us."""


class GuestSocketRefused(SSHError):
    """The SSH link is fine, but nothing listens on the guest socket asked for (the guest
    agent is starting or restarting): no reason to log in again."""


class HostKeyMismatch(SSHError):
    def __init__(self, address: str, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"the guest at {address} presented host key {actual}, not the pinned {expected}: refusing to connect",
            hint="if you recreated the VM by hand, run 'toolbox delete' and 'toolbox init' again",
        )


class GuestTimeout(ToolboxError):
    """The guest did not become ready in time."""


class GuestHung(DriverError):
    """The guest's kernel locked up while booting (its watchdog said so on the console);
    the VM was switched off."""


class EngineUnreachable(ToolboxError):
    """Nothing answers on the instance's docker socket (the VM or the host agent is down)."""

    def __init__(self, name: str, socket_path: str, reason: str) -> None:
        self.name = name
        self.socket_path = socket_path
        super().__init__(
            f"cannot reach the container engine of {name!r} at {socket_path}: {reason}",
            hint=f"start it with: toolbox up -n {name}",
        )


class EngineError(ToolboxError):
    """The container engine answered with an error status; the message is its own.

    exit_code is docker's: 1 for most commands, 125 when `run` itself fails (the caller
    passes it), so scripts written for docker read toolbox's codes the same way."""

    def __init__(self, status: int, message: str, *, exit_code: int = 1, hint: str | None = None) -> None:
        self.status = status
        self.exit_code = exit_code
        super().__init__(message, hint=hint)
