"""An HTTP/1.1 server on asyncio unix sockets, with h11 doing the protocol.

One asyncio Protocol per connection, keep-alive, request bodies read whole, response
bodies either bytes (Content-Length) or an async iterator (chunked; headers go out at
once, each chunk is flushed). Docker's connection hijack: a handler returns `Hijack`, the
server answers `101 UPGRADED` (or `200 OK` to a client that did not ask to upgrade) and
hands the raw connection to the callback as asyncio streams. A streamed response stops
when the client goes away (or half-closes).

Why a Protocol and not asyncio's StreamReader/StreamWriter per connection: under TCG every
Python instruction counts, and `docker ps` is one connection of two small requests. Bytes
are fed to h11 as they arrive and a request's coroutine runs at once (a task carries it
only if it waits); no reader, writer, read futures or extra event-loop turns per request.
The streams are made only for a hijack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import traceback
from collections.abc import AsyncIterator, Coroutine, Generator
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11

from toolbox_agent.http.routing import Router, split_version
from toolbox_agent.http.types import ApiError, Hijack, Request, Response, error_response
from toolbox_agent.lean import trim_heap

log = logging.getLogger("toolbox_agent.http")

MAX_BODY = 16 * 1024 * 1024 * 1024
READ_SIZE = 256 * 1024
TRIM_AFTER_S = 2.0  # quiet time after a connection ends before freed heap goes back
BUSY_BUFFER = 1024 * 1024  # read ahead while a request is answered, at most
HEADER_CACHE = 256  # distinct response header sets kept validated (ping, lists ...)


class _ClientGone(Exception):
    pass


class Server:
    def __init__(self, router: Router, common_headers: dict[str, str] | None = None) -> None:
        self.router = router
        self.common_headers = common_headers or {}
        self._common = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.common_headers.items()]
        # h11 validates every header of every response it is given as a list (two regex
        # matches each); a Headers object it made before is taken as it is. Most responses
        # repeat a header set exactly (/_ping's always, a list's while it is unchanged).
        self._header_cache: dict[tuple[tuple[str, str], ...], Any] = {}
        self._server: asyncio.AbstractServer | None = None
        self._trim: asyncio.TimerHandle | None = None
        self._last_end = 0.0

    async def start_unix(self, path: str, mode: int = 0o660) -> asyncio.AbstractServer:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)
        # sshd connects each forwarded channel without blocking: with asyncio's default backlog
        # (100) a burst of clients fails with EAGAIN instead of waiting its turn.
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), path, backlog=socket.SOMAXCONN)
        os.chmod(path, mode)
        return self._server

    def connection_ended(self) -> None:
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

    async def dispatch(self, request: Request) -> Response | Hijack:
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

    def headers(self, extra: dict[str, str]) -> Any:
        """The common headers and `extra`, validated by h11 once per distinct set."""
        key = tuple(extra.items())
        cached = self._header_cache.get(key)
        if cached is None:
            merged = dict(self._common)
            merged.update((k.encode("latin-1"), v.encode("latin-1")) for k, v in key)
            cached = h11.Response(status_code=200, headers=list(merged.items())).headers
            if len(self._header_cache) >= HEADER_CACHE:
                self._header_cache.clear()
            self._header_cache[key] = cached
        return cached


class _Connection(asyncio.Protocol):
    """One client connection: h11 fed from data_received, a request answered at once or,
    when it has to wait, by a task; one request at a time, pipelined ones after it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1024 * 1024)
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None  # the request being answered
        self.head: h11.Request | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.eof = False  # the client half-closed (or closed)
        self.lost = False
        self.gone: asyncio.Future[None] | None = None  # set when the client leaves mid-stream
        self.paused = False
        self.drained: asyncio.Future[None] | None = None
        self.buffered = 0  # bytes received while a request was being answered
        self.reading_paused = False

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if self.task is None:
            self._next()
            return
        # A request is being answered: what comes meanwhile waits in h11's buffer. Stop
        # reading past BUSY_BUFFER (as a StreamReader nobody reads would) until it is done.
        self.buffered += len(data)
        if self.buffered > BUSY_BUFFER and not self.reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True

    def eof_received(self) -> bool:
        self.eof = True
        self.conn.receive_data(b"")  # h11 still hands out what came before it
        self._client_left()
        if self.task is None:
            self._next()
        return True  # a half-close: the response (or a hijacked stream) may still go out

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self._client_left()
        if self.drained is not None and not self.drained.done():
            self.drained.set_exception(ConnectionResetError("client went away"))
        self.server.connection_ended()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # --- requests ----------------------------------------------------------------------

    def _client_left(self) -> None:
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)

    def _next(self) -> None:
        """Answer every whole request h11 has, until one has to wait or h11 needs more.

        A request's coroutine runs at once, here: /_ping and a list never wait for
        anything, and a task per request (an event-loop turn and its bookkeeping) is a
        measurable part of `docker ps` under TCG. One that waits goes on in a task."""
        while self.task is None:
            request = self._read()
            if request is None:
                return
            answer = self._answer(request)
            try:
                waiting_on = answer.send(None)
            except StopIteration:
                continue  # answered: a pipelined request may be next
            self.task = asyncio.get_running_loop().create_task(self._finish(answer, waiting_on))

    async def _finish(self, answer: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        try:
            await _Resumed(answer, waiting_on)
        finally:
            self.task = None
            self._resume_reading()
        self._next()

    def _resume_reading(self) -> None:
        self.buffered = 0
        if self.reading_paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self.reading_paused = False

    def _read(self) -> Request | None:
        """The next whole request, or None (h11 needs more, or the connection is done)."""
        try:
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    return None
                if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    self._close()
                    return None
                if isinstance(event, h11.Request):
                    self.head, self.chunks, self.size = event, [], 0
                elif isinstance(event, h11.Data):
                    self.size += len(event.data)
                    if self.size > MAX_BODY:
                        raise h11.RemoteProtocolError("request body too large")
                    self.chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    assert self.head is not None
                    request = _to_request(self.head, b"".join(self.chunks))
                    self.head, self.chunks = None, []
                    return request
        except h11.RemoteProtocolError as exc:
            self._protocol_error(exc)
            return None

    async def _answer(self, request: Request) -> None:
        try:
            result = await self.server.dispatch(request)
            if isinstance(result, Hijack):
                await self._hijack(request, result)
                return
            await self._send(request, result)
            if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                self._close()
                return
            self.conn.start_next_cycle()
        except (ConnectionError, _ClientGone, h11.LocalProtocolError):
            self._close()
        except Exception:  # noqa: BLE001 - a bug must not kill the server
            log.exception("connection handler failed")
            self._close()

    def _write(self, data: bytes) -> None:
        if self.lost:
            raise ConnectionResetError("client went away")
        assert self.transport is not None
        self.transport.write(data)

    async def _drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("client went away")
        if self.paused:
            self.drained = asyncio.get_running_loop().create_future()
            await self.drained

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def _send(self, request: Request, response: Response) -> None:
        headers = dict(response.headers)
        body = response.body
        conn = self.conn
        if isinstance(body, bytes):
            if response.status not in (204, 304):
                headers["Content-Length"] = str(len(body))
            # One write for head, body and end: each write is a send(2), and through sshd
            # often an SSH packet of its own (docker ps waited for three).
            head = h11.Response(status_code=response.status, headers=self.server.headers(headers), reason=_reason(response.status))
            parts = [conn.send(head)]
            if body and request.method != "HEAD" and response.status not in (204, 304):
                parts.append(conn.send(h11.Data(data=body)))
            parts.append(conn.send(h11.EndOfMessage()))
            self._write(b"".join(part for part in parts if part))
            await self._drain()
            return
        self._write(conn.send(h11.Response(status_code=response.status, headers=self.server.headers(headers),
                                           reason=_reason(response.status))) or b"")
        await self._drain()
        await self._stream(body)

    async def _stream(self, body: AsyncIterator[bytes]) -> None:
        """Send the chunks as they come; give up (closing the connection) when the client leaves."""
        loop = asyncio.get_running_loop()
        self.gone = loop.create_future()
        if self.eof:
            self.gone.set_result(None)
        iterator = body.__aiter__()
        try:
            while True:
                nxt = asyncio.ensure_future(iterator.__anext__())
                done, _ = await asyncio.wait({nxt, self.gone}, return_when=asyncio.FIRST_COMPLETED)
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
                    self._write(self.conn.send(h11.Data(data=chunk)) or b"")
                    await self._drain()
            self._write(self.conn.send(h11.EndOfMessage()) or b"")
            await self._drain()
        finally:
            self.gone = None
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # noqa: BLE001
                    log.exception("closing a response stream failed")

    async def _hijack(self, request: Request, hijack: Hijack) -> None:
        conn = self.conn
        upgrade = request.headers.get("upgrade", "").lower() == "tcp"
        if upgrade and conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
            headers = {"Content-Type": hijack.content_type, "Connection": "Upgrade", "Upgrade": "tcp"}
            self._write(conn.send(h11.InformationalResponse(status_code=101, headers=self.server.headers(headers), reason=b"UPGRADED")) or b"")
        else:
            # No upgrade asked: Docker answers 200 and then streams raw on the same connection.
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {hijack.content_type}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in self.server.common_headers.items())
            self._write((head + "\r\n").encode())
        await self._drain()  # nothing paused when the streams' protocol takes over
        reader, writer = self._streams()
        try:
            await hijack.callback(reader, writer)
        finally:
            self._close()

    def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The raw connection as asyncio streams: the transport's protocol is swapped for a
        StreamReaderProtocol, fed first with what the client sent after the request."""
        assert self.transport is not None
        self._resume_reading()  # the streams' protocol pauses and resumes on its own from here
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        trailing, closed = self.conn.trailing_data
        if trailing:
            reader.feed_data(trailing)
        if closed or self.eof:
            reader.feed_eof()  # the client's half-close came before the swap
        return reader, asyncio.StreamWriter(self.transport, protocol, reader, loop)

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self._close()
            return
        try:
            resp = error_response(exc.error_status_hint, f"bad request: {exc}")
            assert isinstance(resp.body, bytes)
            headers = {**resp.headers, "Content-Length": str(len(resp.body)), "Connection": "close"}
            parts = [self.conn.send(h11.Response(status_code=resp.status, headers=self.server.headers(headers), reason=_reason(resp.status))),
                     self.conn.send(h11.Data(data=resp.body)), self.conn.send(h11.EndOfMessage())]
            self._write(b"".join(part for part in parts if part))
        except (h11.LocalProtocolError, ConnectionError):
            pass
        self._close()


class _Resumed:
    """Awaiting it goes on with a coroutine that was started by hand and is waiting on
    `waiting_on` (what its first step yielded: a future, or None for a bare yield), so
    a task can carry the rest of it. What the task sends or throws in goes through."""

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self.coro, self.waiting_on = coro, waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting_on = self.coro, self.waiting_on
        while True:
            try:
                sent = yield waiting_on
            except BaseException as exc:  # noqa: BLE001 - a cancellation goes in, as a task's would
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration:
                    return


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
