"""Where the agent keeps its state and what the config drive told it (agent.json)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("toolbox_agent")

DEFAULT_ROOT = "/var/lib/toolbox"
DEFAULT_SOCKET = "/run/toolbox/docker.sock"
DEFAULT_SETTINGS = "/run/toolbox/agent.json"
DEFAULT_RUN_DIR = "/run/toolbox"


@dataclass
class Settings:
    root: Path  # images/, containers/ (the data disk in the VM)
    socket: Path  # the Docker API socket
    run_dir: Path  # volatile state (crun's state root lives below it)
    insecure_registries: list[str] = field(default_factory=list)
    runtime: str = "crun"  # the OCI runtime binary (tests put a fake one here)
    # "kernel": bridges, namespaces and nftables in the VM; "dry": only recorded (an agent
    # outside the VM, e.g. in tests, must never touch the host's network)
    network: str = "dry"
    raw: dict[str, Any] = field(default_factory=dict)  # the whole agent.json

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def containers_dir(self) -> Path:
        return self.root / "containers"

    @property
    def network_dir(self) -> Path:
        return self.root / "network"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    root = Path(env.get("TOOLBOX_AGENT_ROOT", DEFAULT_ROOT))
    socket = Path(env.get("TOOLBOX_AGENT_SOCKET", DEFAULT_SOCKET))
    run_dir = Path(env.get("TOOLBOX_AGENT_RUN", str(root / "run") if "TOOLBOX_AGENT_ROOT" in env else DEFAULT_RUN_DIR))
    path = Path(env.get("TOOLBOX_AGENT_SETTINGS", DEFAULT_SETTINGS))
    raw: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
            raw = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", path, exc)
    insecure = raw.get("insecure_registries") or raw.get("insecure-registries") or []
    return Settings(
        root=root,
        socket=socket,
        run_dir=run_dir,
        insecure_registries=[str(r) for r in insecure] if isinstance(insecure, list) else [],
        runtime=env.get("TOOLBOX_AGENT_RUNTIME", "crun"),
        network=env.get("TOOLBOX_AGENT_NETWORK", "dry" if "TOOLBOX_AGENT_ROOT" in env else "kernel"),
        raw=raw,
    )
