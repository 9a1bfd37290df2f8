"""Build the engine parts, collect every resource's routes, serve the API."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from toolbox_agent.api import clock as clock_api
from toolbox_agent.api import system as system_api
from toolbox_agent.api import udp as udp_api
from toolbox_agent.events import EventBus
from toolbox_agent.http import Route, Router, Server
from toolbox_agent.lean import ssl_hidden
from toolbox_agent.settings import Settings, load_settings

log = logging.getLogger("toolbox_agent")


@dataclass
class Agent:
    settings: Settings
    events: EventBus
    images: Any  # toolbox_agent.images.ImageStore, when that package is present
    containers: Any  # toolbox_agent.containers.ContainerEngine
    routes: list[Route]


def _image_store(settings: Settings, events: EventBus) -> tuple[Any, list[Route]]:
    """The images engineer's store and routes, if their modules are present."""
    try:
        from toolbox_agent.api import images as images_api
        from toolbox_agent.images import ImageStore
    except ImportError as exc:
        log.warning("images API not available: %s", exc)
        return None, []
    store = _construct_store(ImageStore, settings, events)
    return store, images_api.routes(store)


def _construct_store(cls: Any, settings: Settings, events: EventBus) -> Any:
    factory = getattr(cls, "from_settings", None)
    if factory is not None:
        return factory(settings)
    return cls(settings.images_dir)


def _network_routes(containers: Any) -> list[Route]:
    from toolbox_agent.api import networks as networks_api
    from toolbox_agent.api import ports as ports_api

    return networks_api.routes(containers) + ports_api.routes(containers.network)


def build_agent(settings: Settings, images: Any = None) -> Agent:
    """Every engine part and route; `images` replaces the image store (tests)."""
    events = EventBus()
    image_routes: list[Route] = []
    if images is None:
        images, image_routes = _image_store(settings, events)
    containers: Any = None
    container_routes: list[Route] = []
    try:
        from toolbox_agent.api import containers as containers_api
        from toolbox_agent.api import exec as exec_api
        from toolbox_agent.api import volumes as volumes_api
        from toolbox_agent.containers.engine import ContainerEngine

        containers = ContainerEngine(settings, images, events)
        container_routes = (containers_api.routes(containers) + exec_api.routes(containers)
                            + volumes_api.routes(containers.volumes) + _network_routes(containers))
    except ImportError as exc:
        log.warning("containers API not available: %s", exc)

    def container_counts() -> dict[str, int]:
        return containers.counts() if containers is not None else {}

    def image_count() -> int:
        if images is None:
            return 0
        try:
            return len(images.list())
        except Exception:  # noqa: BLE001 - /info must answer even if the store is unwell
            return 0

    parts = system_api.SystemParts(settings, events, container_counts, image_count)
    routes = system_api.routes(parts) + container_routes + image_routes + clock_api.routes() + udp_api.routes()
    return Agent(settings, events, images, containers, routes)


async def start(agent: Agent) -> asyncio.AbstractServer:
    """Recover the containers' state, listen on the API socket, then let restart policies run."""
    if agent.containers is not None:
        await agent.containers.recover()
    headers = {"Server": "toolbox-agent", "Api-Version": system_api.API_VERSION, "Ostype": "linux"}
    server = await Server(Router(agent.routes), headers).start_unix(str(agent.settings.socket))
    if agent.containers is not None:
        agent.containers.restarts.release()
    return server


async def serve(settings: Settings, marks: list[tuple[str, float]] | None = None) -> None:
    marks = [] if marks is None else marks
    with ssl_hidden():  # the parts' modules import without ssl (lean.py)
        agent = build_agent(settings)
    marks.append(("built", time.monotonic()))
    srv = await start(agent)
    marks.append(("listening", time.monotonic()))
    log.info("serving the Docker API on %s (state in %s)", settings.socket, settings.root)
    log.info("start-up, seconds since boot: %s", ", ".join(f"{name} {at:.2f}" for name, at in marks))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with srv:
        await stop.wait()
    log.info("stopping (containers keep running under their monitors)")


# What build_agent imports: each present part's modules (a missing one is build_agent's
# warning). Imported before boot_gate, so that under emulation their seconds of byte code
# overlap init's mounts and network instead of following them.
PART_MODULES = ("toolbox_agent.api.images", "toolbox_agent.images", "toolbox_agent.api.containers",
                "toolbox_agent.api.exec", "toolbox_agent.api.volumes", "toolbox_agent.containers.engine",
                "toolbox_agent.api.networks", "toolbox_agent.api.ports")


def import_parts() -> None:
    with ssl_hidden():
        for name in PART_MODULES:
            try:
                importlib.import_module(name)
            except ImportError:
                pass


def boot_gate(env: dict[str, str], poll: float = 0.05) -> None:
    """Init starts the agent early in the boot (vm-image init) and creates the file named by
    TOOLBOX_AGENT_GATE once the data disk, the config drive and the network are up: wait for
    it before touching any state. Then write to TOOLBOX_AGENT_LOG (the log on the data disk,
    which was not mounted when init opened this process's output)."""
    gate = env.get("TOOLBOX_AGENT_GATE")
    if gate:
        while not os.path.exists(gate):
            time.sleep(poll)
        if os.getpriority(os.PRIO_PROCESS, 0) > 0:  # __main__'s low priority while it waited
            try:
                os.setpriority(os.PRIO_PROCESS, 0, 0)
            except PermissionError:  # not root (tests): it stays low, which only slows it
                pass
    log_path = env.get("TOOLBOX_AGENT_LOG")
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def _process_started() -> float:
    """When this process started, in seconds since boot (CLOCK_MONOTONIC's scale here)."""
    try:
        stat = open("/proc/self/stat").read()  # noqa: SIM115 - one small read
        return int(stat.rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def main() -> None:
    # The start-up's steps in seconds since boot, logged once the socket listens: the
    # same clock as init's console lines, to see what a boot waited for.
    marks = [("process", _process_started()), ("main", time.monotonic())]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import_parts()
    marks.append(("imported", time.monotonic()))
    boot_gate(dict(os.environ))
    marks.append(("released", time.monotonic()))
    settings = load_settings()
    settings.root.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(settings, marks))
