"""Resource limits (--memory, --cpus, --pids-limit, --cpu-shares) and `docker update`: Docker's
checks, and the cgroup v2 files a running container's limits are changed in."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from toolbox_agent.containers import stats
from toolbox_agent.containers.errors import InvalidParameter
from toolbox_agent.containers.model import Container

log = logging.getLogger("toolbox_agent.containers")
MIN_MEMORY = 6 * 1024 * 1024
CPU_PERIOD = 100000
UPDATABLE = ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "CpuQuota", "CpuPeriod", "PidsLimit",
             "CpusetCpus", "CpusetMems", "BlkioWeight")  # fmt: skip
RESTART_NAMES = ("", "no", "always", "unless-stopped", "on-failure")


def validate(hc: dict[str, Any]) -> None:
    """Docker's daemon-side checks of the limits (InvalidParameter: 400)."""
    memory = int(hc.get("Memory") or 0)
    if 0 < memory < MIN_MEMORY:
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    ncpu = os.cpu_count() or 1
    nano = int(hc.get("NanoCpus") or 0)
    if nano < 0 or nano > ncpu * 1_000_000_000:
        raise InvalidParameter(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")
    if nano and (hc.get("CpuQuota") or hc.get("CpuPeriod")):
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    policy = hc.get("RestartPolicy") or {}
    name = str(policy.get("Name") or "")
    if name not in RESTART_NAMES:
        raise InvalidParameter(f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'")
    if int(policy.get("MaximumRetryCount") or 0) and name != "on-failure":
        raise InvalidParameter("invalid restart policy: maximum retry count can only be used with 'on-failure'")
    if int(policy.get("MaximumRetryCount") or 0) < 0:
        raise InvalidParameter("invalid restart policy: maximum retry count cannot be negative")


def cgroup_values(hc: dict[str, Any]) -> dict[str, str]:
    """The cgroup v2 files for these limits ("max" where none is set)."""
    memory = int(hc.get("Memory") or 0)
    values = {"memory.max": str(memory) if memory > 0 else "max"}
    nano = int(hc.get("NanoCpus") or 0)
    quota, period = int(hc.get("CpuQuota") or 0), int(hc.get("CpuPeriod") or 0) or CPU_PERIOD
    if nano:
        quota, period = nano * CPU_PERIOD // 1_000_000_000, CPU_PERIOD
    values["cpu.max"] = f"{quota if quota > 0 else 'max'} {period}"
    pids = int(hc.get("PidsLimit") or 0)
    values["pids.max"] = str(pids) if pids > 0 else "max"
    shares = int(hc.get("CpuShares") or 0)
    if shares:
        values["cpu.weight"] = str(1 + ((shares - 2) * 9999) // 262142)  # runc's shares -> weight
    return values


def write_cgroup(cgroup: Path, values: dict[str, str]) -> None:
    if not cgroup.is_dir():  # a runtime without cgroups (the tests' fake one): the next start applies them
        log.warning("no cgroup %s: limits apply from the next start", cgroup)
        return
    for name, value in values.items():
        try:
            (cgroup / name).write_text(value)
        except OSError as exc:
            raise InvalidParameter(f"Cannot update container: writing {name}: {exc.strerror}") from None


def update(c: Container, body: dict[str, Any]) -> list[str]:
    """`docker update`: the limits and the restart policy, at once on a running container."""
    hc = dict(c.host_config)
    changes = {k: body[k] for k in UPDATABLE if body.get(k) not in (None, "")}
    policy = body.get("RestartPolicy") or {}
    if policy.get("Name"):
        if hc.get("AutoRemove") and policy["Name"] != "no":
            raise InvalidParameter("Restart policy cannot be updated because AutoRemove is enabled for the container")
        changes["RestartPolicy"] = {"Name": policy["Name"], "MaximumRetryCount": int(policy.get("MaximumRetryCount") or 0)}
    if "NanoCpus" in changes:
        hc.pop("CpuQuota", None)
        hc.pop("CpuPeriod", None)
    hc.update(changes)
    validate(hc)
    if c.state.status in ("running", "paused") and any(k in changes for k in ("Memory", "NanoCpus", "CpuQuota", "CpuPeriod", "PidsLimit", "CpuShares")):
        write_cgroup(stats.cgroup_dir(c.id), cgroup_values(hc))
    c.host_config.clear()
    c.host_config.update(hc)
    c.save()
    return []
