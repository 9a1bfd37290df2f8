"""The agent's HTTP layer: h11 on an asyncio Protocol per connection, Docker's hijack, routes, errors."""

from __future__ import annotations

from toolbox_agent.http.routing import Route, Router
from toolbox_agent.http.server import Server
from toolbox_agent.http.types import (
    JSON_TYPE,
    MULTIPLEXED_STREAM,
    RAW_STREAM,
    ApiError,
    Hijack,
    Request,
    Response,
    empty_response,
    error_response,
    json_response,
)

__all__ = [
    "JSON_TYPE",
    "MULTIPLEXED_STREAM",
    "RAW_STREAM",
    "ApiError",
    "Hijack",
    "Request",
    "Response",
    "Route",
    "Router",
    "Server",
    "empty_response",
    "error_response",
    "json_response",
]
