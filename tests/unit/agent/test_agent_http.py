"""The agent's HTTP core: routing, errors, streaming, hijack with half-close, and the
real docker CLI and docker SDK talking to it (no containers here)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

import agent_harness  # noqa: F401  (puts guest-agent on sys.path)
from toolbox_agent.containers.frames import docker_frame, parse_docker_frames
from toolbox_agent.http import ApiError, Hijack, Request, Response, Route, Router, Server, json_response
from toolbox_agent.http.routing import split_version


def test_routes_match_params_and_paths() -> None:
    async def h(req: Request) -> Response:
        return json_response(req.path_params)

    router = Router([Route("GET", "/images/{name:path}/json", h), Route("DELETE", "/containers/{id}", h)])
    route, params = router.match("GET", "/images/registry:5000/learn/tutorial:latest/json") or (None, {})
    assert params == {"name": "registry:5000/learn/tutorial:latest"}
    assert router.match("DELETE", "/containers/abc") is not None
    assert router.match("GET", "/containers/abc") is None
    assert router.match("HEAD", "/images/x/json") is not None  # HEAD falls back to GET
    assert split_version("/v1.44/containers/json") == ("1.44", "/containers/json")
    assert split_version("/_ping") == (None, "/_ping")


def test_docker_frames_round_trip() -> None:
    data = docker_frame(1, b"out") + docker_frame(2, b"err")
    assert data[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x03"
    assert parse_docker_frames(data) == [(1, b"out"), (2, b"err")]


def _raw(sock_path: Path, request: bytes, *, half_close: bool = False) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.sendall(request)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


@pytest.fixture
def toy_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A server with toy routes: JSON body echo, a stream, an echo hijack."""

    async def echo(req: Request) -> Response:
        return json_response({"body": req.json(), "version": req.api_version, "q": req.query})

    async def stream(req: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"{i}\n".encode()
                await asyncio.sleep(0.01)

        return Response(200, {"Content-Type": "text/plain"}, body())

    async def boom(req: Request) -> Response:
        raise ApiError(409, "conflict here")

    async def hijack(req: Request) -> Hijack:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()  # until the client's half-close
            writer.write(b"got:" + data)  # ... and still write after it
            await writer.drain()
            writer.close()

        return Hijack(run)

    async def slow(req: Request) -> Response:
        await asyncio.sleep(0.05)  # answered by a task, not at once
        return json_response({"slow": req.path})

    routes = [Route("POST", "/echo", echo), Route("GET", "/stream", stream), Route("GET", "/boom", boom), Route("POST", "/hijack", hijack),
              Route("GET", "/slow", slow)]
    sock = tmp_path / "toy.sock"
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(Server(Router(routes)).start_unix(str(sock)))
    import threading

    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield sock
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


def test_errors_are_docker_shaped(toy_server: Path) -> None:
    out = _raw(toy_server, b"GET /v1.44/boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 409")
    assert b"Content-Type: application/json\r\n" in head + b"\r\n" or b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"message": "conflict here"}
    out = _raw(toy_server, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404")


def test_malformed_json_is_400(toy_server: Path) -> None:
    out = _raw(toy_server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{bad}")
    assert out.startswith(b"HTTP/1.1 400")
    assert b"invalid JSON" in out


def test_streamed_response_is_chunked(toy_server: Path) -> None:
    out = _raw(toy_server, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"transfer-encoding: chunked" in out.lower()
    assert b"0\n" in out and b"2\n" in out


def test_hijack_sees_half_close_and_still_writes(toy_server: Path) -> None:
    req = b"POST /hijack HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(toy_server))
        s.sendall(req)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        s.sendall(b"stdin data")
        s.shutdown(socket.SHUT_WR)
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
    assert rest == b"got:stdin data"


def test_hijack_gets_what_came_with_the_request_and_the_half_close(toy_server: Path) -> None:
    """stdin and the client's half-close sent before the 101 came back reach the callback."""
    req = b"POST /hijack HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    out = _raw(toy_server, req + b"early stdin", half_close=True)
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert rest == b"got:early stdin"


def test_pipelined_requests_answered_in_order_waiting_or_not(toy_server: Path) -> None:
    """Requests sent together are answered one after the other: one whose handler waits
    (answered by a task), one answered at once, and the close the client asked for."""
    reqs = (b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" b"GET /v1.44/boom HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = _raw(toy_server, reqs)
    assert out.count(b"HTTP/1.1 ") == 3
    conflict = out.index(b"conflict here")
    assert out.index(b'{"slow": "/slow"}') < conflict < out.rindex(b'{"slow": "/slow"}')


def test_a_big_body_sent_while_a_request_waits_is_read_after_it(toy_server: Path) -> None:
    """Past a megabyte received while a request is answered the server stops reading; it
    reads on (and answers) once that request is done."""
    body = json.dumps({"big": "x" * (3 * 1024 * 1024)}).encode()
    reqs = (b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    out = _raw(toy_server, reqs)
    assert out.count(b"HTTP/1.1 200") == 2
    assert out.index(b'{"slow": "/slow"}') < out.index(b'"big": "xxx')


def test_router_remembers_plain_paths_without_changing_what_matches() -> None:
    async def h(req: Request) -> Response:
        return json_response({})

    first, second, plain = Route("GET", "/things/{id}", h), Route("GET", "/things/all", h), Route("GET", "/plain", h)
    router = Router([first, second, plain])
    for _ in range(2):  # the second time from the remembered table
        assert router.match("GET", "/things/all") == (first, {"id": "all"})  # the first route wins, as before
        assert router.match("GET", "/plain") == (plain, {})
        assert router.match("HEAD", "/plain") == (plain, {})
        assert router.match("POST", "/plain") is None
    assert router.match("GET", "/things/{id}") == (first, {"id": "{id}"})  # a pattern asked literally stays a parameter


def test_docker_cli_version_shows_server(agent) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(["docker", "version"], env=agent.env(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Client:" in out.stdout and "Server:" in out.stdout
    assert "minimum version 1.24" in out.stdout


def test_docker_sdk_ping_version_info(agent) -> None:  # type: ignore[no-untyped-def]
    client = docker.DockerClient(base_url=agent.url, version="auto")
    assert client.ping() is True
    assert client.version()["ApiVersion"] == "1.44"
    assert client.info()["OSType"] == "linux"
    raw = client.api.get(client.api.base_url + "/_ping")
    assert raw.headers["Api-Version"] == "1.44" and raw.headers["Ostype"] == "linux"
    assert raw.headers["Docker-Experimental"] == "false"


def test_time_arguments_take_unix_seconds_or_rfc3339(agent) -> None:  # type: ignore[no-untyped-def]
    """since/until as Docker takes them, for events and logs alike; anything else is a 400."""
    client = docker.DockerClient(base_url=agent.url, version="auto")
    events = client.api.base_url + "/events"
    for since, until in (("1700000000", "1700000001.5"), ("2023-11-14T22:13:20Z", "2023-11-14T22:13:21.5Z")):
        done = client.api.get(events, params={"since": since, "until": until}, timeout=10)
        assert done.status_code == 200, done.text  # an until in the past ends the stream at once
    bad = client.api.get(events, params={"since": "yesterday"}, timeout=10)
    assert bad.status_code == 400
    assert bad.json() == {"message": "invalid value for since: 'yesterday'"}
    assert bad.headers["Content-Type"] == "application/json"


def test_heap_is_trimmed_once_after_a_burst_goes_quiet(toy_server: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from toolbox_agent.http import server as server_module

    trims: list[float] = []
    monkeypatch.setattr(server_module, "TRIM_AFTER_S", 1.0)
    monkeypatch.setattr(server_module, "trim_heap", lambda: trims.append(time.monotonic()))
    for i in range(5):  # a burst: each connection's end restarts the quiet time
        if i:
            time.sleep(0.05)
        assert _raw(toy_server, b"GET /v1.44/boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        last_end = time.monotonic()  # the server's end of it came just before
    assert trims == []  # never during the burst (0.05 s gaps, well under 1 s)
    deadline = last_end + 5
    while not trims and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert len(trims) == 1, trims
    assert trims[0] - last_end >= 1.0 - 0.05  # after the quiet time, counted from the last end
