"""`toolbox cache ls|prune`: the downloaded guest images, and removing those no instance uses."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

cache_app = typer.Typer(help="List the cached guest images, or remove those no instance uses.", no_args_is_help=True)


def _rows() -> tuple[list[Any], dict[str, list[str]]]:
    from toolbox import images, state

    return images.cache_entries(), state.images_in_use()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@cache_app.command("ls")
def cache_ls(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List the cache: each image's sha256, size and the instances that boot it.

    Example: toolbox cache ls
    """
    entries, used = _rows()
    rows = [{"sha256": e.sha256, "size": e.size, "complete": e.complete, "used_by": used.get(e.sha256, []),
             "path": str(e.path)} for e in entries]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("the image cache is empty")
        return
    for row in rows:
        users = ", ".join(row["used_by"]) or "unused"
        state = "" if row["complete"] else " (unfinished download)"
        typer.echo(f"{row['sha256'][:12]}  {_mb(row['size']):>9}  {users}{state}")


@cache_app.command("prune")
def cache_prune(dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False) -> None:
    """Remove the cached images no instance boots (unfinished downloads after an hour).

    Example: toolbox cache prune --dry-run
    """
    from toolbox import images

    entries, used = _rows()
    gone = images.prunable(entries, set(used))
    for entry in gone:
        if not dry_run:
            images.remove_entry(entry)
        typer.echo(f"{'would remove' if dry_run else 'removed'} {entry.sha256[:12]} ({_mb(entry.size)})")
    total = sum(e.size for e in gone)
    typer.echo(f"{'would free' if dry_run else 'freed'} {_mb(total)}; {len(entries) - len(gone)} image(s) kept")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
