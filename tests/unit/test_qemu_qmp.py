"""The QMP client against a scripted fake QEMU on a unix socket."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolbox.drivers.base import VMState
from toolbox.drivers.qemu.driver import state_from_qmp
from toolbox.drivers.qemu.qmp import QMPClient, QMPError, qmp_execute

# A real session with QEMU 7.2 (Debian 12), recorded in wire order: the greeting, then
# each command sent and every message received up to its reply (events included).
SESSION = [
    json.loads(line)
    for line in (Path(__file__).parents[1] / "fixtures" / "qmp" / "qemu-7.2-session.jsonl").read_text().splitlines()
]
GREETING = SESSION[0]["greeting"]


class FakeQEMU:
    """Answers each command from `replies` (a list of messages to send back, in order)."""

    def __init__(self, path: Path, replies: dict[str, list[dict[str, Any]]], *, greet: bool = True) -> None:
        self.path = path
        self.replies = replies
        self.greet = greet
        self.received: list[dict[str, Any]] = []
        self.queued: dict[str, list[list[dict[str, Any]]]] = {}
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            if not self.greet:
                conn.recv(1)  # say nothing until the client gives up
                return
            conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
            for line in conn.makefile("rb"):
                request = json.loads(line)
                self.received.append(request)
                queued = self.queued.get(request["execute"])
                answer = queued.pop(0) if queued else self.replies.get(request["execute"], [{"return": {}}])
                for reply in answer:
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def sock_path() -> Iterator[Path]:
    # tmp_path can exceed the unix socket path limit; /tmp is short.
    with tempfile.TemporaryDirectory(prefix="qmp-") as tmp:
        yield Path(tmp) / "qmp.sock"


def test_replays_a_recorded_qemu_session(sock_path: Path) -> None:
    """Each recorded command, sent by the client, gets the reply QEMU really gave."""
    exchanges = SESSION[1:]
    replies: dict[str, list[list[dict[str, Any]]]] = {}
    for exchange in exchanges:
        replies.setdefault(exchange["send"]["execute"], []).append(exchange["recv"])
    fake = FakeQEMU(sock_path, {name: [] for name in replies})
    fake.queued = replies  # per command, the recorded answers in order
    with QMPClient(sock_path) as qmp:
        for exchange in exchanges[1:]:  # the client negotiated capabilities itself
            command = exchange["send"]["execute"]
            final = exchange["recv"][-1]
            if "error" in final:
                with pytest.raises(QMPError) as info:
                    qmp.execute(command)
                assert info.value.error_class == final["error"]["class"]
            else:
                assert qmp.execute(command) == final["return"]
    assert [r["execute"] for r in fake.received] == [e["send"]["execute"] for e in exchanges]
    statuses = [e["recv"][-1]["return"]["status"] for e in exchanges if e["send"]["execute"] == "query-status"]
    assert [state_from_qmp(s).state for s in statuses] == [VMState.RUNNING, VMState.SUSPENDED]


def test_execute_negotiates_and_skips_events(sock_path: Path) -> None:
    replies: dict[str, list[dict[str, Any]]] = {
        "query-status": [
            {"event": "RTC_CHANGE", "data": {"offset": 0}},
            {"return": {"status": "running", "running": True}},
        ]
    }
    fake = FakeQEMU(sock_path, replies)
    with QMPClient(sock_path) as qmp:
        assert qmp.execute("query-status") == {"status": "running", "running": True}
        qmp.execute("migrate", {"uri": "exec:cat > /x"})
    fake.close()
    assert fake.received == [
        {"execute": "qmp_capabilities"},
        {"execute": "query-status"},
        {"execute": "migrate", "arguments": {"uri": "exec:cat > /x"}},
    ]


def test_error_reply_raises_with_class(sock_path: Path) -> None:
    replies = {"cont": [{"error": {"class": "GenericError", "desc": "Migration is disabled"}}]}
    FakeQEMU(sock_path, replies)
    with pytest.raises(QMPError, match="Migration is disabled") as info:
        qmp_execute(sock_path, "cont")
    assert info.value.error_class == "GenericError"


def test_silent_qemu_times_out(sock_path: Path) -> None:
    FakeQEMU(sock_path, {}, greet=False)
    with pytest.raises(QMPError, match="did not answer within 0.3 s"):
        qmp_execute(sock_path, "query-status", timeout=0.3)


def test_missing_socket_is_a_qmp_error(sock_path: Path) -> None:
    with pytest.raises(QMPError, match="cannot connect"):
        qmp_execute(sock_path, "query-status")
