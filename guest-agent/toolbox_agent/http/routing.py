"""Routes: `Route("GET", "/images/{name:path}/json", handler)` and the table that matches them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from toolbox_agent.http.types import Handler

_PARAM = re.compile(r"\{(\w+)(?::(path))?\}")
_VERSION_PREFIX = re.compile(r"^/v(\d+\.\d+)(/.*)$")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`/containers/{id}/json` -> a regex; `{x}` is one segment, `{x:path}` any (non-empty) rest."""
    out, pos = [], 0
    for m in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(out) + "/?$")


@dataclass
class Route:
    method: str
    pattern: str
    handler: Handler
    regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.regex = compile_pattern(self.pattern)


def split_version(path: str) -> tuple[str | None, str]:
    """`/v1.44/containers/json` -> ("1.44", "/containers/json"); unversioned -> (None, path)."""
    m = _VERSION_PREFIX.match(path)
    return (m.group(1), m.group(2)) if m else (None, path)


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = list(routes)
        # (method, path) -> a route without parameters that the scan found for exactly that
        # path: what every /_ping and /containers/json asks, without ~20 regex matches. Only
        # a route's own pattern is kept, so the table stays as small as the route list.
        self._static: dict[tuple[str, str], Route] = {}

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The first route for this method and (already unversioned, still quoted) path."""
        route = self._static.get((method, path))
        if route is not None:
            return route, {}
        allowed = ("GET", method) if method == "HEAD" else (method,)
        for route in self.routes:
            if route.method not in allowed:
                continue
            m = route.regex.match(path)
            if m:
                if route.pattern == path and "{" not in path:  # no parameters: the same answer every time
                    self._static[(method, path)] = route
                return route, {k: unquote(v) for k, v in m.groupdict().items()}
        return None
