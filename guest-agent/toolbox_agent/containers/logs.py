"""The json-file log format (one JSON object a line, as Docker's json-file driver writes),
and reading it back with Docker's since/until/tail/timestamps options."""

from __future__ import annotations

import datetime
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


def rfc3339_nano(ts: float | None = None, ns: int | None = None) -> str:
    """2024-01-02T03:04:05.123456789Z"""
    if ns is None:
        import time

        ns = time.time_ns() if ts is None else int(ts * 1e9)
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def parse_timestamp(value: str) -> float:
    """A time argument as Docker takes it (since, until): unix seconds, with or without a
    fraction, or RFC 3339. ValueError for anything else."""
    try:
        return float(value)
    except ValueError:
        return parse_rfc3339(value)


def parse_rfc3339(value: str) -> float:
    """Seconds since the epoch for an RFC 3339 time with up to nanoseconds."""
    if not value or value.startswith("0001-01-01"):
        return 0.0
    main, _, rest = value.partition(".")
    frac = ""
    tz = "Z"
    if rest:
        digits = "".join(c for c in rest if c.isdigit())
        frac = digits
        tz = rest[len(digits) :] or "Z"
    elif value.endswith("Z"):
        main = value[:-1]
    else:
        main, tz = value[:19], value[19:] or "Z"
    if tz == "Z":
        tz = "+00:00"
    dt = datetime.datetime.fromisoformat(main.rstrip("Z") + tz)
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


def encode_entry(stream: str, data: bytes, when: str | None = None) -> bytes:
    text = data.decode("utf-8", errors="replace")
    return json.dumps({"log": text, "stream": stream, "time": when or rfc3339_nano()}).encode() + b"\n"


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (each with its newline) and the unfinished rest."""
    lines = buffer.split(b"\n")
    rest = lines.pop()
    return [line + b"\n" for line in lines], rest


@dataclass
class LogEntry:
    stream: str  # "stdout" | "stderr"
    data: bytes
    time: str  # RFC 3339 with nanoseconds
    seconds: float


def parse_line(line: bytes) -> LogEntry | None:
    try:
        doc = json.loads(line)
        when = str(doc.get("time", ""))
        return LogEntry(str(doc.get("stream", "stdout")), str(doc.get("log", "")).encode(), when, parse_rfc3339(when))
    except (ValueError, TypeError):
        return None


def read_entries(path: Path, tail: int | None, since: float, until: float | None) -> tuple[list[LogEntry], int]:
    """The entries matching the options, and the file offset reached (to follow from)."""
    try:
        handle: BinaryIO = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return [], 0
    with handle:
        keep: deque[LogEntry] | list[LogEntry] = deque(maxlen=tail) if tail is not None and tail >= 0 else []
        offset = 0
        for line in handle:
            if not line.endswith(b"\n"):
                break
            offset += len(line)
            entry = parse_line(line)
            if entry is None or entry.seconds < since or (until is not None and entry.seconds > until):
                continue
            keep.append(entry)
        return list(keep), offset


def read_new(path: Path, offset: int) -> tuple[Iterator[LogEntry], int]:
    """Complete entries written after `offset`, and the new offset."""
    entries: list[LogEntry] = []
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                entry = parse_line(line)
                if entry is not None:
                    entries.append(entry)
    except FileNotFoundError:
        pass
    return iter(entries), offset


async def stream_entries(
    path: Path,
    *,
    tail: int | None,
    since: float,
    until: float | None,
    follow: bool,
    still_running: Callable[[], bool],
    poll: float = 0.1,
) -> AsyncIterator[LogEntry]:
    """What `docker logs` shows: the matching entries, then (follow) new ones until the
    container stops and its last lines have been read."""
    import asyncio

    entries, offset = read_entries(path, tail, since, until)
    for entry in entries:
        yield entry
    if not follow:
        return
    while True:
        running = still_running()
        new, offset = read_new(path, offset)
        for entry in new:
            if until is not None and entry.seconds > until:
                return
            if entry.seconds >= since:
                yield entry
        if not running:
            return
        await asyncio.sleep(poll)
