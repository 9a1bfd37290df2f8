"""The guest agent in a thread of the test process, for the fuzzer: the real image store
(holding one image pulled from the loopback registry) and the real container engine over
tests/unit/agent/fake_crun.py (crun cannot run on this host). A small HTTP client on its
unix socket answers what came back, and every ERROR the agent logged is kept: a traceback
in the log is a bug even when the client got a 4xx.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "agent"))

from agent_harness import AgentThread  # noqa: E402  (puts guest-agent on sys.path)
from toolbox_agent.app import build_agent, start  # noqa: E402


class LoggedErrors(logging.Handler):
    """ERROR records from the agent's loggers (its threads log through the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("toolbox_agent"):
            self.records.append(self.format(record))


class RealStoreAgent(AgentThread):
    """AgentThread with the agent's own image store instead of the harness's fake one."""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def boot() -> None:
            self.agent = build_agent(self.settings)
            self.server = await start(self.agent)
            self._ready.set()

        self.loop.run_until_complete(boot())
        self.loop.run_forever()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    timed_out: bool = False
    raw_head: str = field(default="", repr=False)


def request(sock: Path, method: str, target: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 5.0) -> Answer:
    """One request on a fresh connection; a timeout while waiting is reported, not raised."""
    conn = _UnixConnection(str(sock), timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = b"" if method == "HEAD" else _read_some(resp)
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    except (TimeoutError, socket.timeout):
        return Answer(0, {}, b"", timed_out=True)
    finally:
        conn.close()


def _read_some(resp: http.client.HTTPResponse, limit: int = 1 << 20) -> bytes:
    """The body, or its first MiB (a tar of every image need not be read whole)."""
    try:
        return resp.read(limit)
    except http.client.IncompleteRead as exc:
        return exc.partial


def raw_exchange(sock: Path, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send bytes as they are, half-close, read until the agent closes: (reply, timed_out)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent may close before reading everything: what it said is still there
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        except (TimeoutError, socket.timeout):
            return b"".join(chunks), True
    return b"".join(chunks), False
