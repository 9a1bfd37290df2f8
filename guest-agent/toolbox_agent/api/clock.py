"""The guest's clock, kept on the host's by the host agent (and read by `toolbox doctor`):

- GET /toolbox/v1/clock → {"unix_ns": the guest's time}. The host takes its own time before
  and after the request: the guest's time belongs to the middle of that round trip, give or
  take half of it, so the host knows the drift and how far to trust it.
- POST /toolbox/v1/clock {"adjust_ns": N} → the guest steps its clock by N (a relative
  step: how long the request took to arrive does not matter) when |N| exceeds
  STEP_THRESHOLD_NS; answers {"drift_ms": guest minus host before the step, "stepped": bool}.

The guest has no NTP (it makes no outbound connection), so after the host slept, or a
VM paused for a while, the guest's clock is wrong until the host tells it: TLS, make and
registry token expiry all notice. A step, not a slew: the drift after a sleep is minutes.
(An absolute time sent by the host would be stale by the request's transit, which under
TCG on a busy host is seconds: stepping to it made the clock jump back and forth.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from toolbox_agent.http import ApiError, Request, Response, Route, json_response

log = logging.getLogger("toolbox_agent.clock")
STEP_THRESHOLD_NS = 100_000_000  # 100 ms: below it, leave the clock alone

SetClock = Callable[[int], None]


def set_realtime_ns(unix_ns: int) -> None:
    time.clock_settime_ns(time.CLOCK_REALTIME, unix_ns)  # needs root (CAP_SYS_TIME): the agent is


def routes(set_clock: SetClock = set_realtime_ns, now_ns: Callable[[], int] = time.time_ns) -> list[Route]:
    async def read(req: Request) -> Response:
        return json_response({"unix_ns": now_ns()})

    async def step(req: Request) -> Response:
        adjust_ns = req.json_object().get("adjust_ns")
        if not isinstance(adjust_ns, int) or isinstance(adjust_ns, bool):
            raise ApiError(400, f"invalid adjust_ns: {adjust_ns!r} (want integer nanoseconds to add to the guest's clock)")
        stepped = abs(adjust_ns) > STEP_THRESHOLD_NS
        if stepped:
            try:
                set_clock(now_ns() + adjust_ns)
            except OSError as exc:
                raise ApiError(500, f"cannot set the guest clock: {exc.strerror or exc}") from None
            log.info("clock stepped by %+.3f s to the host's time", adjust_ns / 1e9)
        return json_response({"drift_ms": -adjust_ns / 1e6, "stepped": stepped})

    return [Route("GET", "/toolbox/v1/clock", read), Route("POST", "/toolbox/v1/clock", step)]
