"""How the container commands show engine data: docker's columns in rich tables, human
sizes and ages, and a per-layer progress display for pulls (the engine's JSON stream)."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table


def stdout_console() -> Console:
    """Tables go to stdout; piped, they are never cut to 80 columns (scripts read them)."""
    probe = Console(highlight=False)
    return probe if probe.is_terminal else Console(highlight=False, width=400)


def table(*columns: str) -> Table:
    t = Table(box=None, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 3, 0, 0))
    for col in columns:
        t.add_column(col, no_wrap=True)
    return t


def human_size(n: float) -> str:
    """Docker's SI sizes: 4.26MB, 1.2GB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}B"


def ago(unix: float, now: float | None = None) -> str:
    """'3 minutes ago', as `docker ps` says it."""
    secs = max(0, int((now or time.time()) - unix))
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400 * 7, "week"), (86400, "day"),
                       (3600, "hour"), (60, "minute")):
        if secs >= size:
            count = secs // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "Less than a minute ago" if secs >= 1 else "Less than a second ago"


def short_id(ident: str) -> str:
    return ident.removeprefix("sha256:")[:12]


def ports(doc: dict[str, Any]) -> str:
    out = []
    for p in doc.get("Ports") or []:
        proto = p.get("Type", "tcp")
        if p.get("PublicPort"):
            out.append(f"{p.get('IP') or '0.0.0.0'}:{p['PublicPort']}->{p['PrivatePort']}/{proto}")
        else:
            out.append(f"{p['PrivatePort']}/{proto}")
    return ", ".join(out)


def command(doc: dict[str, Any], width: int = 20) -> str:
    cmd = str(doc.get("Command") or "")
    return f'"{cmd[:width - 1]}…"' if len(cmd) > width else f'"{cmd}"'


def containers_table(docs: list[dict[str, Any]]) -> Table:
    t = table("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")
    for d in docs:
        names = ",".join(n.lstrip("/") for n in d.get("Names") or [])
        t.add_row(short_id(d["Id"]), d.get("Image", ""), command(d), ago(float(d.get("Created", 0))),
                  d.get("Status", ""), ports(d), names)
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
