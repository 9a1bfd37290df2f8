"""The one place toolbox starts external programs (qemu, qemu-img, VBoxManage, ...).

Everything goes through `run` (wait for it) or `spawn` (leave it running), which log the
argv at debug level and turn failures into ToolboxError subclasses. Because there is
one choke point, tests can put a fake program first on PATH, or swap `runner`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolbox.errors import CommandFailed, CommandTimedOut, ToolMissing

log = logging.getLogger("toolbox.run")


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def which(program: str, install_hint: str) -> str:
    """The full path of `program`, or ToolMissing naming how to install it."""
    path = shutil.which(program)
    if path is None:
        raise ToolMissing(program, install_hint)
    return path


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float | None = 120.0,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Completed:
    """Run a command to completion and capture its output (text)."""
    args = [os.fspath(a) for a in argv]
    log.debug("run: %s", " ".join(args))
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.run(
            args,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(args[0], f"your package manager (the program {args[0]!r} was not found)") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandTimedOut(args, timeout or 0.0) from exc
    result = Completed(args, proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, proc.stderr or proc.stdout)
    return result


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    stdout: Path | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a long-running command (a VM, the host agent) detached from our terminal.

    Output goes to `stdout` (a log file, appended) or nowhere. With new_session the child
    gets its own session, so a Ctrl-C in the user's terminal does not reach it.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("spawn: %s", " ".join(args))
    full_env = {**os.environ, **env} if env else None
    out = open(stdout, "ab") if stdout else subprocess.DEVNULL  # noqa: SIM115 (handed to the child)
    try:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=new_session,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(args[0], f"your package manager (the program {args[0]!r} was not found)") from exc
    finally:
        if stdout:
            out.close()  # type: ignore[union-attr]
