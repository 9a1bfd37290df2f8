"""The `toolbox` command line (typer + rich; the app is in toolbox.cli.root).

`toolbox status` and `toolbox ps` have fast paths that skip typer: building typer's
parameter types imports pydantic (~60 ms here), which alone would break status's 150 ms
budget, and the whole CLI with rich costs ps about a second. The fast paths accept only
`status [-n NAME | --name NAME]` and `ps` with -n/--name/--instance NAME, -a/--all,
-q/--quiet (flags may be joined: -aq); anything else (--help, --debug ...) goes through
typer, and both print the same thing through the same error renderer.
"""

from __future__ import annotations

import sys
from typing import Any


def _status_name(argv: list[str]) -> str | None:
    """The instance name when argv is exactly a plain status command, else None."""
    if not argv or argv[0] != "status":
        return None
    rest = argv[1:]
    if not rest:
        return "default"
    if len(rest) == 2 and rest[0] in ("-n", "--name"):
        return rest[1]
    if len(rest) == 1 and rest[0].startswith("--name="):
        return rest[0].removeprefix("--name=")
    return None


PS_FLAGS = {"-a": "all", "--all": "all", "-q": "quiet", "--quiet": "quiet"}
NAME_FLAGS = ("-n", "--name", "--instance")


def _ps_args(argv: list[str]) -> tuple[str, bool, bool] | None:
    """(instance, --all, --quiet) when argv is exactly a plain ps command, else None."""
    if not argv or argv[0] != "ps":
        return None
    name, seen, rest = "default", set(), argv[1:]
    while rest:
        word = rest.pop(0)
        if word in NAME_FLAGS and rest:
            name = rest.pop(0)
        elif word.startswith(("--name=", "--instance=")):
            name = word.split("=", 1)[1]
        elif word in PS_FLAGS:
            seen.add(PS_FLAGS[word])
        elif len(word) > 2 and word[0] == "-" and word[1] != "-" and all(f"-{c}" in PS_FLAGS for c in word[1:]):
            seen.update(PS_FLAGS[f"-{c}"] for c in word[1:])
        else:
            return None
    return name, "all" in seen, "quiet" in seen


def _fast_ps(name: str, all_: bool, quiet: bool) -> int:
    from toolbox.cli import rows
    from toolbox.engine.client import EngineClient

    try:
        docs = EngineClient.for_instance(name).containers(all=all_)
    except Exception as exc:  # the same one-line rendering typer's path gives
        from toolbox.cli.ui import render_error

        return render_error(exc, debug=False)
    if quiet:
        sys.stdout.write("".join(rows.short_id(d["Id"]) + "\n" for d in docs))
    else:
        sys.stdout.write(rows.plain_table(rows.PS_COLUMNS, rows.container_rows(docs), bold_header=_bold()))
    return 0


def _bold() -> bool:
    """Whether a header may be bold: stdout is a terminal and colour is not turned off
    (rich's own rules: NO_COLOR, TERM=dumb)."""
    import os

    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _fast_status(name: str) -> int:
    from toolbox import state

    try:
        sys.stdout.write(state.status(name).render() + "\n")
        return 0
    except Exception as exc:  # the same one-line rendering typer's path gives
        from toolbox.cli.ui import render_error

        return render_error(exc, debug=False)


def main() -> None:
    name = _status_name(sys.argv[1:])
    if name is not None:
        sys.exit(_fast_status(name))
    ps = _ps_args(sys.argv[1:])
    if ps is not None:
        sys.exit(_fast_ps(*ps))
    from toolbox.cli.root import app

    app()


def __getattr__(attr: str) -> Any:
    if attr == "app":  # `from toolbox.cli import app` (tests) without loading typer early
        from toolbox.cli.root import app

        return app
    raise AttributeError(attr)
