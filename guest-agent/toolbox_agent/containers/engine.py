"""The container engine: create, start, stop, kill, remove, wait, list, rename, prune.

It knows nothing of HTTP. Each running container has a monitor process (shim.py) that
owns its stdio and logs; the engine keeps one connection ("link") to each shim and fans
its output out to attached clients. State is kept in <root>/containers/<id>/container.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from toolbox_agent.containers import frames, resources, rootfs, spec
from toolbox_agent.containers.errors import Conflict, InvalidParameter, NoSuchContainer, NotModified
from toolbox_agent.containers.logs import rfc3339_nano
from toolbox_agent.containers.model import (
    NAME_RE, Container, command_line, created_seconds, merge_config, new_id, unique_random_name,
)
from toolbox_agent.containers.restarts import RestartManager
from toolbox_agent.containers.runtime import Runtime, RuntimeError_
from toolbox_agent.containers.stdio import Link, Subscriber
from toolbox_agent.containers import volumemounts
from toolbox_agent.containers.volumemounts import ContainerMounts
from toolbox_agent.events import EventBus
from toolbox_agent.network.manager import NetworkManager
from toolbox_agent.settings import Settings
from toolbox_agent.volumes import VolumeStore

log = logging.getLogger("toolbox_agent.containers")
AGENT_PYTHONPATH = str(Path(__file__).resolve().parents[2])
SHIM_REPORT_TIMEOUT = 300.0  # seconds for a new shim to say "ok <pid>" (crun create ran)


class ContainerEngine:
    def __init__(self, settings: Settings, images: Any, events: EventBus) -> None:
        self.settings, self.images, self.events = settings, images, events
        self.dir = settings.containers_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.runtime = Runtime(settings.runtime, str(settings.run_dir / "crun"))
        self.sock_dir = settings.run_dir / "shim"  # short paths: sun_path holds 108 bytes
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        self.containers: dict[str, Container] = {}
        self.links: dict[str, Link] = {}
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.pending_stdin: dict[str, list[bytes]] = {}
        self.exit_waiters: dict[str, list[asyncio.Future[int]]] = {}
        self.remove_waiters: dict[str, list[asyncio.Future[int]]] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        from toolbox_agent.containers.execs import ExecManager

        self.execs = ExecManager(self)
        self.volumes = VolumeStore(settings.root / "volumes", events)
        self.mounts = ContainerMounts(self.volumes, self.get, lambda: list(self.containers.values()))
        self.restarts = RestartManager(self)
        self.network = NetworkManager(settings.network_dir, events, dry=settings.network != "kernel")
        if images is not None and hasattr(images, "in_use"):
            images.in_use = self.image_user  # `docker rmi` refuses an image a container uses

    def image_user(self, image_id: str) -> str | None:
        """The ID of a container made from this image, or None."""
        return next((c.id for c in self.containers.values() if c.image_id == image_id), None)

    # ---- lookup -------------------------------------------------------------------
    def get(self, ref: str) -> Container:
        if ref in self.containers:
            return self.containers[ref]
        name = ref if ref.startswith("/") else "/" + ref
        for c in self.containers.values():
            if c.name == name:
                return c
        matches = [c for c in self.containers.values() if c.id.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameter(f"multiple IDs found with provided prefix: {ref}")
        raise NoSuchContainer(ref)

    def counts(self) -> dict[str, int]:
        states = [c.state.status for c in self.containers.values()]
        running = sum(s in ("running", "restarting") for s in states)
        paused = states.count("paused")
        return {"total": len(states), "running": running, "paused": paused, "stopped": len(states) - running - paused}

    def _lock(self, cid: str) -> asyncio.Lock:
        return self.locks.setdefault(cid, asyncio.Lock())

    def _publish(self, c: Container, action: str, **extra: str) -> None:
        attrs = {"name": c.name.lstrip("/"), "image": c.image, **{k: str(v) for k, v in (c.config.get("Labels") or {}).items()}, **extra}
        self.events.publish("container", action, c.id, attrs)

    # ---- create -------------------------------------------------------------------
    def create(self, body: dict[str, Any], name: str | None) -> Container:
        image_ref = body.get("Image") or ""
        if not image_ref:
            raise InvalidParameter("config cannot be empty in order to create a container")
        if name:
            if not NAME_RE.match(name):
                raise InvalidParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            self._check_name("/" + name.lstrip("/"))
        image = self.images.get(image_ref)  # ImageNotFound propagates (404 "No such image")
        host_config = dict(body.get("HostConfig") or {})
        resources.validate(host_config)
        config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
        merged = merge_config(config, (image.config or {}).get("config") or {})
        argv = command_line(merged)
        if not argv:
            raise InvalidParameter("no command specified")
        net_mode, net_attachments = self.network.plan(host_config, body.get("NetworkingConfig") or {}, merged)
        cid = new_id()
        if not merged.get("Hostname"):
            merged["Hostname"] = cid[:12]
        full_name = "/" + name.lstrip("/") if name else unique_random_name({c.name for c in self.containers.values()})
        mount_points = self.mounts.prepare(host_config, merged)
        cdir = self.dir / cid
        cdir.mkdir(parents=True)
        c = Container(cid, full_name, rfc3339_nano(), image_ref, image.id, argv[0], argv[1:], merged, host_config, dir=cdir)
        host_config["NetworkMode"] = net_mode
        c.save()
        self.mounts.save(c, mount_points)
        self.network.configure(cid, full_name, net_mode, net_attachments)
        c.log_path.touch()
        self.containers[cid] = c
        self._publish(c, "create")
        return c

    def _check_name(self, name: str, ignore: str | None = None) -> None:
        for other in self.containers.values():
            if other.name == name and other.id != ignore:
                raise Conflict(
                    f'Conflict. The container name "{name}" is already in use by container "{other.id}". '
                    "You have to remove (or rename) that container to be able to reuse that name."
                )

    # ---- start --------------------------------------------------------------------
    async def start(self, ref: str, by_policy: bool = False) -> None:
        c = self.get(ref)
        if not by_policy:  # as Docker: a start by hand ends a restart wait and resets the count
            self.restarts.cancel(c)
            c.restart_count = 0
        async with self._lock(c.id):
            if by_policy and c.state.status != "restarting":
                return  # stopped or removed while it waited for the lock
            if c.state.running and not by_policy:
                raise NotModified("container already started")
            if c.state.status == "removing":
                raise Conflict(f"container {c.id} is marked for removal and cannot be started")
            try:
                await self._start(c)
            except BaseException:
                self.mounts.stop(c)
                await rootfs.unmount(c.dir)
                await self.network.detach(c.id)
                if c.host_config.get("AutoRemove"):  # as Docker: --rm also covers a failed start
                    asyncio.ensure_future(self.remove(c.id, force=True))
                raise

    async def _start(self, c: Container) -> None:
        image = self.images.get(c.image_id)
        root = await rootfs.mount(list(image.layer_dirs), c.dir)
        hostname = str(c.config.get("Hostname") or c.short_id)
        hosts, hostname_file, resolv = rootfs.write_etc_files(c.dir, hostname, list(c.host_config.get("ExtraHosts") or []))
        netns = await self.network.attach(c.id, c.name, hostname, c.host_config, c.config, c.dir)
        try:
            uid, gid, groups = spec.resolve_user(str(c.config.get("User") or ""), rootfs.read_file(root, "/etc/passwd"), rootfs.read_file(root, "/etc/group"))
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
        env = list(c.config.get("Env") or [])
        if not any(e.startswith("PATH=") for e in env):
            env.insert(0, f"PATH={spec.DEFAULT_PATH}")
        env.append(f"HOSTNAME={hostname}")
        if c.tty and not any(e.startswith("TERM=") for e in env):
            env.append("TERM=xterm")
        size = c.host_config.get("ConsoleSize") or [0, 0]
        inp = spec.SpecInput(
            c.id, command_line(c.config), env, str(c.config.get("WorkingDir") or "/"), uid, gid, groups, hostname,
            str(root), c.tty, str(hosts), str(hostname_file), str(resolv), c.host_config,
            (int(size[0]), int(size[1])) if size and size[0] else None, netns=netns,
        )
        inp.mounts = await self.mounts.start(c, root)
        bundle = c.dir / "bundle"
        bundle.mkdir(exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(spec.build_spec(inp), indent=1))
        for stale in ("exit.json", "pid"):
            (c.dir / stale).unlink(missing_ok=True)
        self.shim_socket(c).unlink(missing_ok=True)
        if self._runtime_knows(c):
            await self.runtime.delete(c.id)  # a leftover from a crash would block the name
        pid = await self._spawn_shim(c)
        link = await self._connect(c)
        self.links[c.id] = link
        link.task = asyncio.ensure_future(self._pump(c, link))
        try:
            for data in self.pending_stdin.pop(c.id, []):
                await link.send(frames.K_STDIN if data else frames.K_STDIN_CLOSE, data)
            await self.runtime.start(c.id)
            c.state.status, c.state.pid, c.state.error, c.state.manually_stopped = "running", pid, "", False
            c.state.started_at, c.state.exit_code = rfc3339_nano(), 0
            c.save()
            self._publish(c, "start")
        except RuntimeError_ as exc:
            raise InvalidParameter(f"failed to start container: {exc}") from None
        finally:
            link.started.set()

    async def _spawn_shim(self, c: Container) -> int:
        argv = [sys.executable, "-m", "toolbox_agent.containers.shim", str(c.dir), str(self.shim_socket(c)), c.id,
                self.runtime.binary, self.runtime.root]  # fmt: skip
        if c.tty:
            argv.append("--tty")
        if c.config.get("OpenStdin"):
            argv.append("--stdin")
        env = {**os.environ, "PYTHONPATH": AGENT_PYTHONPATH}
        with open(c.dir / "shim.log", "ab") as errlog:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=errlog, env=env, start_new_session=True
            )
        assert proc.stdout is not None
        # Generous: 50 containers starting at once under TCG on a busy host took over a minute
        line = (await asyncio.wait_for(proc.stdout.readline(), SHIM_REPORT_TIMEOUT)).decode(errors="replace").strip()
        await proc.wait()  # the shim forks itself away at once
        if line.startswith("ok "):
            return int(line.split()[1])
        reason = line[6:] if line.startswith("error ") else (line or "the container monitor failed to start")
        code = 127 if ("not found" in reason or "No such file" in reason) else 126
        if "executable file" in reason and "not found" in reason:
            # the docker CLI turns exactly this phrase into exit code 127
            reason = f'exec: "{c.path}": executable file not found in $PATH: unknown'
        elif "ermission denied" in reason:
            reason = f'exec: "{c.path}": permission denied: unknown'
        c.state.status, c.state.exit_code, c.state.error = "exited", code, reason
        c.save()
        raise InvalidParameter(f"failed to create task for container: {reason}")

    def _runtime_knows(self, c: Container) -> bool:
        return (Path(self.runtime.root) / c.id).exists()

    def shim_socket(self, c: Container) -> Path:
        return self.sock_dir / f"{c.id[:24]}.sock"

    async def _connect(self, c: Container) -> Link:
        sock = self.shim_socket(c)
        for _ in range(500):
            try:
                reader, writer = await asyncio.open_unix_connection(str(sock))
                return Link(reader, writer)
            except (FileNotFoundError, ConnectionRefusedError):
                await asyncio.sleep(0.01)
        raise OSError(f"the container monitor's socket {sock} did not appear")

    async def _pump(self, c: Container, link: Link) -> None:
        while True:
            frame = await frames.read_shim_frame(link.reader)
            if frame is None or frame[0] == frames.K_EXIT:
                break
            for sub in list(self.subscribers.get(c.id, ())):
                sub.put(frame[0], frame[1])
        link.writer.close()
        await link.started.wait()  # a fast exit must not overtake start's "running"
        await self._finalize(c)

    async def _finalize(self, c: Container) -> None:
        """The container's process has exited (or its shim vanished): record it, tell everyone."""
        self.links.pop(c.id, None)
        exit_doc: dict[str, Any] = {}
        for _ in range(50):
            try:
                exit_doc = json.loads((c.dir / "exit.json").read_text())
                break
            except (OSError, ValueError):
                await asyncio.sleep(0.02)
        c.state.status, c.state.pid = "exited", 0
        c.state.exit_code = int(exit_doc.get("exit_code", 255))
        c.state.finished_at = str(exit_doc.get("finished_at") or rfc3339_nano())
        await rootfs.unmount(c.dir)
        self.mounts.stop(c)
        await self.network.detach(c.id)
        if c.id in self.containers:
            c.save()
        for sub in self.subscribers.pop(c.id, set()):
            sub.end()
        for fut in self.exit_waiters.pop(c.id, []):
            if not fut.done():
                fut.set_result(c.state.exit_code)
        self._publish(c, "die", exitCode=str(c.state.exit_code))
        if c.host_config.get("AutoRemove") and c.id in self.containers:
            await self.remove(c.id, force=True)
        elif c.id in self.containers:
            self.restarts.after_exit(c)

    # ---- stop, kill, restart --------------------------------------------------------
    async def kill(self, ref: str, signal: str | None) -> None:
        c = self.get(ref)
        try:
            sig = spec.signal_number(signal)
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
        if not c.state.running:
            raise Conflict(f"Container {c.id} is not running")
        self._refuse_restarting(c)
        exited = self.wait_future(c.id, "next-exit")
        await self._signal(c, sig)
        self._publish(c, "kill", signal=str(sig))
        if sig == 9:  # as Docker: SIGKILL returns once the container is gone
            try:
                await asyncio.wait_for(asyncio.shield(exited), 10)
            except asyncio.TimeoutError:
                log.warning("container %s survived SIGKILL for 10 s", c.short_id)

    async def _signal(self, c: Container, sig: int) -> None:
        try:
            await self.runtime.kill(c.id, sig)
        except RuntimeError_ as exc:
            log.warning("kill %s %s: %s", c.short_id, sig, exc)

    async def _end_restart_wait(self, c: Container) -> bool:
        """Cancel a pending restart; False if a restart by policy got there first (it is running)."""
        async with self._lock(c.id):  # a policy start in flight finishes first
            return c.state.status == "restarting" and self.restarts.cancel(c)

    def _refuse_restarting(self, c: Container) -> None:
        if c.state.status == "restarting":
            raise Conflict(f"Container {c.id} is restarting, wait until the container is running")

    async def stop(self, ref: str, timeout: int | None, signal: str | None = None) -> None:
        c = self.get(ref)
        if c.state.status == "restarting" and await self._end_restart_wait(c):  # it only has to stay down
            c.state.manually_stopped = True
            c.save()
            self._publish(c, "stop")
            return
        if not c.state.running:
            raise NotModified("container already stopped")
        try:
            sig = spec.signal_number(signal or c.config.get("StopSignal") or "SIGTERM")
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
        wait = timeout if timeout is not None else int(c.config.get("StopTimeout") or 10)
        c.state.manually_stopped = True
        exited = self.wait_future(c.id, "next-exit")
        await self._signal(c, sig)
        if wait < 0:
            await exited
        else:
            try:
                await asyncio.wait_for(asyncio.shield(exited), wait)
            except asyncio.TimeoutError:
                await self._signal(c, 9)
                await exited
        self._publish(c, "stop")

    async def restart(self, ref: str, timeout: int | None) -> None:
        try:
            await self.stop(ref, timeout)
        except NotModified:
            pass
        await self.start(ref)
        self._publish(self.get(ref), "restart")

    async def pause(self, ref: str, pause: bool) -> None:
        c = self.get(ref)
        if not c.state.running:
            raise Conflict(f"Container {c.id} is not running")
        self._refuse_restarting(c)
        if pause and c.state.status == "paused":
            raise Conflict(f"Container {c.id} is already paused")
        if not pause and c.state.status != "paused":
            raise Conflict(f"Container {c.id} is not paused")
        await (self.runtime.pause(c.id) if pause else self.runtime.resume(c.id))
        c.state.status = "paused" if pause else "running"
        c.save()
        self._publish(c, "pause" if pause else "unpause")

    # ---- wait, remove, rename, prune ------------------------------------------------
    def wait_future(self, ref: str, condition: str) -> asyncio.Future[int]:
        c = self.get(ref)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if condition == "removed":
            self.remove_waiters.setdefault(c.id, []).append(fut)
        elif condition in ("", "not-running") and not c.state.running:
            fut.set_result(c.state.exit_code)
        elif condition in ("", "not-running", "next-exit"):
            self.exit_waiters.setdefault(c.id, []).append(fut)
        else:
            raise InvalidParameter(f"invalid condition: {condition!r}")
        return fut

    async def remove(self, ref: str, force: bool, volumes: bool = False) -> None:
        """`docker rm [-f] [-v]`: -v (and --rm) also removes the container's anonymous volumes."""
        c = self.get(ref)
        if c.state.status == "removing":
            return
        if c.state.status == "restarting":
            if not force:
                raise Conflict(f'cannot remove container "{c.name}": container is restarting: stop the container before removing or force remove')
            await self._end_restart_wait(c)
        if c.state.running:
            if not force:
                raise Conflict(
                    f'cannot remove container "{c.name}": container is running: stop the container before removing or force remove'
                )
            exited = self.wait_future(c.id, "next-exit")
            await self._signal(c, 9)
            try:
                await asyncio.wait_for(asyncio.shield(exited), 15)
            except asyncio.TimeoutError:
                log.warning("container %s did not die; removing anyway", c.short_id)
        if c.state.status == "removing" or c.id not in self.containers:
            return
        c.state.status = "removing"
        await self.execs.forget_container(c.id)
        await rootfs.unmount(c.dir)
        await self.network.forget(c.id)
        if self._runtime_knows(c):
            await self.runtime.delete(c.id)
        await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, c.dir, True)
        self.containers.pop(c.id, None)
        self.locks.pop(c.id, None)
        self.mounts.release(c, volumes or bool(c.host_config.get("AutoRemove")))
        for fut in self.remove_waiters.pop(c.id, []):
            if not fut.done():
                fut.set_result(c.state.exit_code)
        self._publish(c, "destroy")

    def rename(self, ref: str, new_name: str) -> None:
        c = self.get(ref)
        if not new_name or not NAME_RE.match(new_name):
            raise InvalidParameter(f"Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        full = "/" + new_name.lstrip("/")
        if full == c.name:
            raise InvalidParameter("Renaming a container with the same name as its current name")
        self._check_name(full, ignore=c.id)
        old = c.name
        c.name = full
        c.save()
        self.network.rename(c.id, full)
        self._publish(c, "rename", oldName=old)

    async def prune(self, until: float | None = None, labels: list[str] | None = None) -> list[str]:
        from toolbox_agent.containers.views import matches_labels

        removed = []
        for c in list(self.containers.values()):
            if c.state.running or (labels and not matches_labels(c, labels)):
                continue
            if until is not None and created_seconds(c) > until:
                continue
            await self.remove(c.id, force=False)
            removed.append(c.id)
        return removed

    # ---- attach, resize -------------------------------------------------------------
    def subscribe(self, ref: str, stdout: bool, stderr: bool) -> tuple[Container, Subscriber]:
        c = self.get(ref)
        sub = Subscriber(stdout, stderr)
        if c.state.status == "removing":
            sub.end()  # otherwise it waits for the next start (`docker start -a` attaches first)
        else:
            self.subscribers.setdefault(c.id, set()).add(sub)
        return c, sub

    def unsubscribe(self, cid: str, sub: Subscriber) -> None:
        self.subscribers.get(cid, set()).discard(sub)

    async def send_stdin(self, cid: str, data: bytes) -> None:
        """Container stdin; b"" closes it. Buffered until the container starts."""
        link = self.links.get(cid)
        if link is None:
            self.pending_stdin.setdefault(cid, []).append(data)
            return
        try:
            await link.send(frames.K_STDIN if data else frames.K_STDIN_CLOSE, data)
        except (ConnectionError, RuntimeError):
            pass

    async def resize(self, ref: str, height: int, width: int) -> None:
        c = self.get(ref)
        link = self.links.get(c.id)
        if link is not None and c.tty:
            await link.send(frames.K_RESIZE, json.dumps({"h": height, "w": width}).encode())

    @contextlib.asynccontextmanager
    async def rootfs(self, ref: str) -> AsyncIterator[Path]:
        """The container's files as its processes see them (`docker cp`): a running container's
        through /proc/PID/root, its mounts included; otherwise its rootfs mounted for the
        duration with its binds and volumes bound in, as Docker does."""
        c = self.get(ref)
        live = volumemounts.live_root(c.state.pid) if c.state.running else None
        if live is not None:
            yield live
            return
        async with self._lock(c.id):
            mounted_here = not rootfs.is_mounted(c.rootfs)
            if mounted_here:
                await rootfs.mount(list(self.images.get(c.image_id).layer_dirs), c.dir)
            bound = volumemounts.bind_into(c.rootfs, self.mounts.paths(c))
            try:
                yield c.rootfs
            finally:
                volumemounts.unbind(bound)
                if mounted_here and not c.state.running:
                    await rootfs.unmount(c.dir)

    # ---- recovery after an agent restart ---------------------------------------------
    async def recover(self) -> None:
        """Containers as the agent left them; restarts by policy wait for restarts.release()."""
        began = time.monotonic()
        self.restarts.hold()
        await self.network.recover()  # bridges and NAT first: containers may start again below
        for cdir in sorted(self.dir.iterdir()) if self.dir.is_dir() else []:
            try:
                c = Container.load(cdir)
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping %s: %s", cdir, exc)
                continue
            self.containers[c.id] = c
            if c.state.status == "removing":
                await self.remove(c.id, force=True)
            elif c.state.running:
                try:
                    link = await self._connect_once(c)
                except OSError:
                    await self._finalize(c)  # exit.json tells the code, or 255 (lost, e.g. a reboot)
                    continue
                link.started.set()
                self.mounts.reattach(c)
                self.links[c.id] = link
                link.task = asyncio.ensure_future(self._pump(c, link))
            else:
                self.restarts.at_boot(c)
        log.info("recovered %d containers (%d running) in %.1f s", len(self.containers), len(self.links),
                 time.monotonic() - began)

    async def _connect_once(self, c: Container) -> Link:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.shim_socket(c)))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise OSError(str(exc)) from exc
        return Link(reader, writer)
