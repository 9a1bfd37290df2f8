"""Follow the guest agent's published ports and keep a loopback forward for each.

The guest agent announces ports as `toolbox.port` events (publish / unpublish) and lists
them at GET /toolbox/v1/ports. At every (re)connection the watcher subscribes to the
events first and then takes the list, so nothing published in between is missed; it
reconciles the table with the list, then applies each event as it comes. When the stream
ends (the SSH connection dropped, the guest agent restarted) it starts over, with backoff,
and the loop that reconnects SSH is this one: the reconnect is noticed within a second.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import paramiko

from toolbox.errors import GuestSocketRefused, HostKeyMismatch, SSHError
from toolbox.hostagent.forward import SSHLink
from toolbox.hostagent.guest_http import CHANNEL_ERRORS, GuestHTTP
from toolbox.hostagent.ports import LoopbackForward, TcpForward, UdpForward
from toolbox.hostagent.report import Report

log = logging.getLogger("toolbox.hostagent")
EVENTS_PATH = "/events?filters=" + quote(json.dumps({"type": ["toolbox.port"]}))
PORTS_PATH = "/toolbox/v1/ports"
RETRY_EVERY = 5.0  # seconds between tries to bind a host port that was taken
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0
AGENT_RETRY = 1.0  # seconds between tries while the guest agent is not listening yet

Key = tuple[str, int]  # (proto, host port)


class PortTable:
    """The forwards that exist, keyed by (proto, host port); changes go to the report."""

    def __init__(self, link: SSHLink, http: GuestHTTP, report: Report) -> None:
        self.link, self.http, self.report = link, http, report
        self.forwards: dict[Key, LoopbackForward] = {}
        self._lock = threading.Lock()

    def reconcile(self, published: list[dict[str, Any]]) -> None:
        wanted = {key for item in published if (key := _key(item)) is not None}
        with self._lock:
            for key in set(self.forwards) - wanted:
                self._remove(key)
            for key in wanted - set(self.forwards):
                self._add(key)
        self._report()

    def apply(self, event: dict[str, Any]) -> None:
        key = _key(event.get("Actor", {}).get("Attributes", {}))
        action = event.get("Action")
        if key is None or action not in ("publish", "unpublish"):
            return
        with self._lock:
            if action == "publish" and key not in self.forwards:
                self._add(key)
            elif action == "unpublish" and key in self.forwards:
                self._remove(key)
        self._report()

    def retry(self) -> None:
        """Bind again what was taken: the port may be free now."""
        with self._lock:
            changed = [f for f in self.forwards.values() if f.problems and f.bind_missing()]
        if changed:
            self._report()

    def close(self) -> None:
        with self._lock:
            for key in list(self.forwards):
                self._remove(key)

    def _add(self, key: Key) -> None:
        proto, port = key
        fwd = TcpForward(port, self.link) if proto == "tcp" else UdpForward(port, self.link, self.http)
        fwd.start()
        self.forwards[key] = fwd
        if fwd.socks:
            log.info("forwarding %d/%s on %s", port, proto, ", ".join(sorted(fwd.socks)))

    def _remove(self, key: Key) -> None:
        self.forwards.pop(key).close()
        log.info("stopped forwarding %d/%s (unpublished)", key[1], key[0])

    def _report(self) -> None:
        with self._lock:
            ports = [f.status() for _, f in sorted(self.forwards.items())]
        self.report.update(ports=ports)


def _key(item: dict[str, Any]) -> Key | None:
    try:
        proto, port = str(item["proto"]), int(item["host_port"])
    except (KeyError, TypeError, ValueError):
        return None
    return (proto, port) if proto in ("tcp", "udp") and 0 < port < 65536 else None


class PortWatcher:
    """The thread that keeps the link up and the table in step with the guest."""

    def __init__(self, link: SSHLink, http: GuestHTTP, table: PortTable, report: Report,
                 stopping: threading.Event, on_connect: Callable[[], None] = lambda: None) -> None:
        self.link, self.http, self.table, self.report = link, http, table, report
        self.stopping, self.on_connect = stopping, on_connect
        self._no_ports_route = False

    def run(self) -> None:
        delay, seen, lost_at = BACKOFF_FIRST, 0, None
        while not self.stopping.is_set():
            try:
                self.link.transport()
            except SSHError as exc:
                lost_at = lost_at or time.monotonic()
                # `toolbox up` reads refused_host_key: a refused key is its error, not a wait
                self.report.update(ssh={"connected": False, "error": exc.message,
                                        "refused_host_key": isinstance(exc, HostKeyMismatch), "hint": exc.hint})
                log.warning("cannot reach the guest over SSH (trying again in %.1f s): %s", delay, exc.message)
                self.stopping.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if self.link.generation != seen:
                if seen:
                    gap = f" after {time.monotonic() - lost_at:.1f} s" if lost_at else ""
                    log.info("SSH connection made again%s; forwards resume", gap)
                seen, lost_at = self.link.generation, None
                self.report.update(ssh={"connected": True, "since": time.time()})
                self.on_connect()
            started = time.monotonic()
            try:
                self._follow()
            except (paramiko.ChannelException, GuestSocketRefused):
                # Nothing listens on the guest socket: the guest agent is starting (we start
                # with the VM) or restarting. Try again soon, not after a growing backoff,
                # so ports are followed as soon as it answers.
                self.stopping.wait(AGENT_RETRY)
                delay = BACKOFF_FIRST
                continue
            except (*CHANNEL_ERRORS, ValueError) as exc:
                log.warning("following the guest's ports failed: %s", exc)
            except Exception:  # noqa: BLE001 - a bug here must not end the reconnects
                log.exception("following the guest's ports failed")
            if self.stopping.is_set():
                return
            if not self.link.connected():
                lost_at = time.monotonic()
                log.warning("SSH connection to the guest lost; reconnecting")
                self.report.update(ssh={"connected": False, "error": "SSH connection lost"})
            delay = BACKOFF_FIRST if time.monotonic() - started > 30 else min(delay * 2, BACKOFF_MAX)
            self.stopping.wait(BACKOFF_FIRST if lost_at else delay)

    def _follow(self) -> None:
        """Subscribe, take the snapshot, reconcile, then apply events until the stream ends."""
        chan, lines = self.http.stream(EVENTS_PATH, idle=RETRY_EVERY)
        try:
            self.table.reconcile(self._snapshot())
            for line in lines:
                if self.stopping.is_set():
                    return
                if line is None:
                    self.table.retry()
                    continue
                event = json.loads(line)
                if isinstance(event, dict):
                    self.table.apply(event)
            log.info("the guest agent's event stream ended; subscribing again")
        finally:
            chan.close()

    def _snapshot(self) -> list[dict[str, Any]]:
        status, body = self.http.call("GET", PORTS_PATH)
        if status == 404:
            if not self._no_ports_route:
                log.warning("the guest agent has no %s: no ports forwarded until it does", PORTS_PATH)
            self._no_ports_route = True
            return []
        if status != 200 or not isinstance(body, list):
            raise SSHError(f"GET {PORTS_PATH} answered {status}")
        return [item for item in body if isinstance(item, dict)]
