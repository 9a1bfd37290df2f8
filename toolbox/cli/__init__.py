"""The `toolbox` command line (typer + rich; the app is in toolbox.cli.root).

`toolbox status` has a fast path that skips typer: building typer's parameter types
imports pydantic (~60 ms here), which alone would break status's 150 ms budget. The fast
path accepts only `status [-n NAME | --name NAME]`; anything else (--help, --debug ...)
goes through typer, and both print the same thing through the same error renderer.
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
    from toolbox.cli.root import app

    app()


def __getattr__(attr: str) -> Any:
    if attr == "app":  # `from toolbox.cli import app` (tests) without loading typer early
        from toolbox.cli.root import app

        return app
    raise AttributeError(attr)
