"""`docker stats`: samples of a container's cgroup v2 counters in Docker's JSON shape."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from toolbox_agent.containers.logs import rfc3339_nano

CGROUP_ROOT = Path("/sys/fs/cgroup")
USER_HZ = 100


def cgroup_dir(container_id: str) -> Path:
    return CGROUP_ROOT / "toolbox" / container_id


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _int(text: str, default: int = 0) -> int:
    text = text.strip()
    return int(text) if text.isdigit() else default


def _keyed(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def system_cpu_ns(proc_stat: str | None = None) -> int:
    """All CPUs' time since boot (the first line of /proc/stat), in nanoseconds."""
    text = proc_stat if proc_stat is not None else _read(Path("/proc/stat"))
    first = text.splitlines()[0].split() if text else []
    ticks = sum(int(v) for v in first[1:9] if v.isdigit())
    return ticks * (1_000_000_000 // USER_HZ)


def sample(cgroup: Path, mem_total: int) -> dict[str, Any]:
    """One reading: cpu_stats, memory_stats, pids_stats (zeros when the cgroup is gone)."""
    cpu = _keyed(_read(cgroup / "cpu.stat"))
    mem = _keyed(_read(cgroup / "memory.stat"))
    limit = _int(_read(cgroup / "memory.max"), mem_total) or mem_total
    return {
        "read": rfc3339_nano(),
        "cpu_stats": {
            "cpu_usage": {"total_usage": cpu.get("usage_usec", 0) * 1000, "usage_in_kernelmode": cpu.get("system_usec", 0) * 1000,
                          "usage_in_usermode": cpu.get("user_usec", 0) * 1000},
            "system_cpu_usage": system_cpu_ns(),
            "online_cpus": os.cpu_count() or 1,
            "throttling_data": {"periods": cpu.get("nr_periods", 0), "throttled_periods": cpu.get("nr_throttled", 0),
                                "throttled_time": cpu.get("throttled_usec", 0) * 1000},
        },
        "memory_stats": {"usage": _int(_read(cgroup / "memory.current")), "limit": limit, "stats": mem},
        "pids_stats": {"current": _int(_read(cgroup / "pids.current")), "limit": _int(_read(cgroup / "pids.max"), 0)},
        "blkio_stats": {"io_service_bytes_recursive": None},
    }  # fmt: skip


def document(name: str, cid: str, now: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    empty = {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": 0, "throttling_data": {}}
    return {
        **now,
        "preread": before["read"] if before else "0001-01-01T00:00:00Z",
        "precpu_stats": before["cpu_stats"] if before else empty,
        "name": name,
        "id": cid,
        "num_procs": 0,
        "storage_stats": {},
    }
