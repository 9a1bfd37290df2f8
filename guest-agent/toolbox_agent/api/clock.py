"""POST /toolbox/v1/clock: the host agent hands over the host's time and the guest steps
its own clock to it when they differ by more than STEP_THRESHOLD_NS.

The guest has no NTP (it makes no outbound connection), so after the host slept, or a
VM paused for a while, the guest's clock is wrong until the host tells it: TLS, make and
registry token expiry all notice. A step, not a slew: the drift after a sleep is minutes.
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
    async def clock(req: Request) -> Response:
        host_ns = req.json_object().get("unix_ns")
        if not isinstance(host_ns, int) or isinstance(host_ns, bool) or host_ns <= 0:
            raise ApiError(400, f"invalid unix_ns: {host_ns!r} (want the host's time as integer nanoseconds)")
        drift_ns = now_ns() - host_ns
        stepped = abs(drift_ns) > STEP_THRESHOLD_NS
        if stepped:
            try:
                set_clock(host_ns)
            except OSError as exc:
                raise ApiError(500, f"cannot set the guest clock: {exc.strerror or exc}") from None
            log.info("clock stepped to the host's time (it was %+.3f s off)", drift_ns / 1e9)
        return json_response({"drift_ms": drift_ns / 1e6, "stepped": stepped})

    return [Route("POST", "/toolbox/v1/clock", clock)]
