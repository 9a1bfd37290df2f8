"""The engine's event bus: what `docker events` streams (container create/start/die/...)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

HISTORY = 256


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)

    def publish(self, type_: str, action: str, id_: str, attributes: dict[str, str] | None = None) -> None:
        now = time.time_ns()
        event: dict[str, Any] = {
            "Type": type_,
            "Action": action,
            "Actor": {"ID": id_, "Attributes": dict(attributes or {})},
            "scope": "local",
            "time": now // 1_000_000_000,
            "timeNano": now,
        }
        if type_ == "container":  # the old fields, still read by some clients
            event.update(status=action, id=id_, **({"from": attributes["image"]} if attributes and "image" in attributes else {}))
        self._history.append(event)
        for queue in list(self._subscribers):
            queue.put_nowait(event)

    @property
    def listeners(self) -> int:
        return len(self._subscribers)

    async def stream(self, since: float | None = None, until: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """Past events from `since`, then live ones until `until` (or for ever)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            if since is not None:
                for event in list(self._history):
                    if event["timeNano"] >= since * 1e9 and (until is None or event["timeNano"] <= until * 1e9):
                        yield event
            while True:
                if until is not None:
                    remaining = until - time.time()
                    if remaining <= 0:
                        return
                    try:
                        event = await asyncio.wait_for(queue.get(), remaining)
                    except asyncio.TimeoutError:
                        return
                else:
                    event = await queue.get()
                yield event
        finally:
            self._subscribers.discard(queue)
