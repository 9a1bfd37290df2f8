"""EngineClient: the Docker Engine API calls toolbox's container commands make.

One method per call, typed in and out; every error status becomes an EngineError with the
engine's own message (the same text the docker CLI prints after "Error response from
daemon:"), and a socket that does not answer becomes EngineUnreachable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolbox.engine import http
from toolbox.engine.http import Hijacked, Query, Response, quoted, url
from toolbox.errors import EngineError, EngineUnreachable


@dataclass
class ExecResult:
    exit_code: int | None
    running: bool


class EngineClient:
    def __init__(self, socket_path: Path, instance: str = "default") -> None:
        self.socket_path = socket_path
        self.instance = instance

    @classmethod
    def for_instance(cls, name: str) -> EngineClient:
        from toolbox import state

        return cls(state.require(name).docker_socket, name)

    # -- plumbing ------------------------------------------------------------------------
    def _unreachable(self, reason: str) -> EngineUnreachable:
        if not self.socket_path.exists():
            reason = "the socket is not there (the VM or its host agent is not running)"
        return EngineUnreachable(self.instance, str(self.socket_path), reason)

    def call(self, method: str, path: str, query: Query | None = None, body: Any = None,
             timeout: float | None = 120.0, headers: dict[str, str] | None = None) -> Response:
        """Send a request; raise EngineError for a status >= 400, else return it unread."""
        try:
            resp = http.request(str(self.socket_path), method, url(path, query), body=body, timeout=timeout,
                                headers=headers)
        except http.Unreachable as exc:
            raise self._unreachable(str(exc)) from None
        if resp.status >= 400:
            raise error_from(resp.status, resp.body())
        return resp

    def json(self, method: str, path: str, query: Query | None = None, body: Any = None) -> Any:
        return self.call(method, path, query, body).json()

    def hijack(self, path: str, query: Query | None, body: Any) -> Hijacked:
        try:
            h = http.hijack(str(self.socket_path), url(path, query), body)
        except http.Unreachable as exc:
            raise self._unreachable(str(exc)) from None
        if h.status >= 400:
            h.sock.close()
            raise error_from(h.status, h.leftover)
        return h

    # -- system --------------------------------------------------------------------------
    def ping(self, timeout: float = 5.0) -> str:
        return self.call("GET", "/_ping", timeout=timeout).body().decode()

    def version(self) -> dict[str, Any]:
        return self.json("GET", "/version")

    # -- containers ----------------------------------------------------------------------
    def containers(self, all: bool = False) -> list[dict[str, Any]]:
        return self.json("GET", "/containers/json", {"all": all})

    def inspect_container(self, ref: str) -> dict[str, Any]:
        return self.json("GET", f"/containers/{quoted(ref)}/json")

    def create(self, config: dict[str, Any], name: str | None = None) -> str:
        return str(self.json("POST", "/containers/create", {"name": name}, config)["Id"])

    def start(self, ref: str) -> None:
        self.call("POST", f"/containers/{quoted(ref)}/start").body()

    def stop(self, ref: str, timeout: int | None = None) -> None:
        self.call("POST", f"/containers/{quoted(ref)}/stop", {"t": timeout}, timeout=None).body()

    def kill(self, ref: str, signal: str = "SIGKILL") -> None:
        self.call("POST", f"/containers/{quoted(ref)}/kill", {"signal": signal}).body()

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        self.call("DELETE", f"/containers/{quoted(ref)}", {"force": force, "v": volumes}, timeout=None).body()

    def resize(self, ref: str, rows: int, cols: int, exec_id: bool = False) -> None:
        kind = "exec" if exec_id else "containers"
        self.call("POST", f"/{kind}/{quoted(ref)}/resize", {"h": rows, "w": cols}).body()

    def wait(self, ref: str, condition: str = "next-exit") -> Response:
        """The wait request, sent now; read its JSON later (it answers when the condition holds)."""
        return self.call("POST", f"/containers/{quoted(ref)}/wait", {"condition": condition}, timeout=None)

    def attach(self, ref: str, stdin: bool) -> Hijacked:
        query = {"stream": True, "stdin": stdin, "stdout": True, "stderr": True}
        return self.hijack(f"/containers/{quoted(ref)}/attach", query, None)

    def logs(self, ref: str, follow: bool = False, tail: str = "all", timestamps: bool = False) -> Response:
        query = {"stdout": True, "stderr": True, "follow": follow, "tail": tail, "timestamps": timestamps}
        return self.call("GET", f"/containers/{quoted(ref)}/logs", query, timeout=None)

    # -- exec ----------------------------------------------------------------------------
    def exec_create(self, ref: str, config: dict[str, Any]) -> str:
        return str(self.json("POST", f"/containers/{quoted(ref)}/exec", None, config)["Id"])

    def exec_start(self, exec_id: str, tty: bool, detach: bool = False) -> Hijacked | None:
        body = {"Detach": detach, "Tty": tty}
        if detach:
            self.call("POST", f"/exec/{exec_id}/start", None, body).body()
            return None
        return self.hijack(f"/exec/{exec_id}/start", None, body)

    def exec_inspect(self, exec_id: str) -> ExecResult:
        doc = self.json("GET", f"/exec/{exec_id}/json")
        return ExecResult(doc.get("ExitCode"), bool(doc.get("Running")))

    # -- images --------------------------------------------------------------------------
    def images(self) -> list[dict[str, Any]]:
        return self.json("GET", "/images/json")

    def inspect_image(self, ref: str) -> dict[str, Any]:
        return self.json("GET", f"/images/{quoted(ref)}/json")

    def remove_image(self, ref: str, force: bool = False) -> list[dict[str, str]]:
        return self.json("DELETE", f"/images/{quoted(ref)}", {"force": force}) or []

    def pull(self, ref: str) -> Iterator[dict[str, Any]]:
        """The pull's progress messages as they come; an "error" message raises EngineError."""
        image, tag = split_reference(ref)
        resp = self.call("POST", "/images/create", {"fromImage": image, "tag": tag}, timeout=None,
                         headers={"X-Registry-Auth": "e30="})  # "{}": anonymous, as docker sends it
        for line in resp.lines():
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg.get("error") or msg.get("errorDetail"):
                detail = msg.get("errorDetail") or {}
                raise EngineError(500, str(msg.get("error") or detail.get("message")))
            yield msg


def split_reference(ref: str) -> tuple[str, str | None]:
    """(name, tag) as the pull API wants them; a digest stays in the name, no tag then."""
    if "@" in ref:
        return ref, None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, "latest"


def error_from(status: int, body: bytes) -> EngineError:
    """Docker's {"message": ...} body as an EngineError (plain text when it is not JSON)."""
    try:
        message = str(json.loads(body).get("message") or "")
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace").strip()
    return EngineError(status, message or f"the engine answered HTTP {status}")
