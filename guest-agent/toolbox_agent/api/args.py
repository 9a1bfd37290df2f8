"""Query arguments shared by several resources' handlers."""

from __future__ import annotations

from toolbox_agent.containers.logs import parse_timestamp
from toolbox_agent.http import ApiError, Request


def time_arg(req: Request, name: str, default: float | None = None) -> float | None:
    """`since`/`until` (logs, events): unix seconds or RFC 3339; 400 for anything else."""
    value = req.arg(name)
    if not value:
        return default
    return parse_time(name, value)


def parse_time(name: str, value: str) -> float:
    try:
        return parse_timestamp(value)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {value!r}") from None
