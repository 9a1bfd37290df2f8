"""`docker search`: the index's /v1/search where there is one, else the registry's catalog.

A term naming a registry (`127.0.0.1:5000/tutorial`) searches that registry. A bare term
searches Docker Hub's index, unless registry mirrors are configured: then the mirrors stand
in for Docker Hub (as they do for pulls), so an offline VM never reaches out to the index.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from toolbox_agent.lean import ssl_hidden

from . import reference as refs
from .errors import RegistryError
from .pull import credentials, mirror_hosts

with ssl_hidden():  # as in registry.py
    import http.client

if TYPE_CHECKING:
    from .store import ImageStore

DEFAULT_INDEX = "index.docker.io"


def split_term(term: str) -> tuple[str | None, str]:
    """(registry host or None for Docker Hub, what to look for)."""
    first, sep, rest = term.partition("/")
    if sep and (any(c in first for c in ".:") or first == "localhost"):
        return (None if first in (refs.DEFAULT_DOMAIN, DEFAULT_INDEX) else first), rest
    return None, term


def registry_host_of(server: str) -> str:
    """`https://index.docker.io/v1/`, `docker.io`, `host:5000` -> the host to talk to."""
    host = server.split("://", 1)[-1].split("/", 1)[0] or refs.DEFAULT_DOMAIN
    if host in (refs.DEFAULT_DOMAIN, DEFAULT_INDEX, refs.DEFAULT_REGISTRY_HOST):
        return refs.DEFAULT_REGISTRY_HOST
    return host


def _result(name: str, description: str = "", official: bool = False, stars: int = 0) -> dict[str, Any]:
    return {"name": name, "description": description, "star_count": stars, "is_official": official, "is_automated": False}


async def search(store: ImageStore, term: str, limit: int, auth: dict[str, str] | None) -> list[dict[str, Any]]:
    host, query = split_term(term)
    if host is None:
        mirrors = [h for h in mirror_hosts(store, refs.parse("library/busybox")) if h != refs.DEFAULT_REGISTRY_HOST]
        targets = [(h, True) for h in mirrors] or [(DEFAULT_INDEX, True)]
    else:
        targets = [(host, False)]
    results: list[dict[str, Any]] = []
    last: Exception | None = None
    for target, is_hub in targets:
        try:
            found = await asyncio.to_thread(_search_one, store, target, query, limit, is_hub, auth)
        except (RegistryError, OSError, http.client.HTTPException) as exc:
            last = exc
            continue
        results += [r for r in found if r["name"] not in {x["name"] for x in results}]
    if not results and last is not None:
        raise RegistryError(str(last))
    return results[:limit]


def _search_one(store: ImageStore, host: str, query: str, limit: int, is_hub: bool, auth: dict[str, str] | None) -> list[dict[str, Any]]:
    v1 = store.registry.search_v1(host, query, limit)
    if v1 is not None:
        return [_result(str(r.get("name", "")), str(r.get("description") or ""), bool(r.get("is_official")),
                        int(str(r.get("star_count") or 0))) for r in v1]
    needle = query.lower()
    out = []
    for repo in store.registry.catalog(host, credentials(auth)):
        if needle not in repo.lower():
            continue
        if is_hub:
            official = repo.startswith(refs.OFFICIAL_PREFIX)
            out.append(_result(repo.removeprefix(refs.OFFICIAL_PREFIX), official=official))
        else:
            out.append(_result(f"{host}/{repo}"))
    return out[:limit]
