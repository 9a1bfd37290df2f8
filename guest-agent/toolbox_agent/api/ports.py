"""GET /toolbox/v1/ports: every published port, for the host agent's localhost forwards
(the contract in the brief: container, proto, host_ip, host_port, container_port)."""

from __future__ import annotations

from toolbox_agent.http import Request, Response, Route, json_response
from toolbox_agent.network.manager import NetworkManager


def routes(nets: NetworkManager) -> list[Route]:
    async def ports(req: Request) -> Response:
        return json_response(nets.published())

    return [Route("GET", "/toolbox/v1/ports", ports)]
