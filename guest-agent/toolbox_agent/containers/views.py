"""Docker's JSON shapes for containers (inspect, list) and the list filters."""

from __future__ import annotations

import re
import time
from typing import Any

from toolbox_agent.containers.logs import parse_rfc3339
from toolbox_agent.containers.model import Container


def inspect_doc(c: Container, network: Any = None) -> dict[str, Any]:
    """`network`: the network engine, which shapes NetworkSettings (None: the VM's)."""
    s = c.state
    return {
        "Id": c.id,
        "Created": c.created,
        "Path": c.path,
        "Args": c.args,
        "State": {
            "Status": s.status,
            "Running": s.running,
            "Paused": s.status == "paused",
            "Restarting": s.status == "restarting",
            "OOMKilled": s.oom_killed,
            "Dead": s.status == "dead",
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": s.started_at,
            "FinishedAt": s.finished_at,
        },
        "Image": c.image_id,
        "ResolvConfPath": str(c.dir / "resolv.conf"),
        "HostnamePath": str(c.dir / "hostname"),
        "HostsPath": str(c.dir / "hosts"),
        "LogPath": str(c.log_path),
        "Name": c.name,
        "RestartCount": c.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": c.exec_ids or None,
        "HostConfig": _host_config(c),
        "GraphDriver": {"Name": "overlay2", "Data": {"MergedDir": str(c.rootfs), "UpperDir": str(c.dir / "upper"), "WorkDir": str(c.dir / "work")}},
        "Mounts": _mounts(c),
        "Config": {**c.config, "Image": c.image},
        "NetworkSettings": _network(c, network),
    }


def _host_config(c: Container) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "Binds": None, "NetworkMode": "host", "PortBindings": {}, "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "AutoRemove": False, "Privileged": False, "LogConfig": {"Type": "json-file", "Config": {}}, "CapAdd": None,
        "CapDrop": None, "Dns": [], "ExtraHosts": None, "ReadonlyRootfs": False, "SecurityOpt": None, "ConsoleSize": [0, 0],
    }  # fmt: skip
    return {**defaults, **c.host_config}


def _mounts(c: Container) -> list[dict[str, Any]]:
    from toolbox_agent.containers import volumemounts

    return [mp.inspect() for mp in volumemounts.load(c)]


def _network(c: Container, network: Any = None) -> dict[str, Any]:
    if network is not None:
        return dict(network.container_settings(c.id, c.config, c.host_config))
    mode = c.host_config.get("NetworkMode") or "host"
    mode = "host" if mode == "default" else mode
    return {
        "Bridge": "", "SandboxID": "", "HairpinMode": False, "Ports": {}, "SandboxKey": "",
        "Networks": {mode: {"IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": mode, "EndpointID": "",
                            "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": "", "DriverOpts": None}},
    }  # fmt: skip


def summary_doc(c: Container, network: Any = None) -> dict[str, Any]:
    cmd = " ".join([c.path, *c.args])
    return {
        "Id": c.id,
        "Names": [c.name],
        "Image": c.image,
        "ImageID": c.image_id,
        "Command": cmd,
        "Created": int(parse_rfc3339(c.created)),
        "Ports": network.container_ports(c.id, c.config, c.host_config) if network is not None else [],
        "Labels": c.config.get("Labels") or {},
        "State": c.state.status,
        "Status": status_text(c),
        "HostConfig": {"NetworkMode": c.host_config.get("NetworkMode") or "host"},
        "NetworkSettings": {"Networks": _network(c, network)["Networks"]},
        "Mounts": _mounts(c),
    }


def status_text(c: Container, now: float | None = None) -> str:
    now = time.time() if now is None else now
    s = c.state
    if s.status in ("running", "paused"):
        text = "Up " + human_duration(now - parse_rfc3339(s.started_at))
        return text + " (Paused)" if s.status == "paused" else text
    if s.status == "exited":
        if s.finished_at.startswith("0001"):
            return f"Exited ({s.exit_code})"
        return f"Exited ({s.exit_code}) {human_duration(now - parse_rfc3339(s.finished_at))} ago"
    if s.status == "restarting":
        return f"Restarting ({s.exit_code}) {human_duration(now - parse_rfc3339(s.finished_at))} ago"
    if s.status == "removing":
        return "Removal In Progress"
    return s.status.capitalize()


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def matches_labels(c: Container, wanted: list[str]) -> bool:
    labels = c.config.get("Labels") or {}
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def matches(c: Container, filters: dict[str, list[str]]) -> bool:
    """Docker's `ps` filters: status, name, label, ancestor, id, exited."""
    for key, values in filters.items():
        if not values:
            continue
        if key == "status" and c.state.status not in values:
            return False
        if key == "name" and not any(re.search(v, c.name) for v in values):
            return False
        if key == "id" and not any(c.id.startswith(v) for v in values):
            return False
        if key == "label" and not matches_labels(c, values):
            return False
        if key == "exited" and (c.state.status != "exited" or str(c.state.exit_code) not in values):
            return False
        if key == "ancestor" and not any(_is_ancestor(c, v) for v in values):
            return False
    return True


def _is_ancestor(c: Container, value: str) -> bool:
    if value in (c.image, c.image_id) or c.image_id.startswith(value) or c.image_id.startswith("sha256:" + value):
        return True
    base = c.image.rsplit(":", 1)[0] if ":" in c.image.rsplit("/", 1)[-1] else c.image
    return value == base or value == base + ":latest" or (":" not in value and base == value)
