"""/containers/...: create, start, attach, wait, logs, stop, kill, rm, ps, inspect, ..."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from toolbox_agent.api import shapes
from toolbox_agent.api.args import parse_time, time_arg
from toolbox_agent.api.streams import hijack_session, stream_type
from toolbox_agent import system
from toolbox_agent.containers import archive, resources, stats, views
from toolbox_agent.containers.engine import ContainerEngine
from toolbox_agent.containers.errors import Conflict, InvalidParameter, NoSuchContainer, NoSuchExec, NotModified
from toolbox_agent.containers.frames import docker_frame
from toolbox_agent.containers.logs import read_entries, stream_entries
from toolbox_agent.containers.runtime import run_command
from toolbox_agent.containers.stdio import Session
from toolbox_agent.containers.volumemounts import ReadOnlyTarget
from toolbox_agent.network.errors import NetworkError
from toolbox_agent.http import ApiError, Hijack, Request, Response, Route, empty_response, json_response

R = TypeVar("R", Response, Response | Hijack)


def engine_errors(handler: Callable[[Request], Awaitable[R]]) -> Callable[[Request], Awaitable[R]]:
    """Map the engine's (and the image store's) errors to Docker's statuses."""

    @functools.wraps(handler)
    async def wrapped(req: Request) -> R:
        try:
            return await handler(req)
        except (NoSuchContainer, NoSuchExec) as exc:
            raise ApiError(404, str(exc)) from None
        except Conflict as exc:
            raise ApiError(409, str(exc)) from None
        except InvalidParameter as exc:
            raise ApiError(400, str(exc)) from None
        except NotModified:
            return empty_response(304)  # type: ignore[return-value]
        except NetworkError as exc:
            raise ApiError(exc.status, str(exc)) from None
        except Exception as exc:
            name = type(exc).__name__
            if name == "ImageNotFound":
                raise ApiError(404, str(exc)) from None
            if name == "InvalidReference":
                raise ApiError(400, str(exc)) from None
            raise

    return wrapped


def routes(engine: ContainerEngine) -> list[Route]:
    @engine_errors
    async def create(req: Request) -> Response:
        body = req.json_object()
        shapes.check(body, shapes.CONFIG, "CreateRequest")
        c = engine.create(body, req.arg("name") or None)
        return json_response({"Id": c.id, "Warnings": []}, 201)

    @engine_errors
    async def list_(req: Request) -> Response:
        filters = req.filters()
        show_all = req.flag("all")
        limit = req.int_arg("limit", -1) or -1
        found = [c for c in engine.containers.values() if (show_all or limit > 0 or c.state.running) and views.matches(c, filters)]
        found.sort(key=lambda c: c.created, reverse=True)
        if limit > 0:
            found = found[:limit]
        return json_response([views.summary_doc(c, engine.network) for c in found])

    @engine_errors
    async def inspect(req: Request) -> Response:
        return json_response(views.inspect_doc(engine.get(req.path_params["id"]), engine.network))

    @engine_errors
    async def start(req: Request) -> Response:
        await engine.start(req.path_params["id"])
        return empty_response(204)

    @engine_errors
    async def stop(req: Request) -> Response:
        await engine.stop(req.path_params["id"], req.int_arg("t"), req.arg("signal"))
        return empty_response(204)

    @engine_errors
    async def restart(req: Request) -> Response:
        await engine.restart(req.path_params["id"], req.int_arg("t"))
        return empty_response(204)

    @engine_errors
    async def kill(req: Request) -> Response:
        await engine.kill(req.path_params["id"], req.arg("signal") or "SIGKILL")
        return empty_response(204)

    @engine_errors
    async def pause(req: Request) -> Response:
        await engine.pause(req.path_params["id"], True)
        return empty_response(204)

    @engine_errors
    async def unpause(req: Request) -> Response:
        await engine.pause(req.path_params["id"], False)
        return empty_response(204)

    @engine_errors
    async def remove(req: Request) -> Response:
        await engine.remove(req.path_params["id"], req.flag("force"), req.flag("v"))
        return empty_response(204)

    @engine_errors
    async def rename(req: Request) -> Response:
        engine.rename(req.path_params["id"], req.arg("name") or "")
        return empty_response(204)

    @engine_errors
    async def update(req: Request) -> Response:
        c = engine.get(req.path_params["id"])
        warnings = resources.update(c, req.json_object())
        engine._publish(c, "update")
        return json_response({"Warnings": warnings})

    @engine_errors
    async def resize(req: Request) -> Response:
        await engine.resize(req.path_params["id"], req.int_arg("h", 0) or 0, req.int_arg("w", 0) or 0)
        return empty_response(200)

    @engine_errors
    async def wait(req: Request) -> Response:
        fut = engine.wait_future(req.path_params["id"], req.arg("condition") or "not-running")

        async def body() -> AsyncIterator[bytes]:
            yield b""  # the headers go out now; the CLI waits for them before it starts
            code = await fut
            yield json.dumps({"StatusCode": code}).encode() + b"\n"

        return Response(200, {"Content-Type": "application/json"}, body())

    @engine_errors
    async def prune(req: Request) -> Response:
        f = req.filters()
        until = parse_time("until", f["until"][0]) if f.get("until") else None
        removed = await engine.prune(until, f.get("label"))
        return json_response({"ContainersDeleted": removed or None, "SpaceReclaimed": 0})

    @engine_errors
    async def top(req: Request) -> Response:
        c = engine.get(req.path_params["id"])
        if not c.state.running:
            raise ApiError(409, f"Container {c.id} is not running")
        pids = {str(p) for p in await engine.runtime.pids(c.id)}
        args = (req.arg("ps_args") or "-ef").split()
        rc, out, err = await run_command("ps", *args)
        # ps_args is the client's: ps refusing them, or leaving out PID, is bad input (400)
        if rc != 0:
            raise ApiError(400, f"ps: {err.strip()}")
        lines = out.splitlines()
        titles = lines[0].split() if lines else []
        if "PID" not in titles:
            raise ApiError(400, "Couldn't find PID field in ps output")
        col = titles.index("PID")
        procs = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > col and fields[col] in pids:
                procs.append(fields)
        return json_response({"Titles": titles, "Processes": procs})

    @engine_errors
    async def logs(req: Request) -> Response:
        c = engine.get(req.path_params["id"])
        want_out, want_err = req.flag("stdout"), req.flag("stderr")
        if not (want_out or want_err):
            raise ApiError(400, "Bad parameters: you must choose at least one stream")
        tail_arg = req.arg("tail") or "all"
        tail = None if tail_arg == "all" else _int(tail_arg, "tail")
        since = time_arg(req, "since", 0.0) or 0.0
        until = time_arg(req, "until")
        stamps, tty = req.flag("timestamps"), c.tty

        async def body() -> AsyncIterator[bytes]:
            yield b""
            async for entry in stream_entries(c.log_path, tail=tail, since=since, until=until, follow=req.flag("follow"),
                                              still_running=lambda: c.state.running or c.state.status == "created"):  # fmt: skip
                stream = 2 if entry.stream == "stderr" else 1
                if (stream == 1 and not want_out) or (stream == 2 and not want_err):
                    continue
                data = (entry.time.encode() + b" " + entry.data) if stamps else entry.data
                yield data if tty else docker_frame(stream, data)

        return Response(200, {"Content-Type": stream_type(tty)}, body())

    @engine_errors
    async def stats_(req: Request) -> Response:
        c = engine.get(req.path_params["id"])
        stream, one_shot = req.flag("stream", True), req.flag("one-shot")
        total = system.mem_total()

        async def body() -> AsyncIterator[bytes]:
            before = None
            while True:
                now = stats.sample(stats.cgroup_dir(c.id), total) if c.state.running else stats.sample(Path("/nonexistent"), total)
                if before is not None or one_shot or stream:
                    yield json.dumps(stats.document(c.name, c.id, now, before)).encode() + b"\n"
                    if not stream:
                        return
                before = now
                await asyncio.sleep(1.0)

        return Response(200, {"Content-Type": "application/json"}, body())

    def _archive_path(req: Request) -> str:
        path = req.arg("path")
        if not path:
            raise ApiError(400, "path is required")
        return path

    @engine_errors
    async def archive_head(req: Request) -> Response:
        path = _archive_path(req)
        async with engine.rootfs(req.path_params["id"]) as root:
            try:
                doc = archive.stat_doc(root, path)
            except archive.PathError as exc:
                raise ApiError(404 if exc.missing else 400, str(exc)) from None
        return Response(200, {"X-Docker-Container-Path-Stat": _stat_header(doc), "Content-Type": "application/json"}, b"")

    @engine_errors
    async def archive_get(req: Request) -> Response:
        path = _archive_path(req)
        async with engine.rootfs(req.path_params["id"]) as root:
            try:
                doc = archive.stat_doc(root, path)
                data = await asyncio.get_running_loop().run_in_executor(None, archive.tar_path, root, path)
            except archive.PathError as exc:
                raise ApiError(404 if exc.missing else 400, str(exc)) from None
        return Response(200, {"X-Docker-Container-Path-Stat": _stat_header(doc), "Content-Type": "application/x-tar"}, data)

    @engine_errors
    async def archive_put(req: Request) -> Response:
        path = _archive_path(req)
        try:
            engine.mounts.check_writable(engine.get(req.path_params["id"]), path)
        except ReadOnlyTarget as exc:
            raise ApiError(500, str(exc)) from None
        async with engine.rootfs(req.path_params["id"]) as root:
            try:
                await asyncio.get_running_loop().run_in_executor(None, archive.extract, root, path, req.body)
            except archive.PathError as exc:
                raise ApiError(404 if exc.missing else 400, str(exc)) from None
        return empty_response(200)

    @engine_errors
    async def attach(req: Request) -> Response | Hijack:
        c, sub = engine.subscribe(req.path_params["id"], req.flag("stdout"), req.flag("stderr"))
        prelude = b""
        if req.flag("logs"):
            entries, _ = read_entries(c.log_path, None, 0.0, None)
            for e in entries:
                stream = 2 if e.stream == "stderr" else 1
                if (stream == 1 and sub.stdout) or (stream == 2 and sub.stderr):
                    prelude += e.data if c.tty else docker_frame(stream, e.data)
        if not req.flag("stream"):
            engine.unsubscribe(c.id, sub)
            sub.queue = asyncio.Queue()
            sub.end()
        want_stdin = req.flag("stdin") and bool(c.config.get("OpenStdin"))
        stdin_once = bool(c.config.get("StdinOnce"))

        async def write_stdin(data: bytes) -> None:
            await engine.send_stdin(c.id, data)

        async def close_stdin() -> None:
            if stdin_once:
                await engine.send_stdin(c.id, b"")

        async def close() -> None:
            engine.unsubscribe(c.id, sub)

        return hijack_session(Session(c.tty, sub.queue, write_stdin, close_stdin, close, stdin=want_stdin), prelude)

    return [
        Route("POST", "/containers/create", create),
        Route("GET", "/containers/json", list_),
        Route("POST", "/containers/prune", prune),
        Route("GET", "/containers/{id}/json", inspect),
        Route("POST", "/containers/{id}/start", start),
        Route("POST", "/containers/{id}/stop", stop),
        Route("POST", "/containers/{id}/restart", restart),
        Route("POST", "/containers/{id}/kill", kill),
        Route("POST", "/containers/{id}/pause", pause),
        Route("POST", "/containers/{id}/unpause", unpause),
        Route("POST", "/containers/{id}/rename", rename),
        Route("POST", "/containers/{id}/resize", resize),
        Route("POST", "/containers/{id}/update", update),
        Route("POST", "/containers/{id}/wait", wait),
        Route("POST", "/containers/{id}/attach", attach),
        Route("GET", "/containers/{id}/logs", logs),
        Route("GET", "/containers/{id}/top", top),
        Route("GET", "/containers/{id}/stats", stats_),
        Route("HEAD", "/containers/{id}/archive", archive_head),
        Route("GET", "/containers/{id}/archive", archive_get),
        Route("PUT", "/containers/{id}/archive", archive_put),
        Route("DELETE", "/containers/{id}", remove),
    ]


def _stat_header(doc: dict[str, object]) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {value!r}") from None
