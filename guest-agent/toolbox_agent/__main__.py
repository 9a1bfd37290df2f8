"""Placeholder agent: answers /_ping on the agent socket until the real engine lands.

The image's init runs `python3 -m toolbox_agent` under its supervisor exactly as it will
run the real agent, so readiness checks and supervision are exercised today.
"""

from __future__ import annotations

import asyncio
import os

SOCKET = "/run/toolbox/docker.sock"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
            ok = path.rstrip(b"/").endswith(b"/_ping")
            body = b"OK" if ok else b'{"message":"not implemented"}'
            status = b"200 OK" if ok else b"404 Not Found"
            ctype = b"text/plain" if ok else b"application/json"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nApi-Version: 1.44\r\n"
                b"Ostype: linux\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    os.makedirs(os.path.dirname(SOCKET), exist_ok=True)
    if os.path.exists(SOCKET):
        os.unlink(SOCKET)
    server = await asyncio.start_unix_server(handle, SOCKET)
    os.chmod(SOCKET, 0o660)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
