"""A time-bounded fuzzer (hypothesis) against the guest agent, in-process on the host:
every route the agent serves gets odd path parameters, query arguments and JSON bodies;
the HTTP parser gets malformed requests as raw bytes. Bad input must never crash it or
get a 5xx: every error is a JSON {"message": ...} with Content-Type application/json, the
agent logs no traceback, and it still answers /_ping afterwards.

    TOOLBOX_FUZZ_SECONDS=300 .venv/bin/pytest tests/reliability/test_fuzz_api.py   # longer (default 40 + 20 s)

Not fuzzed: the routes that reach a registry (/images/create, push, search, /auth): a random
name there means a connection to a host other than loopback. Command lines in container
bodies are `true` or not strings at all, and bind sources are never strings, because the
fake runtime runs a started container's process on the host itself.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from agent_under_fuzz import Answer, LoggedErrors, RealStoreAgent, raw_exchange, request
from registry import RegistryServer, registry  # noqa: F401  (the session's registry fixture)
from tally import Tally

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BUDGET = float(os.environ.get("TOOLBOX_FUZZ_SECONDS", "60"))
OUTBOUND = {("POST", "/images/create"), ("POST", "/images/{name:path}/push"), ("GET", "/images/search"), ("POST", "/auth")}
# Answers that may legitimately outlast a short read: they stream or wait for a container.
STREAMING = ("/events", "/logs", "/stats", "/attach", "/wait", "/exec/{id}/start", "/images/get", "/get")
DEEP = ("/containers/create", "/containers/{id}/exec", "/containers/{id}/archive", "/containers/{id}/json",
        "/containers/{id}/kill", "/containers/{id}/resize", "/containers/{id}/top", "/containers/{id}/stop",
        "/containers/json", "/images/json", "/containers/{id}/rename", "/images/{name:path}/tag", "/images/load")
ARGS = ["all", "condition", "filters", "follow", "force", "h", "w", "limit", "logs", "name", "noprune", "one-shot",
        "path", "ps_args", "signal", "stderr", "stdin", "stdout", "stream", "t", "tag", "repo", "tail", "timestamps",
        "since", "until", "size", "v", "link", "detachKeys", "platform", "quiet", "names"]
BODY_KEYS = ["Image", "Cmd", "Entrypoint", "Env", "Tty", "OpenStdin", "AttachStdin", "User", "WorkingDir", "Labels",
             "ExposedPorts", "Hostname", "StopSignal", "StopTimeout", "HostConfig", "NetworkingConfig", "Healthcheck",
             "AttachStdout", "Detach", "DetachKeys", "Privileged", "ConsoleSize", "Volumes"]
HOST_KEYS = ["Binds", "Mounts", "PortBindings", "AutoRemove", "RestartPolicy", "Memory", "NanoCpus", "CpuShares",
             "CapAdd", "CapDrop", "Privileged", "NetworkMode", "Init", "ExtraHosts", "Dns", "ShmSize", "Tmpfs",
             "ReadonlyRootfs", "SecurityOpt", "PidMode", "Ulimits", "LogConfig", "PublishAllPorts"]

pytestmark = pytest.mark.timeout(BUDGET * 4 + 300)


def _scalars() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=False), st.text(max_size=30))  # fmt: skip


def _json_values() -> st.SearchStrategy[Any]:
    return st.recursive(_scalars(), lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                        max_leaves=12)  # fmt: skip


def _not_a_string() -> st.SearchStrategy[Any]:
    """Garbage of every JSON type but a string (and no list of strings)."""
    return st.one_of(st.none(), st.booleans(), st.integers(), st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))  # fmt: skip


def _host_config() -> st.SearchStrategy[Any]:
    keyed = st.dictionaries(st.sampled_from([k for k in HOST_KEYS if k not in ("Binds", "Mounts")]), _json_values(), max_size=5)
    sources = st.fixed_dictionaries({}, optional={"Binds": _not_a_string(), "Mounts": _not_a_string()})
    return st.one_of(_json_values(), st.tuples(keyed, sources).map(lambda pair: {**pair[0], **pair[1]}))


def _container_body(images: list[str]) -> st.SearchStrategy[Any]:
    command = st.one_of(st.just(["true"]), st.just("true"), _not_a_string())
    fields = {k: _json_values() for k in BODY_KEYS if k not in ("Cmd", "Entrypoint", "Image", "HostConfig", "Volumes")}
    return st.fixed_dictionaries({}, optional={
        "Image": st.one_of(st.sampled_from(images), st.text(max_size=40), _not_a_string()),
        "Cmd": command, "Entrypoint": command, "HostConfig": _host_config(), "Volumes": _not_a_string(), **fields})


def _body(path: str, images: list[str]) -> st.SearchStrategy[bytes | None]:
    document = _container_body(images) if path.endswith(("/create", "/exec")) else _json_values()
    return st.one_of(st.none(), document.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=200), st.just(b"{"), st.just(b"[]"))  # fmt: skip


def _path_value(known: list[str]) -> st.SearchStrategy[str]:
    real = st.sampled_from(known)  # twice: most requests should reach past the lookup
    return st.one_of(real, real, st.text(min_size=1, max_size=40),
                     st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True))  # fmt: skip


def _fill(pattern: str, values: dict[str, str]) -> str:
    out = pattern
    for name, value in values.items():
        whole = f"{{{name}:path}}" in out
        out = out.replace(f"{{{name}:path}}" if whole else f"{{{name}}}", quote(value, safe="/:@" if whole else ""))
    return out


@st.composite
def api_requests(draw: st.DrawFn, routes: list[tuple[str, str]], known: list[str], images: list[str]) -> tuple[str, str, bytes | None, dict[str, str]]:
    deep = [r for r in routes if r[1] in DEEP]
    method, pattern = draw(st.one_of(st.sampled_from(routes), st.sampled_from(deep)))
    names = [n.split(":")[0] for n in pattern.split("{")[1:]]
    target = _fill(pattern, {n.rstrip("}"): draw(_path_value(known)) for n in names})
    query = draw(st.lists(st.tuples(st.sampled_from(ARGS) | st.text(max_size=8),
                                    st.one_of(_scalars().map(str), _json_values().map(json.dumps))), max_size=5))
    version = draw(st.sampled_from(["", "/v1.44", "/v1.24", "/v9.99", "/v1.0"]))
    body = draw(_body(pattern, images)) if method in ("POST", "PUT") else None
    headers = draw(st.sampled_from([{}, {"Content-Type": "application/json"}, {"Content-Type": "application/x-tar"},
                                    {"Content-Type": "text/plain; charset=\xff"}]))
    return method, version + target + ("?" + urlencode(query) if query else ""), body, headers


def _check_answer(what: str, answer: Answer, may_stream: bool, head: bool = False) -> None:
    if answer.timed_out:
        assert may_stream, f"{what}: no answer within 5 s"
        return
    assert answer.status < 500, f"{what}: {answer.status} {answer.body[:300]!r}"
    if answer.status >= 400:
        assert answer.headers.get("content-type", "").startswith("application/json"), f"{what}: {answer.headers}"
        if head:
            return  # no body to a HEAD
        doc = json.loads(answer.body)
        assert isinstance(doc, dict) and isinstance(doc.get("message"), str), f"{what}: {answer.body[:300]!r}"


def _run_for(budget: float, test: Callable[[], None]) -> int:
    """Run a hypothesis test in rounds of fresh examples until the budget is spent."""
    rounds, deadline = 0, time.monotonic() + budget
    while time.monotonic() < deadline:
        test()
        rounds += 1
    return rounds


@pytest.fixture(scope="module")
def fuzz_agent(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealStoreAgent, list[str], LoggedErrors]]:  # noqa: F811
    import asyncio

    from toolbox_agent.images import ImageStore

    tmp = tmp_path_factory.mktemp("fuzz")
    image = f"{registry.host}/learn/tutorial:latest"
    asyncio.run(ImageStore(tmp / "root" / "images").pull(image))
    errors = LoggedErrors()
    logging.getLogger().addHandler(errors)
    try:
        with RealStoreAgent(tmp) as agent:
            yield agent, [image], errors
    finally:
        logging.getLogger().removeHandler(errors)


def _known_names(agent: RealStoreAgent, images: list[str]) -> list[str]:
    """Ids and names of what exists now, so path parameters sometimes hit something real."""
    found = [*images, "learn/tutorial", "x"]
    listing = request(agent.settings.socket, "GET", "/containers/json?all=1")
    if listing.status == 200:
        for c in json.loads(listing.body)[:20]:
            found += [c["Id"], c["Id"][:12], *(n.lstrip("/") for n in c.get("Names", []))]
    return found


def test_fuzz_every_route(fuzz_agent: tuple[RealStoreAgent, list[str], LoggedErrors], tally: Tally) -> None:
    agent, images, errors = fuzz_agent
    sock = agent.settings.socket
    for name, cmd in (("made", ["true"]), ("sleeper", ["sleep", "600"])):  # one created, one running
        made = request(sock, "POST", f"/containers/create?name={name}", json.dumps({"Image": images[0], "Cmd": cmd}).encode(),
                       {"Content-Type": "application/json"})  # fmt: skip
        assert made.status == 201, made.body
    routes = sorted({(r.method, r.pattern) for r in agent.agent.routes} - OUTBOUND)  # type: ignore[union-attr]
    seen: dict[int, int] = {}

    def one_round() -> None:  # path parameters from what exists now, refreshed each round
        request(sock, "POST", "/containers/sleeper/start")  # the running container the last round may have stopped
        @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(api_requests(routes, _known_names(agent, images), images))
        @example(("GET", "/containers/sleeper/top?ps_args=--zz", None, {}))  # was a 500: ps refused the client's args
        @example(("GET", "/containers/sleeper/top?ps_args=-o+comm", None, {}))  # was a 500: no PID column
        @example(("POST", "/containers/create", b'{"Image": true}', {}))  # was a 500: a bool where a string belongs
        @example(("POST", "/containers/create", json.dumps({"Image": images[0], "Cmd": {}}).encode(), {}))  # was a 500
        @example(("POST", "/containers/create", json.dumps({"Image": images[0], "HostConfig": [1]}).encode(), {}))
        @example(("POST", "/containers/sleeper/exec", b'{"Cmd": [1]}', {}))
        def fuzz(drawn: tuple[str, str, bytes | None, dict[str, str]]) -> None:
            method, target, body, headers = drawn
            may_stream = any(s in target for s in STREAMING)
            answer = request(sock, method, target, body, headers, timeout=0.5 if may_stream else 5.0)
            seen[answer.status] = seen.get(answer.status, 0) + 1
            _check_answer(f"{method} {target} body={body[:200] if body else body!r}", answer,
                          may_stream, method == "HEAD")

        fuzz()

    rounds = _run_for(BUDGET * 2 / 3, one_round)
    assert request(sock, "GET", "/_ping").body == b"OK"
    print(f"\nfuzzed {sum(seen.values())} requests in {rounds} rounds, statuses {dict(sorted(seen.items()))}")
    assert not errors.records, "the agent logged errors:\n" + "\n".join(errors.records[:5])
    tally.add("fuzzed API requests (no 5xx, JSON errors, still serving)", injected=sum(seen.values()),
              survived=sum(seen.values()))  # fmt: skip


METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"G\x00T", b"", b"get"])
TARGETS = st.one_of(st.sampled_from([b"/_ping", b"/v1.44/containers/json", b"/containers/create", b"*", b"",
                                     b"/images/%zz/json", b"/v1.44/../../etc", b"http://x/_ping"]),
                    st.binary(max_size=60))  # fmt: skip
HEADER = st.one_of(
    st.sampled_from([b"Content-Length: -1", b"Content-Length: 99999999999999999999", b"Content-Length: x",
                     b"Content-Length: 5\r\nContent-Length: 6", b"Transfer-Encoding: chunked",
                     b"Transfer-Encoding: gzip, chunked", b"Host:", b"Host: a\r\nHost: b", b"Expect: 100-continue",
                     b"Connection: Upgrade\r\nUpgrade: tcp", b"Content-Type: application/json", b" folded",
                     b"X: \x00\x01", b":", b"no colon"]),
    st.binary(max_size=40))  # fmt: skip


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    line = draw(METHODS) + b" " + draw(TARGETS) + b" " + draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"", b"HTTP/1.1 x"]))
    head = b"\r\n".join([line, *draw(st.lists(HEADER, max_size=5))])
    body = draw(st.one_of(st.binary(max_size=80), st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"{}"])))
    return head + draw(st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b""])) + body


def _status_of(reply: bytes) -> tuple[int | None, dict[str, str], bytes]:
    if not reply:
        return None, {}, b""
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    if "content-length" in headers:  # a pipelined request's answer may follow
        body = body[: int(headers["content-length"])]
    return int(lines[0].split()[1]), headers, body


def test_fuzz_the_http_parser(fuzz_agent: tuple[RealStoreAgent, list[str], LoggedErrors], tally: Tally) -> None:
    agent, _, errors = fuzz_agent
    sock = agent.settings.socket
    sent = [0]

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(raw_requests())
    def one_round(data: bytes) -> None:
        reply, timed_out = raw_exchange(sock, data)
        sent[0] += 1
        assert not timed_out, f"{data!r}: the agent neither answered nor closed within 5 s"
        status, headers, body = _status_of(reply)
        if status is None or status < 400 or data.startswith(b"HEAD "):
            return  # a request it could read, or none at all (closed on EOF)
        # RFC 9112 6.1 (and Docker's Go server): a transfer coding it does not know is a 501
        unknown_coding = status == 501 and b"Transfer-Encoding" in body
        assert status < 500 or unknown_coding, f"{data!r} -> {reply[:300]!r}"
        assert headers.get("content-type", "").startswith("application/json"), f"{data!r} -> {reply[:300]!r}"
        if "content-length" in headers:  # (a chunked error body is not parsed here)
            assert isinstance(json.loads(body).get("message"), str), f"{data!r} -> {reply[:300]!r}"

    rounds = _run_for(BUDGET / 3, one_round)
    assert request(sock, "GET", "/_ping").body == b"OK"
    print(f"\nfuzzed {sent[0]} raw requests in {rounds} rounds")
    assert not errors.records, "the agent logged errors:\n" + "\n".join(errors.records[:5])
    tally.add("fuzzed raw HTTP requests (parser: no 5xx, still serving)", injected=sent[0], survived=sent[0])
