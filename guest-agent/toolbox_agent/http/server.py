"""An HTTP/1.1 server on asyncio unix-socket streams, with h11 doing the protocol.

One task per connection, keep-alive, request bodies read whole, response bodies either
bytes (Content-Length) or an async iterator (chunked; headers go out at once, each chunk
is flushed). Docker's connection hijack: a handler returns `Hijack`, the server answers
`101 UPGRADED` (or `200 OK` to a client that did not ask to upgrade) and hands the raw
streams to the callback. A streamed response stops when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import traceback
from collections.abc import AsyncIterator
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11

from toolbox_agent.http.routing import Router, split_version
from toolbox_agent.http.types import ApiError, Hijack, Request, Response, error_response
from toolbox_agent.lean import trim_heap

log = logging.getLogger("toolbox_agent.http")

MAX_BODY = 16 * 1024 * 1024 * 1024
READ_SIZE = 256 * 1024
TRIM_AFTER_S = 2.0  # quiet time after a connection ends before freed heap goes back


class _ClientGone(Exception):
    pass


class Server:
    def __init__(self, router: Router, common_headers: dict[str, str] | None = None) -> None:
        self.router = router
        self.common_headers = common_headers or {}
        # encoded once: h11 takes bytes as they are (str would be encoded per response)
        self._common = {k.encode("latin-1"): v.encode("latin-1") for k, v in self.common_headers.items()}
        self._server: asyncio.AbstractServer | None = None
        self._trim: asyncio.TimerHandle | None = None
        self._last_end = 0.0

    async def start_unix(self, path: str, mode: int = 0o660) -> asyncio.AbstractServer:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)
        # sshd connects each forwarded channel without blocking: with asyncio's default backlog
        # (100) a burst of clients fails with EAGAIN instead of waiting its turn.
        self._server = await asyncio.start_unix_server(self.handle_connection, path, limit=READ_SIZE,
                                                       backlog=socket.SOMAXCONN)
        os.chmod(path, mode)
        return self._server

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1024 * 1024)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    return
                result = await self._dispatch(request)
                if isinstance(result, Hijack):
                    await self._hijack(conn, reader, writer, request, result)
                    return
                await self._send(conn, reader, writer, request, result)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (ConnectionError, _ClientGone, asyncio.IncompleteReadError):
            pass
        except h11.RemoteProtocolError as exc:
            await self._protocol_error(conn, writer, exc)
        except Exception:  # noqa: BLE001 - a bug must not kill the server
            log.exception("connection handler failed")
        finally:
            writer.close()
            self._trim_when_quiet()

    def _trim_when_quiet(self) -> None:
        """A pull or a load leaves megabytes of freed heap that glibc keeps: hand it back
        once no connection has ended for TRIM_AFTER_S. One timer at a time, not one per
        connection (a busy client would fill the loop's heap with cancelled ones)."""
        loop = asyncio.get_running_loop()
        self._last_end = loop.time()
        if self._trim is None:
            self._trim = loop.call_later(TRIM_AFTER_S, self._trim_if_quiet)

    def _trim_if_quiet(self) -> None:
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_end
        if quiet < TRIM_AFTER_S:
            self._trim = loop.call_later(TRIM_AFTER_S - quiet, self._trim_if_quiet)
            return
        self._trim = None
        trim_heap()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
        head: h11.Request | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large")
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _to_request(head, b"".join(chunks))

    async def _dispatch(self, request: Request) -> Response | Hijack:
        matched = self.router.match(request.method, request.path)
        if matched is None:
            return error_response(404, "page not found")
        route, params = matched
        request.path_params = params
        try:
            return await route.handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except Exception as exc:  # noqa: BLE001 - a 500 names the bug, the log has the traceback
            log.error("%s %s failed:\n%s", request.method, request.path, traceback.format_exc())
            return error_response(500, f"internal error: {exc or type(exc).__name__}")  # TimeoutError() says nothing

    def _headers(self, extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
        merged = {**self._common, **{k.encode("latin-1"): v.encode("latin-1") for k, v in extra.items()}}
        return list(merged.items())

    async def _send(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: Request,
        response: Response,
    ) -> None:
        headers = dict(response.headers)
        body = response.body
        head_only = request.method == "HEAD" or response.status in (204, 304)
        if isinstance(body, bytes):
            if response.status not in (204, 304):
                headers["Content-Length"] = str(len(body))
            # One write for head, body and end: each write is a send(2), and through sshd
            # often an SSH packet of its own (docker ps waited for three).
            parts = [conn.send(h11.Response(status_code=response.status, headers=self._headers(headers), reason=_reason(response.status)))]
            if body and not head_only:
                parts.append(conn.send(h11.Data(data=body)))
            parts.append(conn.send(h11.EndOfMessage()))
            writer.writelines(part for part in parts if part)
            await writer.drain()
            return
        writer.write(conn.send(h11.Response(status_code=response.status, headers=self._headers(headers), reason=_reason(response.status))))
        await writer.drain()
        await self._stream(conn, reader, writer, body)

    async def _stream(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        body: AsyncIterator[bytes],
    ) -> None:
        """Send the chunks as they come; give up (closing the connection) when the client leaves."""
        watcher = asyncio.ensure_future(reader.read(READ_SIZE))
        iterator = body.__aiter__()
        try:
            while True:
                nxt = asyncio.ensure_future(iterator.__anext__())
                done, _ = await asyncio.wait({nxt, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    with contextlib.suppress(BaseException):
                        await nxt
                    raise _ClientGone()
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    break
                if chunk:
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            if not watcher.done():
                watcher.cancel()
                with contextlib.suppress(BaseException):
                    await watcher
            elif not watcher.cancelled() and watcher.exception() is None and watcher.result():
                conn.receive_data(watcher.result())  # a pipelined request: keep it for h11
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # noqa: BLE001
                    log.exception("closing a response stream failed")

    async def _hijack(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: Request,
        hijack: Hijack,
    ) -> None:
        upgrade = request.headers.get("upgrade", "").lower() == "tcp"
        if upgrade and conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
            headers = {"Content-Type": hijack.content_type, "Connection": "Upgrade", "Upgrade": "tcp"}
            writer.write(conn.send(h11.InformationalResponse(status_code=101, headers=self._headers(headers), reason=b"UPGRADED")))
            trailing, _closed = conn.trailing_data
        else:
            # No upgrade asked: Docker answers 200 and then streams raw on the same connection.
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {hijack.content_type}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in self.common_headers.items())
            writer.write((head + "\r\n").encode())
            trailing, _closed = conn.trailing_data
        await writer.drain()
        if trailing:
            fed = asyncio.StreamReader(limit=READ_SIZE)
            fed.feed_data(trailing)
            pump = asyncio.ensure_future(_pump(reader, fed))
            try:
                await hijack.callback(fed, writer)
            finally:
                pump.cancel()
        else:
            await hijack.callback(reader, writer)

    async def _protocol_error(self, conn: h11.Connection, writer: asyncio.StreamWriter, exc: h11.RemoteProtocolError) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            resp = error_response(exc.error_status_hint, f"bad request: {exc}")
            assert isinstance(resp.body, bytes)
            headers = {**resp.headers, "Content-Length": str(len(resp.body)), "Connection": "close"}
            writer.write(conn.send(h11.Response(status_code=resp.status, headers=self._headers(headers), reason=_reason(resp.status))))
            writer.write(conn.send(h11.Data(data=resp.body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        except (h11.LocalProtocolError, ConnectionError):
            pass


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamReader) -> None:
    while True:
        data = await src.read(READ_SIZE)
        if not data:
            dst.feed_eof()
            return
        dst.feed_data(data)


_REASONS: dict[int, bytes] = {}


def _reason(status: int) -> bytes:
    phrase = _REASONS.get(status)
    if phrase is None:
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        _REASONS[status] = phrase
    return phrase


def _to_request(head: h11.Request, body: bytes) -> Request:
    target = head.target.decode("latin-1")
    if target.startswith("/") and "#" not in target:  # origin-form, what clients send: no urlsplit
        raw_path, _, raw_query = target.partition("?")
    else:
        parts = urlsplit(target)
        raw_path, raw_query = parts.path, parts.query
    version, path = split_version(raw_path)
    headers: dict[str, str] = {}
    for name, value in head.headers:  # h11 gives the names lowercased
        headers[name.decode("latin-1")] = value.decode("latin-1")
    query = parse_qs(raw_query, keep_blank_values=True) if raw_query else {}
    return Request(head.method.decode("ascii"), path, query, headers, body, version)
