"""/_ping, /version, /info, /events: the system resource."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from toolbox_agent import system
from toolbox_agent.api.args import time_arg
from toolbox_agent.events import EventBus
from toolbox_agent.http import Request, Response, Route, json_response
from toolbox_agent.settings import Settings
from toolbox_agent.version import AGENT_VERSION, API_VERSION, ENGINE_NAME, MIN_API_VERSION

PING_HEADERS = {
    "Api-Version": API_VERSION,
    "Ostype": "linux",
    "Docker-Experimental": "false",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}


@dataclass
class SystemParts:
    settings: Settings
    events: EventBus
    container_counts: Callable[[], dict[str, int]]  # total, running, paused, stopped
    image_count: Callable[[], int]


def routes(parts: SystemParts) -> list[Route]:
    async def ping(req: Request) -> Response:
        headers = {**PING_HEADERS, "Content-Type": "text/plain; charset=utf-8"}
        return Response(200, headers, b"OK")

    async def version(req: Request) -> Response:
        return json_response(version_doc())

    async def info(req: Request) -> Response:
        return json_response(info_doc(parts))

    async def events(req: Request) -> Response:
        since = time_arg(req, "since")
        until = time_arg(req, "until")
        wanted = req.filters()

        async def body() -> AsyncIterator[bytes]:
            async for event in parts.events.stream(since, until):
                if _event_matches(event, wanted):
                    yield json.dumps(event).encode() + b"\n"

        return Response(200, {"Content-Type": "application/json"}, body())

    return [
        Route("GET", "/_ping", ping),
        Route("HEAD", "/_ping", ping),
        Route("GET", "/version", version),
        Route("GET", "/info", info),
        Route("GET", "/events", events),
    ]


def version_doc() -> dict[str, Any]:
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": system.go_arch(),
               "KernelVersion": system.kernel_version(), "GitCommit": ENGINE_NAME, "GoVersion": "python", "Experimental": "false", "BuildTime": ""}
    return {
        "Platform": {"Name": f"toolbox guest agent {AGENT_VERSION}"},
        "Components": [{"Name": "Engine", "Version": AGENT_VERSION, "Details": details}],
        "Version": AGENT_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": ENGINE_NAME,
        "GoVersion": "python",
        "Os": "linux",
        "Arch": system.go_arch(),
        "KernelVersion": system.kernel_version(),
        "BuildTime": "",
    }


def info_doc(parts: SystemParts) -> dict[str, Any]:
    counts = parts.container_counts()
    settings = parts.settings
    return {
        "ID": socket.gethostname(),
        "Containers": counts.get("total", 0),
        "ContainersRunning": counts.get("running", 0),
        "ContainersPaused": counts.get("paused", 0),
        "ContainersStopped": counts.get("stopped", 0),
        "Images": parts.image_count(),
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
        "Plugins": {"Volume": ["local"], "Network": ["host", "null"], "Authorization": None, "Log": ["json-file"]},
        "MemoryLimit": True,
        "SwapLimit": False,
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": True,
        "CPUSet": True,
        "PidsLimit": True,
        "IPv4Forwarding": True,
        "Debug": False,
        "NFd": 0,
        "OomKillDisable": False,
        "NGoroutines": 0,
        "SystemTime": _now_rfc3339(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": system.cgroup_version(),
        "NEventsListener": parts.events.listeners,
        "KernelVersion": system.kernel_version(),
        "OperatingSystem": system.operating_system(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": system.go_arch() if system.go_arch() != "amd64" else "x86_64",
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": None,
            "AllowNondistributableArtifactsHostnames": None,
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {},
            "Mirrors": None,
        },
        "NCPU": system.ncpu(),
        "MemTotal": system.mem_total(),
        "DockerRootDir": str(settings.root),
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": socket.gethostname(),
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": AGENT_VERSION,
        "Runtimes": {"crun": {"path": settings.runtime}},
        "DefaultRuntime": "crun",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": ""},
        "RuncCommit": {"ID": ""},
        "InitCommit": {"ID": ""},
        "SecurityOptions": ["name=cgroupns"],
        "Warnings": [],
    }


def _now_rfc3339() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _event_matches(event: dict[str, Any], wanted: dict[str, list[str]]) -> bool:
    if event["Type"].startswith("toolbox.") and event["Type"] not in wanted.get("type", []):
        return False  # toolbox's own events go only to those who ask for them by type
    for key, values in wanted.items():
        if key == "type" and event["Type"] not in values:
            return False
        if key in ("event", "action") and event["Action"] not in values:
            return False
        if key == "container" and event["Type"] == "container":
            names = {event["Actor"]["ID"], event["Actor"]["Attributes"].get("name", "")}
            if not names & set(values) and not any(event["Actor"]["ID"].startswith(v) for v in values):
                return False
        if key == "volume" and event["Type"] == "volume" and event["Actor"]["ID"] not in values:
            return False
        if key == "label":
            attrs = event["Actor"]["Attributes"]
            for v in values:
                k, _, val = v.partition("=")
                if k not in attrs or (val and attrs[k] != val):
                    return False
    return True
