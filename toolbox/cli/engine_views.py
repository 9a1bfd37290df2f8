"""How the container commands show engine data: docker's columns in rich tables, human
sizes and ages, and a per-layer progress display for pulls (the engine's JSON stream)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from toolbox.cli.rows import PS_COLUMNS, ago, command, container_rows, human_size, ports, short_id

__all__ = ["PS_COLUMNS", "ago", "command", "container_rows", "human_size", "ports", "short_id"]


def stdout_console() -> Console:
    """Tables go to stdout; piped, they are never cut to 80 columns (scripts read them)."""
    probe = Console(highlight=False)
    return probe if probe.is_terminal else Console(highlight=False, width=400)


def table(*columns: str) -> Table:
    t = Table(box=None, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 3, 0, 0))
    for col in columns:
        t.add_column(col, no_wrap=True)
    return t


def containers_table(docs: list[dict[str, Any]]) -> Table:
    t = table(*PS_COLUMNS)
    for row in container_rows(docs):
        t.add_row(*row)
    return t


def images_table(docs: list[dict[str, Any]]) -> Table:
    t = table("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
    for d in docs:
        tags = [tag for tag in d.get("RepoTags") or [] if tag != "<none>:<none>"] or ["<none>:<none>"]
        for tag in tags:
            repo, _, name = tag.rpartition(":")
            t.add_row(repo, name, short_id(d["Id"]), ago(float(d.get("Created", 0))), human_size(d.get("Size", 0)))
    return t


class PullProgress:
    """Feeds on the pull's JSON messages: one bar per layer on stderr, the summary lines
    (Digest, Status) on stdout for `pull`; `run`'s implicit pull keeps them on stderr, as
    docker does, so the container's output is alone on stdout."""

    def __init__(self, summary_to_stderr: bool = False) -> None:
        self.summary_to_stderr = summary_to_stderr
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(TextColumn("{task.fields[layer]}: {task.description}"), BarColumn(),
                                 DownloadColumn(), console=self.console, transient=False)
        self.tasks: dict[str, Any] = {}
        self.started = False

    def __call__(self, msg: dict[str, Any]) -> None:
        status, layer = str(msg.get("status", "")), msg.get("id")
        if status.startswith(("Digest:", "Status:")):
            self.stop()
            out = sys.stderr if self.summary_to_stderr else sys.stdout
            out.write(status + "\n")
            out.flush()
            return
        if not layer or status.startswith("Pulling from"):
            self.console.print(f"{layer}: {status}" if layer else status, soft_wrap=True)
            return
        if not self.started:
            self.progress.start()
            self.started = True
        detail = msg.get("progressDetail") or {}
        task = self.tasks.get(layer)
        if task is None:
            task = self.tasks[layer] = self.progress.add_task(status, layer=layer, total=None)
        if detail.get("total"):
            self.progress.update(task, description=status, completed=detail.get("current", 0), total=detail["total"])
        else:
            done = status in ("Pull complete", "Already exists", "Download complete")
            total = self.progress.tasks[task].total
            self.progress.update(task, description=status, completed=total if (done and total) else None)

    def stop(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False
