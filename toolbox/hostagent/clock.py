"""Keep the guest's clock on the host's: at start, at every SSH (re)connection, when the
host slept, and every `interval` seconds.

A sleeping host stops the monotonic clock but not the wall clock (on Linux and macOS
alike), so a jump in wall minus monotonic means the host slept (or its clock was set):
either way the guest's clock is now wrong. The guest agent decides whether to step
(POST /toolbox/v1/clock, drift over 100 ms); this side sends the time and logs steps.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from toolbox.hostagent.guest_http import CHANNEL_ERRORS, GuestHTTP
from toolbox.hostagent.report import Report

log = logging.getLogger("toolbox.hostagent")
CLOCK_PATH = "/toolbox/v1/clock"
DEFAULT_INTERVAL = 60.0
INTERVAL_ENV = "TOOLBOX_CLOCK_INTERVAL"  # seconds between periodic syncs (tests shorten it)
CHECK_EVERY = 1.0  # how often the sleep detector compares the clocks
SLEEP_JUMP = 2.0  # seconds of wall-minus-monotonic change that count as a sleep


def interval_from_env(default: float = DEFAULT_INTERVAL) -> float:
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value > 0 else default


class ClockKeeper:
    def __init__(self, http: GuestHTTP, report: Report, stopping: threading.Event, interval: float,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self.http, self.report, self.stopping, self.interval = http, report, stopping, interval
        self.wall, self.mono = wall, mono
        self._wanted = threading.Event()
        self._wanted.set()  # at start

    def request(self, why: str = "") -> None:
        """Sync at the next check (the link was made again, ...)."""
        if why:
            log.debug("clock sync requested: %s", why)
        self._wanted.set()

    def run(self) -> None:
        offset = self.wall() - self.mono()
        next_due = self.mono() + self.interval
        while not self.stopping.is_set():
            new_offset = self.wall() - self.mono()
            if abs(new_offset - offset) > SLEEP_JUMP:
                log.info("the host's clock jumped %+.1f s against its monotonic clock (it slept?): syncing the guest",
                         new_offset - offset)
                self._wanted.set()
            offset = new_offset
            if self._wanted.is_set() or self.mono() >= next_due:
                self._wanted.clear()
                next_due = self.mono() + self.interval
                self.sync()
            self.stopping.wait(CHECK_EVERY)

    def sync(self) -> bool:
        """Send the host's time once; whether the guest agent answered."""
        try:
            status, body = self.http.call("POST", CLOCK_PATH, {"unix_ns": time.time_ns()})
        except CHANNEL_ERRORS as exc:
            log.debug("clock sync failed (the link is down?): %s", exc)
            return False
        if status != 200 or not isinstance(body, dict):
            log.warning("clock sync: the guest agent answered %s %s", status, body)
            return False
        try:
            drift = float(body.get("drift_ms", 0.0))
        except (TypeError, ValueError):
            drift = float("nan")
        if body.get("stepped"):
            log.info("guest clock was %+.3f s off the host's: stepped", drift / 1000)
        self.report.update(clock={"synced": time.time(), "drift_ms": drift, "stepped": bool(body.get("stepped"))})
        return True
