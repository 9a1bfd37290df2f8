"""Keep the guest's clock on the host's: at start, at every SSH (re)connection, when the
host slept, and every `interval` seconds.

A sleeping host stops the monotonic clock but not the wall clock (on Linux and macOS
alike), so a jump in wall minus monotonic means the host slept (or its clock was set):
either way the guest's clock is now wrong.

A sync reads the guest's clock (GET /toolbox/v1/clock) between two readings of the host's:
the guest's time belongs to the middle of that round trip, give or take half of it. Only a
drift surely over STEP_THRESHOLD_NS is corrected, by a relative step (POST adjust_ns), so a
slow request (seconds, under TCG on a busy host) never moves a right clock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolbox.hostagent.guest_http import CHANNEL_ERRORS, GuestHTTP
from toolbox.hostagent.report import Report

log = logging.getLogger("toolbox.hostagent")
CLOCK_PATH = "/toolbox/v1/clock"
DEFAULT_INTERVAL = 60.0
INTERVAL_ENV = "TOOLBOX_CLOCK_INTERVAL"  # seconds between periodic syncs (tests shorten it)
CHECK_EVERY = 1.0  # how often the sleep detector compares the clocks
SLEEP_JUMP = 2.0  # seconds of wall-minus-monotonic change that count as a sleep
STEP_THRESHOLD_NS = 100_000_000  # a drift surely over 100 ms is stepped; less is left alone

ClockCall = Callable[[str, str, Any], Any]  # (method, path, JSON body or None) -> the answer's JSON


@dataclass(frozen=True)
class ClockReading:
    drift_ms: float  # the guest's clock minus the host's, at the middle of the round trip
    error_ms: float  # half the round trip: the drift is good to plus or minus this
    stepped: bool  # the guest's clock was stepped by -drift


def read_and_step(call: ClockCall, step: bool = True, now_ns: Callable[[], int] | None = None) -> ClockReading:
    """Measure the guest's drift; step its clock when the drift is surely over the threshold.
    `call` raises for an answer other than 200 (ValueError here for a malformed one)."""
    now = now_ns or time.time_ns
    before = now()
    doc = call("GET", CLOCK_PATH, None)
    after = now()
    guest_ns = doc.get("unix_ns") if isinstance(doc, dict) else None
    if not isinstance(guest_ns, int) or isinstance(guest_ns, bool):
        raise ValueError(f"the guest agent's clock answer has no unix_ns: {doc!r}")
    drift_ns, error_ns = guest_ns - (before + after) // 2, (after - before) // 2
    stepped = step and abs(drift_ns) - error_ns > STEP_THRESHOLD_NS
    if stepped:
        call("POST", CLOCK_PATH, {"adjust_ns": -drift_ns})
    return ClockReading(drift_ns / 1e6, error_ns / 1e6, stepped)


def interval_from_env(default: float = DEFAULT_INTERVAL) -> float:
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value > 0 else default


class ClockRouteMissing(ValueError):
    """The guest agent answered the clock route with 404: it predates the route."""


class ClockKeeper:
    def __init__(self, http: GuestHTTP, report: Report, stopping: threading.Event, interval: float,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self.http, self.report, self.stopping, self.interval = http, report, stopping, interval
        self.wall, self.mono = wall, mono
        self._wanted = threading.Event()
        self.unreachable = False  # the last sync could not reach the guest agent
        self.unsupported = False  # the guest agent has no clock route (an image older than this toolbox)
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
            if self.unsupported:
                pass  # said once; an upgraded image comes with a new host agent
            elif self._wanted.is_set() or self.mono() >= next_due:
                self._wanted.clear()
                next_due = self.mono() + self.interval
                if not self.sync() and self.unreachable:
                    self._wanted.set()  # the guest agent is not up yet (we start with the VM): next check
            self.stopping.wait(CHECK_EVERY)

    def sync(self) -> bool:
        """Measure the guest's clock once, stepping it if it is off; whether the agent answered."""
        self.unreachable = False
        try:
            reading = read_and_step(self._call)
        except CHANNEL_ERRORS as exc:
            log.debug("clock sync failed (the link is down?): %s", exc)
            self.unreachable = True
            return False
        except ClockRouteMissing:
            self.unsupported = True
            log.warning("the guest agent has no clock route: its image is older than this toolbox, and the"
                        " guest's clock is not kept on the host's; `toolbox upgrade` brings a newer image")
            self.report.update(clock={"unsupported": True})
            return False
        except ValueError as exc:
            log.warning("clock sync: %s", exc)
            return False
        if reading.stepped:
            log.info("guest clock was %+.3f s off the host's: stepped (measured to within %.3f s)",
                     reading.drift_ms / 1000, reading.error_ms / 1000)
        self.report.update(clock={"synced": time.time(), "drift_ms": reading.drift_ms,
                                  "error_ms": reading.error_ms, "stepped": reading.stepped})
        return True

    def _call(self, method: str, path: str, body: Any) -> Any:
        status, doc = self.http.call(method, path, body)
        if status == 404 and method == "GET":
            raise ClockRouteMissing(f"the guest agent answered {method} {path} with 404")
        if status != 200:
            raise ValueError(f"the guest agent answered {method} {path} with {status} {doc}")
        return doc
