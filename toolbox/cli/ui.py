"""How the CLI talks to people: the one error renderer, the spinner, the progress bar.

Everything goes to stderr, so stdout carries only what a script would want (shellinit's
exports, --json, ip). rich is imported on first use: `toolbox status` never pays for it.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from toolbox.errors import ToolboxError


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def render_error(exc: BaseException, debug: bool) -> int:
    """One red line (and the hint) for a ToolboxError; its exit code."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    console = _stderr()
    if isinstance(exc, ToolboxError):
        console.print(f"[bold red]Error:[/] {_escape(exc.message)}", soft_wrap=True)
        if exc.hint:
            console.print(f"[yellow]Hint:[/] {_escape(exc.hint)}", soft_wrap=True)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        console.print("[bold red]Error:[/] interrupted")
        return 130
    console.print(
        f"[bold red]Error:[/] unexpected {type(exc).__name__}: {_escape(str(exc))}"
        + ("" if debug else " (rerun with --debug for the traceback)"),
        soft_wrap=True,
    )
    return 1


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def info(message: str) -> None:
    _stderr().print(message, soft_wrap=True)


@contextmanager
def steps(title: str) -> Iterator[Any]:
    """A spinner showing the current step; each finished step stays as a ✓ line. Steps are
    plain text (a console line quoted in one keeps its brackets: "[sshd:214]")."""
    from rich.markup import escape

    console = _stderr()
    current: list[str] = []
    with console.status(title) as status:

        def step(message: str) -> None:
            if current:
                console.print(f"[green]✓[/] {current[0]}")
            current[:] = [escape(message)]
            status.update(f"{current[0]} ...")

        yield step
    if current:
        console.print(f"[green]✓[/] {current[0]}")


class DownloadBar:
    """A rich progress bar implementing toolbox.images.ProgressHook."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None

    def start(self, description: str, total: int | None, completed: int) -> None:
        from rich.progress import (
            BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
        )

        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), console=_stderr(),
            )
            self._progress.start()
        verb = "resuming" if completed else "downloading"
        self._task = self._progress.add_task(f"{verb} {description}", total=total, completed=completed)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
