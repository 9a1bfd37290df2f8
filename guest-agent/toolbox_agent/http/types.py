"""The request, response and error types every API handler speaks.

Handlers take a `Request` and return a `Response` (a JSON document, bytes, or an async
iterator streamed chunked) or a `Hijack` (the connection is handed over raw after a
`101 UPGRADED`, as Docker's attach and exec start do). Raising `ApiError` answers with
Docker's error shape: `{"message": ...}` and `Content-Type: application/json`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json"
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"

# moby's boolValue: these mean false, anything else present means true.
_FALSE_WORDS = {"", "0", "no", "false", "none"}


class ApiError(Exception):
    """An error the client sees as `{"message": ...}` with this HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str  # without the /v1.NN prefix
    query: dict[str, list[str]]
    headers: dict[str, str]  # lowercase names
    body: bytes
    api_version: str | None = None  # "1.44", or None when the path had no prefix
    path_params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON (None when empty); ApiError(400) when malformed."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from exc

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object ({} when empty); ApiError(400) otherwise."""
        value = self.json()
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ApiError(400, "invalid JSON: expected an object")
        return value

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.arg(name)
        if value is None:
            return default
        return value.strip().lower() not in _FALSE_WORDS

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError as exc:
            raise ApiError(400, f"invalid value for {name}: {value!r}") from exc

    def filters(self) -> dict[str, list[str]]:
        """The `filters` argument: {"key": [values]} (the old {"key": {"v": true}} too)."""
        raw = self.arg("filters")
        if not raw:
            return {}
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"invalid filters: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ApiError(400, "invalid filters: expected an object")
        out: dict[str, list[str]] = {}
        for key, value in parsed.items():
            if isinstance(value, dict):
                out[key] = [k for k, on in value.items() if on]
            elif isinstance(value, list):
                out[key] = [str(v) for v in value]
            else:
                out[key] = [str(value)]
        return out


Body = bytes | AsyncIterator[bytes]


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Body = b""


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, {"Content-Type": JSON_TYPE}, json.dumps(obj).encode() + b"\n")


def empty_response(status: int = 204) -> Response:
    return Response(status, {}, b"")


def error_response(status: int, message: str) -> Response:
    return Response(status, {"Content-Type": JSON_TYPE}, json.dumps({"message": message}).encode() + b"\n")


HijackCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Hijack:
    """Take the connection over after the 101: the callback owns the raw stream.

    The callback must treat EOF on the reader as the client closing its stdin (a
    half-close) and keep writing output until it is done; the server closes after it.
    """

    callback: HijackCallback
    content_type: str = RAW_STREAM


Handler = Callable[[Request], Awaitable[Response | Hijack]]
