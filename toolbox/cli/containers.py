"""Container commands for people without a docker CLI: run, ps, images, pull, logs, exec,
stop, rm, rmi, inspect. Each parses docker's flags, calls toolbox.engine, renders with rich.

The instance is chosen with -n/--name (also --instance), as everywhere in toolbox; only
`run` differs: there --name is the container's name (as in docker), so it takes --instance.
`logs` and `stop` are shared with the VM: without a container they mean the VM's serial
console and `toolbox down` (boot2docker's alias), with one they mean the container.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Optional

import typer

InstanceOpt = Annotated[str, typer.Option("--name", "-n", "--instance", help="Instance name.")]
RunInstanceOpt = Annotated[str, typer.Option("--instance", help="Instance name (--name is the container's).")]
Many = Annotated[Optional[list[str]], typer.Option(show_default=False)]
# Everything after the image (or container) is the command, flags included: `run IMG sh -c ...`.
COMMAND_CONTEXT = {"allow_interspersed_args": False}


def _client(name: str) -> Any:
    from toolbox.engine.client import EngineClient

    return EngineClient.for_instance(name)


def run(
    image: Annotated[str, typer.Argument(help="Image to run.")],
    command: Annotated[Optional[list[str]], typer.Argument(help="Command and its arguments.")] = None,
    instance: RunInstanceOpt = "default",
    name: Annotated[Optional[str], typer.Option("--name", help="Container name.")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background, print its id.")] = False,
    rm: Annotated[bool, typer.Option("--rm", help="Remove the container when it exits.")] = False,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Keep stdin open.")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a terminal.")] = False,
    env: Annotated[Optional[list[str]], typer.Option("--env", "-e", help="KEY=VALUE (repeatable).")] = None,
    volume: Annotated[Optional[list[str]], typer.Option("--volume", "-v", help="SRC:DST[:ro] (repeatable).")] = None,
    publish: Annotated[Optional[list[str]], typer.Option("--publish", "-p", help=r"Publish a port: \[IP:]HOST:CONTAINER\[/udp].")] = None,
    workdir: Annotated[Optional[str], typer.Option("--workdir", "-w", help="Working directory.")] = None,
    user: Annotated[Optional[str], typer.Option("--user", "-u", help="USER[:GROUP].")] = None,
    entrypoint: Annotated[Optional[str], typer.Option("--entrypoint", help="Override the image's entrypoint.")] = None,
    hostname: Annotated[Optional[str], typer.Option("--hostname", help="The container's host name.")] = None,
    label: Annotated[Optional[list[str]], typer.Option("--label", "-l", help="KEY=VALUE (repeatable).")] = None,
    network: Annotated[Optional[str], typer.Option("--network", "--net", help="bridge (default), host, none, or a network's name.")] = None,
    restart: Annotated[Optional[str], typer.Option("--restart", help="no, always, unless-stopped or on-failure[:N].")] = None,
) -> None:
    """Run a command in a new container; exits with the container's exit code.

    Example: toolbox run --rm -it -v "$PWD":/src -w /src busybox sh

    Example: toolbox run -d --name web --restart unless-stopped -p 8080:80 nginx
    """
    from toolbox.cli.engine_views import PullProgress
    from toolbox.engine import session

    opts = session.RunOptions(image, command or [], name, detach, rm, interactive, tty, env or [], volume or [],
                              publish or [], workdir, user, entrypoint, hostname, label or [], network, restart)
    progress = PullProgress(summary_to_stderr=True)
    try:
        code = session.run(_client(instance), opts, progress)
    finally:
        progress.stop()
    raise typer.Exit(code)


def exec_(
    container: Annotated[str, typer.Argument(help="Container name or id.")],
    command: Annotated[list[str], typer.Argument(help="Command and its arguments.")],
    instance: InstanceOpt = "default",
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Keep stdin open.")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a terminal.")] = False,
    env: Annotated[Optional[list[str]], typer.Option("--env", "-e", help="KEY=VALUE (repeatable).")] = None,
    workdir: Annotated[Optional[str], typer.Option("--workdir", "-w", help="Working directory.")] = None,
    user: Annotated[Optional[str], typer.Option("--user", "-u", help="USER[:GROUP].")] = None,
) -> None:
    """Run a command in a running container; exits with its exit code.

    Example: toolbox exec -it web sh
    """
    from toolbox.engine import session

    code = session.exec_(_client(instance), container, command, interactive=interactive, tty=tty, detach=detach,
                         env=env or [], workdir=workdir, user=user)
    raise typer.Exit(code)


def ps(
    instance: InstanceOpt = "default",
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show stopped containers too.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the ids.")] = False,
) -> None:
    """List containers (running ones, or all with -a).

    Example: toolbox ps -a
    """
    from toolbox.cli.engine_views import containers_table, short_id, stdout_console

    docs = _client(instance).containers(all=all_)
    if quiet:
        typer.echo("".join(short_id(d["Id"]) + "\n" for d in docs), nl=False)
        return
    stdout_console().print(containers_table(docs))


def images(
    instance: InstanceOpt = "default",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the ids.")] = False,
) -> None:
    """List the images in the instance.

    Example: toolbox images
    """
    from toolbox.cli.engine_views import images_table, short_id, stdout_console

    docs = _client(instance).images()
    if quiet:
        typer.echo("".join(short_id(d["Id"]) + "\n" for d in docs), nl=False)
        return
    stdout_console().print(images_table(docs))


def pull(
    image: Annotated[str, typer.Argument(help="Image reference (NAME[:TAG] or NAME@DIGEST).")],
    instance: InstanceOpt = "default",
) -> None:
    """Pull an image into the instance, showing each layer's progress.

    Example: toolbox pull busybox:latest
    """
    from toolbox.cli.engine_views import PullProgress

    progress = PullProgress()
    try:
        for message in _client(instance).pull(image):
            progress(message)
    finally:
        progress.stop()


def logs(
    container: Annotated[Optional[str], typer.Argument(help="Container (none: the VM's serial console).")] = None,
    instance: InstanceOpt = "default",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output.")] = False,
    tail: Annotated[str, typer.Option("--tail", help="Lines from the end (a container's), or all.")] = "all",
    timestamps: Annotated[bool, typer.Option("--timestamps", help="Prefix each line with its time.")] = False,
) -> None:
    """Print a container's output, or without one the VM's serial console.

    Example: toolbox logs -f web
    """
    if container is None:
        from toolbox.cli.info import serial_logs

        serial_logs(instance, follow)
        return
    from toolbox.engine import stdio

    client = _client(instance)
    tty = bool(client.inspect_container(container).get("Config", {}).get("Tty"))
    resp = client.logs(container, follow=follow, tail=tail, timestamps=timestamps)
    stdio.copy_output(resp.chunks(), tty, sys.stdout.buffer, sys.stderr.buffer)


def stop(
    containers: Annotated[Optional[list[str]], typer.Argument(help="Containers (none: stop the VM).")] = None,
    instance: InstanceOpt = "default",
    time_: Annotated[Optional[int], typer.Option("--time", "-t", help="Seconds before a container is killed.")] = None,
    timeout: Annotated[float, typer.Option(help="VM: seconds to wait for a clean shutdown.")] = 30.0,
) -> None:
    """Stop containers; without one, shut the VM down (as `toolbox down`).

    Example: toolbox stop web
    """
    if not containers:
        from toolbox.cli.vm import down

        down(instance, timeout)
        return
    client = _client(instance)
    _each(containers, lambda ref: client.stop(ref, time_))


def rm(
    containers: Annotated[list[str], typer.Argument(help="Containers to remove.")],
    instance: InstanceOpt = "default",
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill running ones first.")] = False,
    volumes: Annotated[bool, typer.Option("--volumes", "-v", help="Remove their anonymous volumes.")] = False,
) -> None:
    """Remove containers.

    Example: toolbox rm -f web
    """
    client = _client(instance)
    _each(containers, lambda ref: client.remove(ref, force=force, volumes=volumes))


def rmi(
    images_: Annotated[list[str], typer.Argument(metavar="IMAGES", help="Images to remove.")],
    instance: InstanceOpt = "default",
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove even when tagged more than once.")] = False,
) -> None:
    """Remove images (untag, then delete the layers nothing else uses).

    Example: toolbox rmi busybox
    """
    client = _client(instance)

    def remove(ref: str) -> None:
        for item in client.remove_image(ref, force=force):
            for key, value in item.items():
                typer.echo(f"{key}: {value}")

    _each(images_, remove, echo=False)


def inspect(
    refs: Annotated[list[str], typer.Argument(metavar="NAMES", help="Containers or images.")],
    instance: InstanceOpt = "default",
) -> None:
    """Print containers' or images' full documents as JSON.

    Example: toolbox inspect web | jq '.[0].State'
    """
    from toolbox.errors import EngineError

    client = _client(instance)
    docs: list[Any] = []

    def find(ref: str) -> None:
        for getter in (client.inspect_container, client.inspect_image):
            try:
                docs.append(getter(ref))
                return
            except EngineError as exc:
                if exc.status != 404:
                    raise
        raise EngineError(404, f"No such object: {ref}")

    failed = _each(refs, find, echo=False, exit_on_error=False)
    typer.echo(json.dumps(docs, indent=4))
    if failed:
        raise typer.Exit(1)


def _each(refs: list[str], action: Any, echo: bool = True, exit_on_error: bool = True) -> bool:
    """Apply `action` to each ref as docker does: every one is tried, each failure is one
    red line, and the exit code is 1 when any failed. Returns whether any failed."""
    from toolbox.cli.ui import render_error
    from toolbox.errors import EngineError

    failed = False
    for ref in refs:
        try:
            action(ref)
        except EngineError as exc:
            render_error(exc, debug=False)
            failed = True
            continue
        if echo:
            typer.echo(ref)
    if failed and exit_on_error:
        raise typer.Exit(1)
    return failed


def register(app: typer.Typer) -> None:
    for fn, cmd in ((run, "run"), (exec_, "exec")):
        app.command(cmd, context_settings=COMMAND_CONTEXT)(fn)
    for fn, cmd in ((ps, "ps"), (images, "images"), (pull, "pull"), (logs, "logs"), (stop, "stop"),
                    (rm, "rm"), (rmi, "rmi"), (inspect, "inspect")):
        app.command(cmd)(fn)
