"""Streams between the engine and an attached client: a subscription to a container's
output, and the session objects the API's hijack callback drives."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from toolbox_agent.containers import frames

Output = tuple[int, bytes] | None  # (1 stdout | 2 stderr, data); None ends the stream


@dataclass(eq=False)
class Subscriber:
    """One attached client's view of a container's output."""

    stdout: bool = True
    stderr: bool = True
    queue: asyncio.Queue[Output] = field(default_factory=asyncio.Queue)

    def put(self, stream: int, data: bytes) -> None:
        if (stream == 1 and self.stdout) or (stream == 2 and self.stderr):
            self.queue.put_nowait((stream, data))

    def end(self) -> None:
        self.queue.put_nowait(None)


@dataclass
class Session:
    """What a hijacked connection is wired to: output to read, stdin to write."""

    tty: bool
    output: asyncio.Queue[Output]
    write_stdin: Callable[[bytes], Awaitable[None]]
    close_stdin: Callable[[], Awaitable[None]]
    close: Callable[[], Awaitable[None]]
    stdin: bool = False


class Link:
    """The engine's connection to one container's shim."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()  # the exit is handled only after start's bookkeeping

    async def send(self, kind: int, data: bytes = b"") -> None:
        self.writer.write(frames.shim_frame(kind, data))
        await self.writer.drain()
