"""Docker's restart policies after an exit: the decision (model.should_restart), the backoff
(100 ms doubling to a minute, back to 100 ms once a run lasted 10 s), the "restarting" state
while the container waits, and cancelling that wait (`docker stop`, `rm -f`, `start`)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from toolbox_agent.containers.logs import parse_rfc3339
from toolbox_agent.containers.model import Container, should_restart

if TYPE_CHECKING:
    from toolbox_agent.containers.engine import ContainerEngine

log = logging.getLogger("toolbox_agent.containers")
FIRST_DELAY, MAX_DELAY, RESET_AFTER = 0.1, 60.0, 10.0


def next_delay(previous: float, ran_for: float) -> float:
    """Docker's restart manager: the wait before the next restart."""
    if ran_for >= RESET_AFTER:
        previous = 0.0
    return FIRST_DELAY if previous <= 0 else min(previous * 2, MAX_DELAY)


def run_seconds(c: Container) -> float:
    try:
        return parse_rfc3339(c.state.finished_at) - parse_rfc3339(c.state.started_at)
    except ValueError:
        return 0.0


class RestartManager:
    def __init__(self, engine: ContainerEngine) -> None:
        self.engine = engine
        self.delays: dict[str, float] = {}  # in memory, as Docker's: an agent restart starts over
        self.pending: dict[str, asyncio.Task[None]] = {}
        # Cleared while the agent recovers at start: restarts wait until the API answers,
        # so a boot with restart-policy containers is not slower to serve /_ping.
        self.serving = asyncio.Event()
        self.serving.set()

    def hold(self) -> None:
        self.serving.clear()

    def release(self) -> None:
        self.serving.set()

    def after_exit(self, c: Container) -> bool:
        """The container exited on its own: schedule its restart if its policy says so."""
        if not should_restart(c):
            self.delays.pop(c.id, None)
            return False
        delay = next_delay(self.delays.get(c.id, 0.0), run_seconds(c))
        self.delays[c.id] = delay
        c.restart_count += 1  # counted when scheduled, as Docker does (on-failure:N compares it)
        c.state.status = "restarting"
        c.save()
        self.pending[c.id] = asyncio.ensure_future(self._restart(c, delay))
        return True

    def at_boot(self, c: Container) -> None:
        """Agent start (after a crash or a reboot): start what the policy wants running."""
        if should_restart(c, booting=True) and not c.state.started_at.startswith("0001"):
            c.state.status = "restarting"
            self.pending[c.id] = asyncio.ensure_future(self._restart(c, 0.0))

    def cancel(self, c: Container) -> bool:
        """Stop waiting to restart it (the container stays exited); whether it was waiting."""
        task = self.pending.pop(c.id, None)
        if task is not None:
            task.cancel()
        self.delays.pop(c.id, None)
        if c.state.status == "restarting":
            c.state.status = "exited"
            c.save()
            return True
        return task is not None

    async def _restart(self, c: Container, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            await self.serving.wait()
        except asyncio.CancelledError:
            return
        self.pending.pop(c.id, None)
        if c.id not in self.engine.containers:
            return
        try:
            await self.engine.start(c.id, by_policy=True)
        except Exception as exc:  # noqa: BLE001 - as Docker: a failed restart leaves it exited
            log.warning("restarting %s by policy failed: %s", c.short_id, exc)
            if c.state.status == "restarting":
                c.state.status = "exited"
                c.save()
