"""A container's record: what `docker create` asked for, merged with its image, and its
state; kept as DIR/container.json (written atomically)."""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolbox_agent.lean import random_id

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
ZERO_TIME = "0001-01-01T00:00:00Z"

_ADJECTIVES = ["brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry", "nifty",
               "quirky", "serene", "sharp", "tender", "vibrant", "wizardly", "zealous", "bold", "clever"]  # fmt: skip
_NOUNS = ["babbage", "curie", "darwin", "euler", "fermat", "gauss", "hopper", "lovelace", "noether", "pascal",
          "ritchie", "shannon", "thompson", "turing", "wozniak", "hamilton", "kepler", "lamport", "mccarthy", "tesla"]  # fmt: skip


def new_id() -> str:
    return random_id()


def random_name() -> str:
    pick = random.SystemRandom().choice
    return f"{pick(_ADJECTIVES)}_{pick(_NOUNS)}"


@dataclass
class State:
    status: str = "created"  # created | running | paused | restarting | removing | exited | dead
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    oom_killed: bool = False
    manually_stopped: bool = False  # `docker stop`: no restart by policy until started again

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")


@dataclass
class Container:
    id: str
    name: str  # with its leading "/"
    created: str
    image: str  # as the user named it
    image_id: str
    path: str
    args: list[str]
    config: dict[str, Any]  # Docker's container Config, merged with the image's
    host_config: dict[str, Any]
    state: State = field(default_factory=State)
    restart_count: int = 0
    exec_ids: list[str] = field(default_factory=list)
    dir: Path = field(default=Path("."), compare=False)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    @property
    def log_path(self) -> Path:
        return self.dir / "container-json.log"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    def save(self) -> None:
        doc = asdict(self)
        doc.pop("dir")
        tmp = self.dir / "container.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.dir / "container.json")

    @classmethod
    def load(cls, cdir: Path) -> Container:
        doc = json.loads((cdir / "container.json").read_text())
        doc["state"] = State(**doc.get("state", {}))
        return cls(**doc, dir=cdir)


def merge_config(config: dict[str, Any], image_config: dict[str, Any]) -> dict[str, Any]:
    """Docker's merge of a create request's Config with the image's config."""
    merged = dict(config)
    img = image_config or {}
    if merged.get("Entrypoint") is None:
        merged["Entrypoint"] = img.get("Entrypoint")
        if not merged.get("Cmd"):
            merged["Cmd"] = img.get("Cmd")
    env: dict[str, str] = {}
    order: list[str] = []
    for item in (img.get("Env") or []) + (merged.get("Env") or []):
        key = item.split("=", 1)[0]
        if key not in env:
            order.append(key)
        env[key] = item
    merged["Env"] = [env[k] for k in order]
    for key in ("WorkingDir", "User", "StopSignal"):
        if not merged.get(key) and img.get(key):
            merged[key] = img[key]
    labels = dict(img.get("Labels") or {})
    labels.update(merged.get("Labels") or {})
    merged["Labels"] = labels
    if not merged.get("ExposedPorts") and img.get("ExposedPorts"):
        merged["ExposedPorts"] = img["ExposedPorts"]
    if img.get("Volumes"):  # the image's VOLUMEs and the user's `-v /dst`, together
        merged["Volumes"] = {**(merged.get("Volumes") or {}), **img["Volumes"]}
    return merged


def command_line(config: dict[str, Any]) -> list[str]:
    return list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])


def should_restart(c: Container, booting: bool = False) -> bool:
    """Docker's restart policies. At the engine's start (`booting`) an `always` container comes
    back even if it was stopped by hand; `unless-stopped` and `on-failure` do not."""
    policy = c.host_config.get("RestartPolicy") or {}
    name = policy.get("Name") or "no"
    if c.state.status == "removing" or name == "no":
        return False
    if name == "always":
        return booting or not c.state.manually_stopped
    if c.state.manually_stopped:
        return False
    if name == "unless-stopped":
        return True
    if name == "on-failure":
        limit = int(policy.get("MaximumRetryCount") or 0)
        return c.state.exit_code != 0 and (limit == 0 or c.restart_count < limit)
    return False


def unique_random_name(taken: set[str]) -> str:
    """"/adjective_noun", not one of `taken`."""
    for _ in range(100):
        name = "/" + random_name()
        if name not in taken:
            return name
    return "/" + random_name() + "_" + new_id()[:6]


def created_seconds(c: Container) -> float:
    from toolbox_agent.containers.logs import parse_rfc3339

    try:
        return parse_rfc3339(c.created)
    except ValueError:
        return 0.0
