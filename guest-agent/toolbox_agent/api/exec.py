"""/containers/{id}/exec and /exec/{id}/...: docker exec."""

from __future__ import annotations

from toolbox_agent.api import shapes
from toolbox_agent.api.containers import engine_errors
from toolbox_agent.api.streams import hijack_session
from toolbox_agent.containers.engine import ContainerEngine
from toolbox_agent.http import Hijack, Request, Response, Route, empty_response, json_response


def routes(engine: ContainerEngine) -> list[Route]:
    execs = engine.execs

    @engine_errors
    async def create(req: Request) -> Response:
        body = req.json_object()
        shapes.check(body, shapes.EXEC_CONFIG, "ExecOptions")
        e = execs.create(req.path_params["id"], body)
        return json_response({"Id": e.id}, 201)

    @engine_errors
    async def start(req: Request) -> Response | Hijack:
        body = req.json_object()
        shapes.check(body, shapes.EXEC_CONFIG, "ExecStartOptions")
        detach = bool(body.get("Detach"))
        session = await execs.start(req.path_params["id"], detach)
        if detach:
            return json_response({}, 200)
        return hijack_session(session)

    @engine_errors
    async def resize(req: Request) -> Response:
        await execs.resize(req.path_params["id"], req.int_arg("h", 0) or 0, req.int_arg("w", 0) or 0)
        return empty_response(200)

    @engine_errors
    async def inspect(req: Request) -> Response:
        return json_response(execs.get(req.path_params["id"]).inspect())

    return [
        Route("POST", "/containers/{id}/exec", create),
        Route("POST", "/exec/{id}/start", start),
        Route("POST", "/exec/{id}/resize", resize),
        Route("GET", "/exec/{id}/json", inspect),
    ]
