"""The typer app: thin commands over toolbox.instance / toolbox.state.

Errors are turned into one red line and an exit code in ONE place: ToolboxGroup.invoke.
A traceback is shown only with --debug. Commands live in vm.py (lifecycle), info.py
(everything that only looks) and containers.py (docker's run, ps, ... over the engine
API); each registers boot2docker's aliases as hidden commands.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer
from typer.core import TyperGroup


class ToolboxGroup(TyperGroup):
    """Runs every command under the one error handler."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors, --help, exits
            raise
        except (Exception, KeyboardInterrupt) as exc:
            from toolbox.cli.ui import render_error

            debug = bool((ctx.obj or {}).get("debug"))
            raise typer.Exit(render_error(exc, debug)) from None


app = typer.Typer(
    cls=ToolboxGroup,
    name="toolbox",
    help="Linux containers on your Mac: a small Linux VM, booted and looked after from here.\n\n"
    "Start with:  toolbox init && toolbox up && eval \"$(toolbox shellinit)\"",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Log every external command and show tracebacks."),
) -> None:
    ctx.obj = {"debug": debug}
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s", stream=sys.stderr)


from toolbox.cli import cache as _cache  # noqa: E402
from toolbox.cli import containers as _containers  # noqa: E402
from toolbox.cli import info as _info  # noqa: E402  (registers its commands on app)
from toolbox.cli import vm as _vm  # noqa: E402

_vm.register(app)
_info.register(app)
_containers.register(app)
_cache.register(app)

