"""What `toolbox run` and `toolbox exec` do with the engine's calls, in docker's order.

run:  create (on "No such image": pull, create again) → attach → wait → start → copy the
      streams until the container's side ends → the wait's StatusCode is our exit code.
      Attaching and waiting before the start is what makes a fast container's first and
      last bytes, and its exit code, impossible to miss.
exec: create the exec → start it hijacked → copy → the exec's ExitCode.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolbox.engine import stdio
from toolbox.engine.client import EngineClient
from toolbox.engine.http import Hijacked
from toolbox.errors import EngineError, UsageError

Progress = Callable[[dict[str, Any]], None]


@dataclass
class RunOptions:
    image: str
    command: list[str] = field(default_factory=list)
    name: str | None = None
    detach: bool = False
    rm: bool = False
    interactive: bool = False
    tty: bool = False
    env: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    publish: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    entrypoint: str | None = None
    hostname: str | None = None
    labels: list[str] = field(default_factory=list)
    network: str | None = None
    restart: str | None = None


RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


def parse_restart(policy: str) -> dict[str, Any]:
    """--restart no|always|unless-stopped|on-failure[:MAX_RETRIES] → HostConfig.RestartPolicy."""
    name, sep, retries = policy.partition(":")
    if name not in RESTART_POLICIES or (sep and (name != "on-failure" or not retries.isdigit())):
        raise UsageError(f"invalid restart policy {policy!r}: use no, always, unless-stopped or on-failure[:MAX_RETRIES]")
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": int(retries) if retries else 0}


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """-l KEY=VALUE (or KEY, an empty value, as docker)."""
    labels = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid label {item!r}: use KEY=VALUE")
        labels[key] = value
    return labels


def parse_env(items: Sequence[str]) -> list[str]:
    """-e KEY=VALUE as given; -e KEY takes KEY's value from here, or is dropped (as docker)."""
    out = []
    for item in items:
        if "=" in item:
            out.append(item)
        elif item in os.environ:
            out.append(f"{item}={os.environ[item]}")
    return out


def parse_publish(items: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """-p [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO] → (ExposedPorts, PortBindings)."""
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for item in items:
        spec, _, proto = item.partition("/")
        proto = proto or "tcp"
        parts = spec.rsplit(":", 2)
        container = parts[-1]
        host_port = parts[-2] if len(parts) >= 2 else ""
        host_ip = parts[-3] if len(parts) == 3 else ""
        if proto not in ("tcp", "udp", "sctp") or not container.isdigit() or (host_port and not host_port.isdigit()):
            raise UsageError(f"invalid port mapping {item!r}: use [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]")
        key = f"{int(container)}/{proto}"
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": host_ip.strip("[]"), "HostPort": host_port})
    return exposed, bindings


def parse_volume(item: str) -> str:
    """-v SRC:DST[:OPTS]; a relative or ~ source becomes absolute (a bare word is a named volume)."""
    src, sep, rest = item.partition(":")
    if not sep or not rest:
        raise UsageError(f"invalid volume {item!r}: use HOST_PATH_OR_NAME:CONTAINER_PATH[:ro]")
    if src.startswith(("~", ".")):
        src = str(Path(src).expanduser().absolute())
    return f"{src}:{rest}"


def container_config(opts: RunOptions) -> dict[str, Any]:
    """The body of POST /containers/create for these options."""
    attach = not opts.detach
    exposed, bindings = parse_publish(opts.publish)
    config: dict[str, Any] = {
        "Image": opts.image, "Cmd": opts.command or None, "Env": parse_env(opts.env), "Tty": opts.tty,
        "OpenStdin": opts.interactive, "StdinOnce": opts.interactive and attach,
        "AttachStdin": opts.interactive and attach, "AttachStdout": attach, "AttachStderr": attach,
        "ExposedPorts": exposed or None,
        "HostConfig": {"AutoRemove": opts.rm, "Binds": [parse_volume(v) for v in opts.volumes] or None,
                       "PortBindings": bindings or None},
    }
    if opts.workdir:
        config["WorkingDir"] = opts.workdir
    if opts.user:
        config["User"] = opts.user
    if opts.entrypoint is not None:
        config["Entrypoint"] = [opts.entrypoint] if opts.entrypoint else [""]
    if opts.hostname:
        config["Hostname"] = opts.hostname
    if opts.labels:
        config["Labels"] = parse_labels(opts.labels)
    if opts.network:
        config["HostConfig"]["NetworkMode"] = opts.network
    if opts.restart:
        policy = parse_restart(opts.restart)
        if policy["Name"] and opts.rm:
            raise UsageError("conflicting options: --restart and --rm (a container removed when it exits is never restarted)")
        config["HostConfig"]["RestartPolicy"] = policy
    return config


def create(client: EngineClient, config: dict[str, Any], name: str | None, progress: Progress) -> str:
    """Create the container, pulling its image first when the engine does not have it."""
    try:
        return client.create(config, name)
    except EngineError as exc:
        if exc.status != 404 or "image" not in exc.message.lower():
            raise
    sys.stderr.write(f"Unable to find image '{config['Image']}' locally\n")
    for message in client.pull(config["Image"]):
        progress(message)
    return client.create(config, name)


def start_exit_code(exc: EngineError) -> int:
    """docker run's code for a container that could not start: 127 no such program, 126 not runnable."""
    text = exc.message.lower()
    if "executable file not found" in text or "no such file or directory" in text:
        return 127
    if "permission denied" in text:
        return 126
    return 125


def run(client: EngineClient, opts: RunOptions, progress: Progress) -> int:
    """Run a container as `docker run` does; the container's exit code (or docker's 125-127)."""
    if opts.interactive and opts.tty and not opts.detach and not stdio.stdin_is_tty():
        raise UsageError("the input device is not a TTY", hint="drop -t, or run toolbox from a terminal")
    try:
        cid = create(client, container_config(opts), opts.name, progress)
        if opts.detach:
            client.start(cid)
            sys.stdout.write(cid + "\n")
            return 0
        hijacked = client.attach(cid, opts.interactive)
        waiter = client.wait(cid, "removed" if opts.rm else "next-exit")
    except EngineError as exc:
        exc.exit_code = 125
        raise
    resize = (lambda rows, cols: client.resize(cid, rows, cols)) if opts.tty else None
    starter = Starter(client, cid, hijacked, resize)
    if opts.tty:
        stream(hijacked, opts.tty, opts.interactive, resize, starter)
    else:
        with stdio.proxy_signals(lambda sig: client.kill(cid, sig)):
            stream(hijacked, opts.tty, opts.interactive, resize, starter)
    if starter.error is not None:
        starter.error.exit_code = start_exit_code(starter.error)
        raise starter.error
    return int((waiter.json() or {}).get("StatusCode", 0))


class Starter:
    """Starts the container in a thread while the stream is already being read, as docker
    does: the start may answer only after the program has written (or the runtime waited
    on it), and whatever comes first must not sit unread. A failed start ends the stream;
    the terminal gets its size once the container runs."""

    def __init__(self, client: EngineClient, cid: str, hijacked: Hijacked,
                 resize: Callable[[int, int], None] | None) -> None:
        self.client, self.cid, self.hijacked, self.resize = client, cid, hijacked, resize
        self.error: EngineError | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.client.start(self.cid)
        except EngineError as exc:
            self.error = exc
            with contextlib.suppress(OSError):
                self.hijacked.sock.shutdown(socket.SHUT_RDWR)
            return
        if self.resize is not None and (size := stdio.terminal_size()):
            with contextlib.suppress(EngineError):
                self.resize(*size)

    def begin(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join()


def exec_(client: EngineClient, container: str, command: list[str], *, interactive: bool = False,
          tty: bool = False, detach: bool = False, env: Sequence[str] = (), workdir: str | None = None,
          user: str | None = None) -> int:
    """Run a command in a running container as `docker exec` does; its exit code."""
    if interactive and tty and not detach and not stdio.stdin_is_tty():
        raise UsageError("the input device is not a TTY", hint="drop -t, or run toolbox from a terminal")
    config: dict[str, Any] = {
        "AttachStdin": interactive and not detach, "AttachStdout": not detach, "AttachStderr": not detach,
        "Tty": tty, "Cmd": command, "Env": parse_env(env) or None, "WorkingDir": workdir or "", "User": user or "",
    }
    exec_id = client.exec_create(container, config)
    hijacked = client.exec_start(exec_id, tty, detach)
    if hijacked is None:
        return 0
    resize = (lambda rows, cols: client.resize(exec_id, rows, cols, exec_id=True)) if tty else None
    stream(hijacked, tty, interactive, resize)
    return exec_exit_code(client, exec_id)


def exec_exit_code(client: EngineClient, exec_id: str, tries: int = 50) -> int:
    """The exec's ExitCode; the stream can end a moment before the engine records it."""
    import time

    for _ in range(tries):
        result = client.exec_inspect(exec_id)
        if not result.running and result.exit_code is not None:
            return result.exit_code
        time.sleep(0.1)
    return 0 if result.exit_code is None else result.exit_code


def stream(hijacked: Hijacked, tty: bool, interactive: bool, resize: Callable[[int, int], None] | None,
           starter: Starter | None = None) -> None:
    """Copy the hijacked stream to our stdout/stderr (and stdin up) until the far end closes.
    Without a starter (exec: the hijack started it) the terminal gets its size first."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    if interactive:
        stdio.pump_stdin(hijacked.sock)
    try:
        if starter is not None:
            starter.begin()
        elif resize is not None and (size := stdio.terminal_size()):
            resize(*size)
        if tty and interactive:
            with stdio.raw_terminal(resize or (lambda rows, cols: None)):
                stdio.copy_output(stdio.socket_chunks(hijacked.sock), tty, out, err)
        else:
            stdio.copy_output(stdio.socket_chunks(hijacked.sock), tty, out, err)
    finally:
        if starter is not None:
            starter.join()
        hijacked.sock.close()
