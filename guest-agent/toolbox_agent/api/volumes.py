"""/volumes/...: docker volume create, ls, inspect, rm, prune (the local driver only)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from toolbox_agent.http import ApiError, Request, Response, Route, empty_response, json_response
from toolbox_agent.volumes import InvalidVolume, NoSuchVolume, VolumeInUse, VolumeStore


def volume_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def wrapped(req: Request) -> Response:
        try:
            return await handler(req)
        except NoSuchVolume as exc:
            raise ApiError(404, str(exc)) from None
        except VolumeInUse as exc:
            raise ApiError(409, str(exc)) from None
        except InvalidVolume as exc:
            raise ApiError(400, str(exc)) from None

    return wrapped


def _strings(value: object, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"invalid {field}: expected an object")
    return {str(k): str(v) for k, v in value.items()}


def routes(store: VolumeStore) -> list[Route]:
    @volume_errors
    async def create(req: Request) -> Response:
        body = req.json_object()
        vol = store.create(str(body.get("Name") or ""), str(body.get("Driver") or ""),
                           _strings(body.get("Labels"), "Labels"), _strings(body.get("DriverOpts"), "DriverOpts"))  # fmt: skip
        return json_response(vol.doc(), 201)

    @volume_errors
    async def list_(req: Request) -> Response:
        return json_response({"Volumes": [v.doc() for v in store.list(req.filters())], "Warnings": []})

    @volume_errors
    async def inspect(req: Request) -> Response:
        return json_response(store.get(req.path_params["name"]).doc())

    @volume_errors
    async def remove(req: Request) -> Response:
        store.remove(req.path_params["name"], req.flag("force"))
        return empty_response(204)

    @volume_errors
    async def prune(req: Request) -> Response:
        filters = req.filters()
        for key in filters:
            if key not in ("label", "label!", "all"):
                raise ApiError(400, f"invalid filter '{key}'")
        removed, freed = store.prune(filters)  # in the loop: it publishes events
        return json_response({"VolumesDeleted": removed or None, "SpaceReclaimed": freed})

    return [
        Route("GET", "/volumes", list_),
        Route("POST", "/volumes/create", create),
        Route("POST", "/volumes/prune", prune),
        Route("GET", "/volumes/{name}", inspect),
        Route("DELETE", "/volumes/{name}", remove),
    ]
