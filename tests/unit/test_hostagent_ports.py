"""The host agent's published ports, reconnect and clock, against a fake guest (the guest
agent's real routes in a thread, channels as plain sockets; see tests/fake_guest.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_guest import GUEST_IP, FakeGuest, FakeLink

from toolbox.hostagent import portwatch
from toolbox.hostagent.clock import ClockKeeper
from toolbox.hostagent.guest_http import GuestHTTP
from toolbox.hostagent.portwatch import PortTable, PortWatcher
from toolbox.hostagent.report import Report, problems


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1, ::1 and the fake guest's address."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for family, addr in ((socket.AF_INET6, "::1"), (socket.AF_INET, GUEST_IP)):
                with socket.socket(family, kind) as s:
                    s.bind((addr, port))
            return port
        except OSError:
            continue


def wait_for(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


def connects(port: int, addr: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(2)
        return s.connect_ex((addr, port)) == 0


class Agent:
    """The host agent's port and clock parts wired as __main__ wires them."""

    def __init__(self, guest: FakeGuest, state: Path) -> None:
        self.link = FakeLink(guest.socket)
        self.stopping = threading.Event()
        self.report = Report(state)
        self.http = GuestHTTP(self.link, "/run/toolbox/docker.sock")
        self.table = PortTable(self.link, self.http, self.report)  # type: ignore[arg-type]
        self.connects = 0
        self.watcher = PortWatcher(self.link, self.http, self.table, self.report, self.stopping,  # type: ignore[arg-type]
                                   on_connect=self._connected)
        threading.Thread(target=self.watcher.run, daemon=True).start()

    def _connected(self) -> None:
        self.connects += 1

    def close(self) -> None:
        self.stopping.set()
        self.link.drop()
        self.table.close()


@pytest.fixture
def guest() -> Iterator[FakeGuest]:
    g = FakeGuest().start()
    yield g
    g.close()


@pytest.fixture
def agent(guest: FakeGuest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    monkeypatch.setattr(portwatch, "RETRY_EVERY", 0.2)
    a = Agent(guest, tmp_path / "hostagent.json")
    yield a
    a.close()


def _tcp_echo(port: int) -> socket.socket:
    """An echo server at the fake guest's 127.0.0.1:port."""
    srv = socket.socket()
    srv.bind((GUEST_IP, port))
    srv.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: (c.sendall(b"echo:" + c.recv(1024)), c.close()), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def _ask(port: int, data: bytes, addr: str = "127.0.0.1") -> bytes:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family) as c:
        c.settimeout(5)
        c.connect((addr, port))
        c.sendall(data)
        out = b""
        while chunk := c.recv(1024):
            out += chunk
        return out


def test_tcp_ports_follow_snapshot_and_events(guest: FakeGuest, agent: Agent) -> None:
    first, second = free_port(), free_port()
    srv1, srv2 = _tcp_echo(first), _tcp_echo(second)
    guest.publish("tcp", first)  # before the agent subscribed: the snapshot brings it
    wait_for(lambda: connects(first), what="the snapshot's port")
    assert _ask(first, b"a") == b"echo:a" and _ask(first, b"six", "::1") == b"echo:six"
    guest.publish("tcp", second)
    wait_for(lambda: connects(second), what="the published port")
    assert _ask(second, b"b") == b"echo:b"
    guest.publish("tcp", first, "unpublish")
    wait_for(lambda: not connects(first), what="the unpublished port to close")
    with socket.socket() as s:  # free again on the host (TIME_WAIT leftovers aside, as for any server)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", first))
        s.listen(1)
    state = json.loads(agent.report.path.read_text())  # type: ignore[union-attr]
    assert [(p["proto"], p["port"], p["listening"]) for p in state["ports"]] == [("tcp", second, ["127.0.0.1", "::1"])]
    srv1.close()
    srv2.close()


def test_udp_datagrams_go_to_the_guest_and_replies_to_each_client(guest: FakeGuest, agent: Agent) -> None:
    port = free_port(socket.SOCK_DGRAM)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((GUEST_IP, port))

    def echo() -> None:
        while True:
            try:
                data, addr = server.recvfrom(65535)
            except OSError:
                return
            server.sendto(b"re:" + data, addr)

    threading.Thread(target=echo, daemon=True).start()
    guest.publish("udp", port)
    wait_for(lambda: agent.table.forwards.get(("udp", port)), what="the udp forward")
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)]
    for i, c in enumerate(clients):
        c.settimeout(5)
        c.sendto(f"hello {i}".encode(), ("127.0.0.1" if i == 0 else "::1", port))
    assert [c.recvfrom(100)[0] for c in clients] == [b"re:hello 0", b"re:hello 1"]
    big = bytes(range(256)) * 200  # 51,200 bytes: one datagram, framed whole
    clients[0].sendto(big, ("127.0.0.1", port))
    assert clients[0].recvfrom(65535)[0] == b"re:" + big
    guest.publish("udp", port, "unpublish")
    wait_for(lambda: ("udp", port) not in agent.table.forwards, what="the udp unpublish")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
    server.close()
    for c in clients:
        c.close()


def test_a_taken_host_port_is_reported_then_forwarded_once_free(guest: FakeGuest, agent: Agent) -> None:
    port = free_port()
    srv = _tcp_echo(port)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen(1)
    guest.publish("tcp", port)
    state = agent.report.path  # type: ignore[union-attr]
    found = wait_for(lambda: problems(state), what="the problem in the report")
    assert found == [f"port {port}/tcp is not forwarded to the host: 127.0.0.1:{port} already in use on the host"]
    assert _ask(port, b"v6", "::1") == b"echo:v6"  # the other loopback still forwards
    squatter.close()
    wait_for(lambda: not problems(state), what="the retry to bind the freed port")
    assert _ask(port, b"v4") == b"echo:v4"
    srv.close()


def test_reconnects_resubscribes_and_reconciles(guest: FakeGuest, agent: Agent) -> None:
    kept, gone = free_port(), free_port()
    srv = _tcp_echo(kept)
    guest.publish("tcp", kept)
    guest.publish("tcp", gone)
    wait_for(lambda: connects(kept) and connects(gone), what="both ports")
    assert agent.connects == 1
    agent.link.refuse = True
    agent.link.drop()
    wait_for(lambda: not json.loads(agent.report.path.read_text())["ssh"]["connected"], what="the lost link reported")  # type: ignore[union-attr]
    guest.ports = [p for p in guest.ports if p["host_port"] != gone]  # unpublished while the link was down
    assert connects(kept)  # the listener stays; connections wait for the link
    agent.link.refuse = False
    wait_for(lambda: agent.connects == 2, what="the reconnect")
    wait_for(lambda: not connects(gone), what="the snapshot to drop the port unpublished meanwhile")
    assert _ask(kept, b"again") == b"echo:again"
    guest.publish("tcp", gone)  # the new subscription sees events
    wait_for(lambda: connects(gone), what="an event after the reconnect")
    srv.close()


def test_clock_route_reads_and_steps_only_past_100_ms(guest: FakeGuest) -> None:
    http = GuestHTTP(FakeLink(guest.socket), "/run/toolbox/docker.sock")
    before = time.time_ns()
    status, body = http.call("GET", "/toolbox/v1/clock")
    assert status == 200 and before <= body["unix_ns"] <= time.time_ns()
    status, body = http.call("POST", "/toolbox/v1/clock", {"adjust_ns": 3600 * 10**9})
    assert status == 200 and body == {"drift_ms": -3600e3, "stepped": True}
    assert len(guest.clock_set) == 1 and abs(guest.clock_set[0] - time.time_ns() - 3600 * 10**9) < 10**9
    status, body = http.call("POST", "/toolbox/v1/clock", {"adjust_ns": -50_000_000})
    assert status == 200 and body == {"drift_ms": 50.0, "stepped": False}
    assert len(guest.clock_set) == 1
    for bad in ({"adjust_ns": "now"}, {}, {"adjust_ns": True}, {"adjust_ns": 1.5}, [1]):
        status, body = http.call("POST", "/toolbox/v1/clock", bad)
        assert status == 400 and ("adjust_ns" in body["message"] or "object" in body["message"]), body
    status, body = http.call("POST", "/toolbox/v1/udp/99999")
    assert status == 400 and body == {"message": "invalid port: '99999'"}


def test_clock_steps_only_a_drift_the_round_trip_cannot_explain() -> None:
    """The guest's time belongs to the middle of the round trip, give or take half of it."""
    from toolbox.hostagent.clock import ClockReading, read_and_step

    def guest(guest_ns: int, trip_ns: int) -> tuple[list[tuple[str, Any]], Any, Any]:
        calls: list[tuple[str, Any]] = []
        host = iter([100 * 10**9, 100 * 10**9 + trip_ns])  # the host's clock before and after the GET

        def call(method: str, path: str, body: Any) -> Any:
            calls.append((method, body))
            return {"unix_ns": guest_ns} if method == "GET" else {"stepped": True}
        return calls, call, lambda: next(host)

    # a right clock read over a 4 s round trip: 1.5 s "off" is within the trip's ±2 s, no step
    calls, call, now = guest(100 * 10**9 + 3_500_000_000, 4 * 10**9)
    assert read_and_step(call, now_ns=now) == ClockReading(1500.0, 2000.0, False)
    assert calls == [("GET", None)]
    # an hour behind, even over that slow trip: stepped by the drift measured at the middle
    calls, call, now = guest(100 * 10**9 + 2 * 10**9 - 3600 * 10**9, 4 * 10**9)
    assert read_and_step(call, now_ns=now) == ClockReading(-3600e3, 2000.0, True)
    assert calls == [("GET", None), ("POST", {"adjust_ns": 3600 * 10**9})]
    # 150 ms off over a 20 ms trip: surely over 100 ms, stepped; step=False only measures
    calls, call, now = guest(100 * 10**9 + 10_000_000 + 150_000_000, 20_000_000)
    assert read_and_step(call, now_ns=now) == ClockReading(150.0, 10.0, True)
    calls, call, now = guest(100 * 10**9 + 10_000_000 + 150_000_000, 20_000_000)
    assert read_and_step(call, step=False, now_ns=now) == ClockReading(150.0, 10.0, False)
    assert calls == [("GET", None)]


def test_clock_keeper_syncs_at_start_on_request_and_after_a_host_sleep(guest: FakeGuest, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from toolbox.hostagent import clock as clock_mod

    monkeypatch.setattr(clock_mod, "CHECK_EVERY", 0.05)
    jump = [0.0]
    http = GuestHTTP(FakeLink(guest.socket), "/run/toolbox/docker.sock")
    syncs: list[float] = []
    stopping = threading.Event()
    keeper = ClockKeeper(http, Report(tmp_path / "s.json"), stopping, interval=3600,
                         wall=lambda: time.time() + jump[0])
    real_sync = keeper.sync
    keeper.sync = lambda: (syncs.append(time.monotonic()), real_sync())[1]  # type: ignore[method-assign]
    threading.Thread(target=keeper.run, daemon=True).start()
    wait_for(lambda: len(syncs) == 1, what="the sync at start")
    time.sleep(0.3)
    assert len(syncs) == 1  # the interval is an hour: nothing more by itself
    jump[0] = 600.0  # the wall clock moved 10 minutes, the monotonic one did not: a sleep
    wait_for(lambda: len(syncs) == 2, what="the sync after the sleep")
    keeper.request("reconnected")
    wait_for(lambda: len(syncs) == 3, what="the requested sync")
    stopping.set()
    assert json.loads((tmp_path / "s.json").read_text())["clock"]["stepped"] is False


def test_clock_keeper_says_once_that_an_older_agent_has_no_clock_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    from toolbox.hostagent import clock as clock_mod

    monkeypatch.setattr(clock_mod, "CHECK_EVERY", 0.05)
    old = FakeGuest(with_clock=False).start()
    try:
        http = GuestHTTP(FakeLink(old.socket), "/run/toolbox/docker.sock")
        stopping = threading.Event()
        keeper = ClockKeeper(http, Report(tmp_path / "s.json"), stopping, interval=0.05)
        with caplog.at_level("WARNING", logger=clock_mod.log.name):
            threading.Thread(target=keeper.run, daemon=True).start()
            wait_for(lambda: keeper.unsupported, what="the 404 noticed")
            keeper.request("reconnected")
            time.sleep(0.4)  # eight intervals and a request: no more tries, no more warnings
            stopping.set()
        warnings = [r.getMessage() for r in caplog.records if "clock route" in r.getMessage()]
        assert len(warnings) == 1 and "toolbox upgrade" in warnings[0]
        assert json.loads((tmp_path / "s.json").read_text())["clock"] == {"unsupported": True}
    finally:
        old.close()
