"""`docker exec`: extra processes in a running container, run by `crun exec` as children of
the agent (they do not outlive it, as Docker's do not outlive their daemon's shim)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolbox_agent.containers import console, rootfs, spec
from toolbox_agent.containers.errors import Conflict, InvalidParameter, NoSuchExec
from toolbox_agent.containers.model import new_id
from toolbox_agent.containers.stdio import Output, Session

if TYPE_CHECKING:
    from toolbox_agent.containers.engine import ContainerEngine


@dataclass
class Exec:
    id: str
    container_id: str
    config: dict[str, Any]
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    started: bool = False
    master: int | None = None
    proc: asyncio.subprocess.Process | None = None
    output: asyncio.Queue[Output] = field(default_factory=asyncio.Queue)

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    def inspect(self) -> dict[str, Any]:
        cmd = list(self.config.get("Cmd") or [])
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {"tty": self.tty, "entrypoint": cmd[0] if cmd else "", "arguments": cmd[1:],
                              "privileged": bool(self.config.get("Privileged")), "user": self.config.get("User") or ""},
            "OpenStdin": bool(self.config.get("AttachStdin")),
            "OpenStderr": bool(self.config.get("AttachStderr")),
            "OpenStdout": bool(self.config.get("AttachStdout")),
            "CanRemove": False,
            "ContainerID": self.container_id,
            "DetachKeys": self.config.get("DetachKeys") or "",
            "Pid": self.pid,
        }  # fmt: skip


class ExecManager:
    def __init__(self, engine: ContainerEngine) -> None:
        self.engine = engine
        self.execs: dict[str, Exec] = {}

    def get(self, exec_id: str) -> Exec:
        try:
            return self.execs[exec_id]
        except KeyError:
            raise NoSuchExec(exec_id) from None

    def create(self, ref: str, config: dict[str, Any]) -> Exec:
        c = self.engine.get(ref)
        if not c.state.running:
            raise Conflict(f"Container {c.id} is not running")
        if c.state.status == "paused":
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if c.state.status == "restarting":
            raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
        if not config.get("Cmd"):
            raise InvalidParameter("No exec command specified")
        e = Exec(new_id(), c.id, config)
        self.execs[e.id] = e
        c.exec_ids.append(e.id)
        self.engine._publish(c, "exec_create: " + " ".join(config["Cmd"]), execID=e.id)
        return e

    def _process(self, e: Exec) -> dict[str, Any]:
        c = self.engine.get(e.container_id)
        base = json.loads((c.dir / "bundle" / "config.json").read_text())["process"]
        user = str(e.config.get("User") or c.config.get("User") or "")
        try:
            uid, gid, groups = spec.resolve_user(user, rootfs.read_file(c.rootfs, "/etc/passwd"), rootfs.read_file(c.rootfs, "/etc/group"))
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
        env = list(base.get("env") or [])
        for item in e.config.get("Env") or []:
            key = item.split("=", 1)[0] + "="
            env = [x for x in env if not x.startswith(key)] + [item]
        caps = spec.ALL_CAPS if e.config.get("Privileged") else base["capabilities"]["bounding"]
        process = {**base, "terminal": e.tty, "args": list(e.config["Cmd"]), "env": env,
                   "cwd": e.config.get("WorkingDir") or base.get("cwd") or "/",
                   "user": {"uid": uid, "gid": gid, "additionalGids": groups},
                   "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}}  # fmt: skip
        size = e.config.get("ConsoleSize")
        process.pop("consoleSize", None)
        if e.tty and size and size[0]:
            process["consoleSize"] = {"height": int(size[0]), "width": int(size[1])}
        return process

    async def start(self, exec_id: str, detach: bool, tty: bool | None = None) -> Session:
        e = self.get(exec_id)
        if e.started:
            raise Conflict(f"Exec {e.id} has already been started")
        c = self.engine.get(e.container_id)
        if not c.state.running:
            raise Conflict(f"Container {c.id} is not running")
        e.started = True
        workdir = tempfile.mkdtemp(prefix="x", dir=str(self.engine.sock_dir))
        process_file = os.path.join(workdir, "process.json")
        with open(process_file, "w") as fh:
            json.dump(self._process(e), fh)
        argv = self.engine.runtime.argv("exec", "--process", process_file)
        stdin = asyncio.subprocess.PIPE if e.config.get("AttachStdin") and not detach else asyncio.subprocess.DEVNULL
        if e.tty:
            sock_path = os.path.join(workdir, "console.sock")
            listener = console.console_listener(sock_path)
            e.proc = await asyncio.create_subprocess_exec(*argv, "--tty", "--console-socket", sock_path, e.container_id,
                                                          stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                                                          stderr=asyncio.subprocess.PIPE)  # fmt: skip
            try:
                e.master = await asyncio.get_running_loop().run_in_executor(None, console.receive_master, listener, 10.0)
            except OSError:
                err = await e.proc.stderr.read() if e.proc.stderr else b""
                await e.proc.wait()
                raise InvalidParameter(f"exec failed: {err.decode(errors='replace').strip()}") from None
            finally:
                listener.close()
            os.set_blocking(e.master, False)
            asyncio.get_running_loop().add_reader(e.master, self._read_master, e)
        else:
            e.proc = await asyncio.create_subprocess_exec(*argv, e.container_id, stdin=stdin,
                                                          stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
        e.running, e.pid = True, e.proc.pid
        asyncio.ensure_future(self._supervise(e, workdir))
        return Session(e.tty, e.output, lambda d: self._write(e, d), lambda: self._close_stdin(e), _noop,
                       stdin=bool(e.config.get("AttachStdin")))  # fmt: skip

    def _read_master(self, e: Exec) -> None:
        assert e.master is not None
        try:
            data = os.read(e.master, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if data:
            e.output.put_nowait((1, data))
        else:
            asyncio.get_running_loop().remove_reader(e.master)

    async def _supervise(self, e: Exec, workdir: str) -> None:
        assert e.proc is not None
        readers = []
        if not e.tty:
            for stream, pipe in ((1, e.proc.stdout), (2, e.proc.stderr)):
                if pipe is not None:
                    readers.append(asyncio.ensure_future(_copy(pipe, stream, e.output)))
        code = await e.proc.wait()
        if readers:
            await asyncio.wait(readers, timeout=5)
        if e.master is not None:
            await asyncio.sleep(0.05)
            asyncio.get_running_loop().remove_reader(e.master)
            _drain_master(e)
            os.close(e.master)
            e.master = None
        e.exit_code = code if code >= 0 else 128 - code
        e.running = False
        e.output.put_nowait(None)
        try:
            for name in os.listdir(workdir):
                os.unlink(os.path.join(workdir, name))
            os.rmdir(workdir)
        except OSError:
            pass
        c = self.engine.containers.get(e.container_id)
        if c is not None:
            self.engine._publish(c, "exec_die", execID=e.id, exitCode=str(e.exit_code))

    async def _write(self, e: Exec, data: bytes) -> None:
        if e.master is not None:
            try:
                os.write(e.master, data)
            except OSError:
                pass
        elif e.proc is not None and e.proc.stdin is not None:
            try:
                e.proc.stdin.write(data)
                await e.proc.stdin.drain()
            except (ConnectionError, RuntimeError):
                pass

    async def _close_stdin(self, e: Exec) -> None:
        if e.proc is not None and e.proc.stdin is not None and not e.tty:
            e.proc.stdin.close()

    async def resize(self, exec_id: str, height: int, width: int) -> None:
        e = self.get(exec_id)
        if e.master is not None:
            console.set_size(e.master, height, width)

    async def forget_container(self, cid: str) -> None:
        for e in [x for x in self.execs.values() if x.container_id == cid]:
            if e.proc is not None and e.running:
                try:
                    e.proc.kill()
                except ProcessLookupError:
                    pass
            self.execs.pop(e.id, None)


async def _noop() -> None:
    return None


def _drain_master(e: Exec) -> None:
    assert e.master is not None
    while True:
        try:
            data = os.read(e.master, 65536)
        except OSError:
            return
        if not data:
            return
        e.output.put_nowait((1, data))


async def _copy(pipe: asyncio.StreamReader, stream: int, out: asyncio.Queue[Output]) -> None:
    while True:
        data = await pipe.read(65536)
        if not data:
            return
        out.put_nowait((stream, data))
