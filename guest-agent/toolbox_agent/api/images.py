"""The images resource of the Docker Engine API: thin handlers over ImageStore."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from toolbox_agent.http import ApiError, Request, Response, Route, json_response
from toolbox_agent.images import (
    ArchiveError,
    Image,
    ImageConflict,
    ImageError,
    ImageNotFound,
    ImageStore,
    InvalidReference,
    RegistryError,
)
from toolbox_agent.images.reference import parse as parse_reference

log = logging.getLogger("toolbox_agent.images")
Handler = Callable[[Request], Awaitable[Response]]
JSON = {"Content-Type": "application/json"}


def api_error(exc: ImageError) -> ApiError:
    """The HTTP status Docker gives each engine error."""
    if isinstance(exc, (InvalidReference, ArchiveError)):
        return ApiError(400, str(exc))
    if isinstance(exc, ImageNotFound):
        return ApiError(404, str(exc))
    if isinstance(exc, ImageConflict):
        return ApiError(409, str(exc))
    if isinstance(exc, RegistryError) and exc.not_found:
        return ApiError(404, str(exc))
    return ApiError(500, str(exc))


def _guard(handler: Handler) -> Handler:
    async def wrapped(req: Request) -> Response:
        try:
            return await handler(req)
        except ImageError as exc:
            raise api_error(exc) from exc

    return wrapped


def decode_registry_auth(header: str) -> dict[str, str] | None:
    """The X-Registry-Auth header: base64url JSON {username, password, serveraddress, ...}."""
    if not header:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, TypeError):
        return None
    return {k.lower(): str(v) for k, v in data.items()} if isinstance(data, dict) else None


def unix_time(created: str) -> int:
    """RFC 3339 (nanoseconds allowed) -> seconds since the epoch; 0 when absent."""
    if not created:
        return 0
    text = created.replace("Z", "+00:00")
    head, dot, frac = text.partition(".")
    if dot:
        digits = "".join(c for c in frac if c.isdigit())
        text = f"{head}.{digits[:6]}{frac[len(digits):]}"
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0


def summary(image: Image, api_version: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Id": image.id,
        "ParentId": "",
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Created": unix_time(image.created),
        "Size": image.size,
        "SharedSize": -1,
        "Labels": (image.config.get("config") or {}).get("Labels") or {},
        "Containers": -1,
    }
    if api_version and _older(api_version, "1.44"):
        out["VirtualSize"] = image.size
    return out


def inspect(image: Image, api_version: str | None) -> dict[str, Any]:
    cfg = image.config
    out: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Parent": "",
        "Comment": cfg.get("comment", ""),
        "Created": image.created or "0001-01-01T00:00:00Z",
        "DockerVersion": cfg.get("docker_version", ""),
        "Author": cfg.get("author", ""),
        "Config": cfg.get("config") or {},
        "Architecture": cfg.get("architecture", ""),
        "Os": cfg.get("os", ""),
        "Size": image.size,
        "GraphDriver": {"Name": "overlay2", "Data": {"LowerDir": ":".join(str(d) for d in reversed(image.layer_dirs))}},
        "RootFS": {"Type": "layers", "Layers": [rec.diff_id for rec in image.layers]},
        "Metadata": {"LastTagTime": datetime.fromtimestamp(image.stored_at, timezone.utc).isoformat().replace("+00:00", "Z")},
    }
    if cfg.get("variant"):
        out["Variant"] = cfg["variant"]
    if api_version and _older(api_version, "1.44"):
        out.update({"Container": "", "ContainerConfig": {}, "VirtualSize": image.size})
    return out


def history(image: Image, layer_size: Callable[[str], int]) -> list[dict[str, Any]]:
    """Docker's history rows, newest first; layer_size(diff_id) gives each layer's size."""
    entries = image.config.get("history") or [{} for _ in image.layers]
    layers = iter(image.layers)
    out = []
    for entry in entries:
        rec = None if entry.get("empty_layer") else next(layers, None)
        out.append({"Id": "<missing>", "Created": unix_time(entry.get("created", "")), "CreatedBy": entry.get("created_by", ""),
                    "Tags": None, "Size": layer_size(rec.diff_id) if rec else 0, "Comment": entry.get("comment", "")})
    out.reverse()
    if out:
        out[0].update({"Id": image.id, "Tags": image.repo_tags or None})
    return out


def _older(version: str, than: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".") if p.isdigit())

    return key(version) < key(than)


def _stream_json(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\r\n" for line in lines)


def _pull_ref(req: Request) -> tuple[str, bool]:
    """(reference, all tags?): like Docker, a name with neither tag nor digest means every tag."""
    image = req.arg("fromImage") or ""
    tag = req.arg("tag") or ""
    if not image:
        if req.arg("fromSrc"):
            raise ApiError(501, "importing from a tarball (fromSrc) is not supported")
        raise ApiError(400, "fromImage is required")
    if tag:
        image += ("@" if ":" in tag else ":") + tag
    try:
        parsed = parse_reference(image, default_tag=False)
    except InvalidReference as exc:
        raise ApiError(400, str(exc)) from exc
    return image, parsed.tag is None and parsed.digest is None


async def progress_stream(start: Callable[[Callable[[dict[str, Any]], None]], Awaitable[Any]]) -> Response:
    """Run a job that reports Docker progress messages; stream them as JSON lines.

    Like Docker: a job that fails before its first message gets a plain error answer (with
    its status); one that fails later ends the stream with an errorDetail message.
    """
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    task = asyncio.ensure_future(start(queue.put_nowait))
    task.add_done_callback(lambda _t: queue.put_nowait(None))
    first = await queue.get()
    if first is None:
        exc = task.exception()
        if isinstance(exc, ImageError):
            raise api_error(exc)
        if exc is not None:
            log.error("image job failed", exc_info=exc)
            raise ApiError(500, str(exc))
        return Response(200, JSON, b"")

    async def body() -> AsyncIterator[bytes]:
        item: dict[str, Any] | None = first
        while item is not None:
            yield json.dumps(item).encode() + b"\r\n"
            item = await queue.get()
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, ImageError):
                log.error("image job failed", exc_info=exc)
            message = str(exc) or type(exc).__name__
            yield json.dumps({"errorDetail": {"message": message}, "error": message}).encode() + b"\r\n"

    return Response(200, JSON, body())


def routes(store: ImageStore) -> list[Route]:
    async def create(req: Request) -> Response:
        ref, all_tags = _pull_ref(req)
        auth = decode_registry_auth(req.headers.get("x-registry-auth", ""))
        platform = req.arg("platform") or None
        return await progress_stream(
            lambda emit: store.pull_all_tags(ref, emit, auth) if all_tags else store.pull(ref, emit, auth, platform)
        )

    async def push(req: Request) -> Response:
        name, tag = req.path_params["name"], req.arg("tag") or ""
        ref = f"{name}:{tag}" if tag else name
        auth = decode_registry_auth(req.headers.get("x-registry-auth", ""))
        return await progress_stream(lambda emit: store.push(ref, emit, auth))

    async def list_images(req: Request) -> Response:
        filters = req.filters()
        dangling = None
        if filters.get("dangling"):
            dangling = filters["dangling"][-1].lower() in ("true", "1")
        images = store.list(dangling=dangling, reference=filters.get("reference"))
        for label in filters.get("label", []):
            key, eq, value = label.partition("=")
            images = [im for im in images if _has_label(im, key, value if eq else None)]
        for ref in filters.get("before", []):
            pivot = unix_time(store.get(ref).created)
            images = [im for im in images if unix_time(im.created) < pivot]
        for ref in filters.get("since", []):
            pivot = unix_time(store.get(ref).created)
            images = [im for im in images if unix_time(im.created) > pivot]
        return json_response([summary(im, req.api_version) for im in images])

    async def inspect_image(req: Request) -> Response:
        return json_response(inspect(store.get(req.path_params["name"]), req.api_version))

    async def history_image(req: Request) -> Response:
        image = store.get(req.path_params["name"])
        return json_response(history(image, lambda diff_id: int(store.layer_info(diff_id).get("size", 0))))

    async def tag_image(req: Request) -> Response:
        repo = req.arg("repo") or ""
        if not repo:
            raise ApiError(400, "repository name (repo) is required")
        store.tag(req.path_params["name"], repo, req.arg("tag") or "")
        return Response(201, {}, b"")

    async def remove_image(req: Request) -> Response:
        records = store.remove(req.path_params["name"], force=req.flag("force"), prune=not req.flag("noprune"))
        return json_response(records)

    async def save_images(req: Request) -> Response:
        names = req.query.get("names") or ([req.path_params["name"]] if "name" in req.path_params else [])
        if not names:
            raise ApiError(400, "no image names given")
        return Response(200, {"Content-Type": "application/x-tar"}, store.save(names))

    async def load_images(req: Request) -> Response:
        lines = await store.load(req.body)
        return Response(200, JSON, _stream_json([{"stream": line + "\n"} for line in lines]))

    async def search_images(req: Request) -> Response:
        term = req.arg("term") or ""
        if not term:
            raise ApiError(400, "a search term is required")
        limit = req.int_arg("limit", 25) or 25
        if not 1 <= limit <= 100:
            raise ApiError(400, f"limit {limit} is outside the range of [1, 100]")
        auth = decode_registry_auth(req.headers.get("x-registry-auth", ""))
        results = await store.search(term, limit, auth)
        filters = req.filters()
        if filters.get("is-official"):
            want = filters["is-official"][-1].lower() in ("true", "1")
            results = [r for r in results if r["is_official"] == want]
        if filters.get("stars"):
            results = [r for r in results if r["star_count"] >= int(filters["stars"][-1] or 0)]
        return json_response(results)

    async def prune_images(req: Request) -> Response:
        filters = req.filters()
        everything = bool(filters.get("dangling")) and filters["dangling"][-1].lower() in ("false", "0")
        records, freed = store.prune(all_images=everything)
        return json_response({"ImagesDeleted": records or None, "SpaceReclaimed": freed})

    async def login(req: Request) -> Response:
        body = req.json_object()
        try:
            await store.login(str(body.get("serveraddress") or ""), str(body.get("username") or ""), str(body.get("password") or ""))
        except RegistryError as exc:
            raise ApiError(401 if exc.status in (401, 403) else 500, str(exc)) from exc
        return json_response({"Status": "Login Succeeded", "IdentityToken": ""})

    table: list[tuple[str, str, Handler]] = [
        ("POST", "/auth", login),
        ("POST", "/images/create", create),
        ("GET", "/images/json", list_images),
        ("GET", "/images/search", search_images),
        ("GET", "/images/get", save_images),
        ("POST", "/images/load", load_images),
        ("POST", "/images/prune", prune_images),
        ("GET", "/images/{name:path}/json", inspect_image),
        ("GET", "/images/{name:path}/history", history_image),
        ("GET", "/images/{name:path}/get", save_images),
        ("POST", "/images/{name:path}/tag", tag_image),
        ("POST", "/images/{name:path}/push", push),
        ("DELETE", "/images/{name:path}", remove_image),
    ]
    return [Route(method, pattern, _guard(handler)) for method, pattern, handler in table]


def _has_label(image: Image, key: str, value: str | None) -> bool:
    labels = (image.config.get("config") or {}).get("Labels") or {}
    return key in labels and (value is None or labels[key] == value)
