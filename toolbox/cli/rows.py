"""Engine data as docker's columns, in plain text: what `toolbox ps` prints on its fast
path (toolbox.cli's, without typer or rich) and what the rich tables are filled with
(engine_views), so both paths print the same rows."""

from __future__ import annotations

import time
from typing import Any

PS_COLUMNS = ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")
GAP = "   "  # between columns, as engine_views.table's padding


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


def container_rows(docs: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row of PS_COLUMNS per container document (GET /containers/json)."""
    rows = []
    for d in docs:
        names = ",".join(n.lstrip("/") for n in d.get("Names") or [])
        rows.append((short_id(d["Id"]), d.get("Image", ""), command(d), ago(float(d.get("Created", 0))),
                     d.get("Status", ""), ports(d), names))
    return rows


def plain_table(columns: tuple[str, ...], rows: list[tuple[str, ...]], bold_header: bool = False) -> str:
    """The text engine_views' rich table prints to a pipe: every cell padded to its
    column's width, GAP between columns; the header in bold when asked (a terminal)."""
    widths = [max([len(col), *(len(row[i]) for row in rows)]) for i, col in enumerate(columns)]
    header = GAP.join(col.ljust(w) for col, w in zip(columns, widths)).rstrip()
    if bold_header:
        header = f"\x1b[1m{header}\x1b[0m"
    lines = [header] + [GAP.join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    return "".join(line + "\n" for line in lines)


