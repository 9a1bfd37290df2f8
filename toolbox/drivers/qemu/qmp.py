"""A small QMP (QEMU Machine Protocol) client over the instance's unix socket.

QMP is JSON, one object a line: QEMU greets, we negotiate capabilities, then each
{"execute": ...} gets one {"return": ...} or {"error": ...}; asynchronous {"event": ...}
lines may arrive in between and are skipped. QEMU serves one client at a time, so
connections are short-lived: open, a few commands, close.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from toolbox.errors import DriverError


class QMPError(DriverError):
    """QMP could not be reached, timed out, or QEMU answered a command with an error."""

    def __init__(self, message: str, *, error_class: str | None = None) -> None:
        self.error_class = error_class
        super().__init__("qemu", message)


class QMPClient:
    """One QMP session. Use as a context manager:

        with QMPClient(path) as qmp:
            qmp.execute("query-status")  # -> {"status": "running", ...}

    Every read and write is bounded by `timeout` seconds (QMPError when exceeded).
    """

    def __init__(self, socket_path: Path, *, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> QMPClient:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Connect, read the greeting and leave capabilities-negotiation mode."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError as exc:
            sock.close()
            raise QMPError(f"cannot connect to QMP at {self.socket_path}: {exc.strerror or exc}") from exc
        self._sock = sock
        greeting = self._read_message()
        if "QMP" not in greeting:
            self.close()
            raise QMPError(f"unexpected QMP greeting: {greeting!r}")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one QMP command and return its "return" value; QMPError on an "error" reply."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._send(request)
        while True:
            reply = self._read_message()
            if "event" in reply:
                continue
            if "error" in reply:
                err = reply["error"]
                raise QMPError(f"QMP {command} failed: {err.get('desc', err)}", error_class=err.get("class"))
            if "return" in reply:
                return reply["return"]

    def _send(self, message: dict[str, Any]) -> None:
        sock = self._require_socket()
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise QMPError(f"QMP write failed: {exc}") from exc

    def _read_message(self) -> dict[str, Any]:
        sock = self._require_socket()
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QMPError(f"QMP did not answer within {self.timeout:g} s")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError as exc:
                raise QMPError(f"QMP did not answer within {self.timeout:g} s") from exc
            except OSError as exc:
                raise QMPError(f"QMP read failed: {exc}") from exc
            if not chunk:
                raise QMPError("QMP connection closed by QEMU")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise QMPError(f"QMP sent something that is not JSON: {line[:200]!r}") from exc
        if not isinstance(message, dict):
            raise QMPError(f"QMP sent an unexpected message: {message!r}")
        return message

    def _require_socket(self) -> socket.socket:
        if self._sock is None:
            raise QMPError("QMP client is not connected")
        return self._sock


def qmp_execute(socket_path: Path, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 5.0) -> Any:
    """Connect, run one command, disconnect."""
    with QMPClient(socket_path, timeout=timeout) as qmp:
        return qmp.execute(command, arguments)
