"""Driving a hijacked connection from an engine Session: stdin in, output out (framed
without a TTY), the client's half-close passed on as the end of stdin."""

from __future__ import annotations

import asyncio
import contextlib

from toolbox_agent.containers.frames import docker_frame
from toolbox_agent.containers.stdio import Session
from toolbox_agent.http import MULTIPLEXED_STREAM, RAW_STREAM, Hijack


def stream_type(tty: bool) -> str:
    return RAW_STREAM if tty else MULTIPLEXED_STREAM


def hijack_session(session: Session, prelude: bytes = b"") -> Hijack:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stdin_task = asyncio.ensure_future(_forward_stdin(reader, session)) if session.stdin else None
        try:
            if prelude:
                writer.write(prelude)
            while True:
                item = await session.output.get()
                if item is None:
                    break
                stream, data = item
                if data:
                    writer.write(data if session.tty else docker_frame(stream, data))
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            if stdin_task is not None:
                stdin_task.cancel()
            await session.close()
            with contextlib.suppress(ConnectionError, RuntimeError, OSError):
                if writer.can_write_eof():
                    writer.write_eof()
                await writer.drain()
            writer.close()

    return Hijack(run, stream_type(session.tty))


async def _forward_stdin(reader: asyncio.StreamReader, session: Session) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await session.write_stdin(data)
    except ConnectionError:
        pass
    await session.close_stdin()
