"""/networks/...: create, ls, inspect, rm, connect, disconnect, prune (Docker's shapes)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from toolbox_agent.api import shapes
from toolbox_agent.api.args import parse_time
from toolbox_agent.containers.engine import ContainerEngine
from toolbox_agent.containers.errors import NoSuchContainer
from toolbox_agent.http import ApiError, Request, Response, Route, empty_response, json_response
from toolbox_agent.network.errors import NetworkError
from toolbox_agent.network.views import network_doc


ENDPOINT: shapes.Shape = {"Aliases": shapes.STRINGS, "IPAMConfig": {"IPv4Address": "string"}}
CREATE: shapes.Shape = {
    "Name": "string", "Driver": "string", "Internal": "bool", "Attachable": "bool", "Labels": shapes.STR_MAP,
    "Options": shapes.STR_MAP, "IPAM": {"Driver": "string", "Config": [{"Subnet": "string", "Gateway": "string"}]},
}  # fmt: skip
CONNECT: shapes.Shape = {"Container": "string", "EndpointConfig": ENDPOINT, "Force": "bool"}


def network_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def wrapped(req: Request) -> Response:
        try:
            return await handler(req)
        except NetworkError as exc:
            raise ApiError(exc.status, str(exc)) from None
        except NoSuchContainer as exc:
            raise ApiError(404, str(exc)) from None

    return wrapped


def routes(engine: ContainerEngine) -> list[Route]:
    nets = engine.network

    @network_errors
    async def list_(req: Request) -> Response:
        return json_response([network_doc(n, None) for n in nets.list(req.filters())])

    @network_errors
    async def inspect(req: Request) -> Response:
        net = nets.get(req.path_params["id"])
        return json_response(network_doc(net, nets.members(net)))

    @network_errors
    async def create(req: Request) -> Response:
        body = req.json_object()
        shapes.check(body, CREATE, "CreateRequest")
        net = await nets.create(body)
        return json_response({"Id": net.id, "Warning": ""}, 201)

    @network_errors
    async def remove(req: Request) -> Response:
        await nets.remove(req.path_params["id"])
        return empty_response(204)

    @network_errors
    async def connect(req: Request) -> Response:
        body = req.json_object()
        shapes.check(body, CONNECT, "ConnectOptions")
        c = engine.get(str(body.get("Container") or ""))
        await nets.connect(req.path_params["id"], c.id, body.get("EndpointConfig") or {})
        return empty_response(200)

    @network_errors
    async def disconnect(req: Request) -> Response:
        body = req.json_object()
        shapes.check(body, CONNECT, "DisconnectOptions")
        c = engine.get(str(body.get("Container") or ""))
        await nets.disconnect(req.path_params["id"], c.id, bool(body.get("Force")))
        return empty_response(200)

    @network_errors
    async def prune(req: Request) -> Response:
        filters = req.filters()
        until = parse_time("until", filters["until"][0]) if filters.get("until") else None
        removed = await nets.prune(until, filters.get("label") or [])
        return json_response({"NetworksDeleted": removed})

    return [
        Route("GET", "/networks", list_),
        Route("POST", "/networks/create", create),
        Route("POST", "/networks/prune", prune),
        Route("GET", "/networks/{id}", inspect),
        Route("DELETE", "/networks/{id}", remove),
        Route("POST", "/networks/{id}/connect", connect),
        Route("POST", "/networks/{id}/disconnect", disconnect),
    ]
