"""The host agent's report of itself: a small JSON file in the instance directory
(InstancePaths.hostagent_state) that `toolbox status` reads: whether the SSH link is up,
each forwarded port and what keeps one from being forwarded, the last clock sync.

The agent rewrites it (atomically) when any of that changes; it says what the running
agent sees now, and is only read while that agent runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


class Report:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._doc: dict[str, Any] = {"pid": os.getpid(), "ssh": {"connected": False}, "ports": [], "clock": {}}

    def update(self, **parts: Any) -> None:
        with self._lock:
            self._doc.update(parts)
            self._doc["updated"] = time.time()
            if self.path is None:
                return
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(self._doc, indent=1) + "\n")
            os.replace(tmp, self.path)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def problems(path: Path) -> list[str]:
    """One line per thing the running host agent cannot do (for `toolbox status`)."""
    doc = read(path)
    out = []
    ssh = doc.get("ssh") or {}
    if doc and not ssh.get("connected"):
        out.append(f"the host agent is reconnecting to the guest ({ssh.get('error') or 'SSH connection lost'})")
    for port in doc.get("ports") or []:
        for problem in port.get("problems") or []:
            out.append(f"port {port.get('port')}/{port.get('proto')} is not forwarded to the host: {problem}")
    return out
