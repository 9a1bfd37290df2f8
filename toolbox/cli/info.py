"""Commands that look or connect: status, info, ip, list, version, doctor, config,
shellinit, ssh, ssh-config (and the serial console `logs` shows). `status` imports nothing heavy (it must start fast)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from typing import Annotated, Optional

import typer

from toolbox.cli.vm import NameOpt

STATE_COLOURS = {"running": "green", "starting": "yellow", "stopped": "dim", "suspended": "cyan", "broken": "red"}


def status(name: NameOpt = "default") -> None:
    """Say whether the instance is running, stopped, suspended or broken, and why.

    Example: toolbox status -n dev
    """
    from toolbox import state

    st = state.status(name)
    typer.echo(st.render())


def info(
    name: NameOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the instance's settings, image, SSH address and state.

    Example: toolbox info --json | jq .ssh.port
    """
    from toolbox import state

    data = state.info(name)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if key == "mounts":
            value = [f"{m['host']} → {m['guest']} ({'rw' if m['writable'] else 'ro'})" for m in value]
        if isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            text = "; ".join(str(v) for v in value) or "-"
        else:
            text = str(value)
        typer.echo(f"{key:14} {text}")


def ip(name: NameOpt = "default") -> None:
    """Print the address the VM's forwarded ports are reached on (127.0.0.1).

    Example: curl http://$(toolbox ip):8080/
    """
    from toolbox import state

    typer.echo(state.ip(name))


def list_(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List every instance with its state (alias: ls).

    Example: toolbox list
    """
    from toolbox import state

    rows = state.list_instances()
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    typer.echo(f"{'NAME':20} {'STATE':10} {'DRIVER':10} SSH")
    if not rows:  # the header alone stays on stdout, for scripts; the way on, for people
        typer.echo("No instances yet: create one with `toolbox init`.", err=True)
    for r in rows:
        typer.echo(f"{r.name:20} {r.state:10} {r.driver:10} {('127.0.0.1:' + str(r.ssh_port)) if r.ssh_port else '-'}")


def version() -> None:
    """Print toolbox's version.

    Example: toolbox version
    """
    from toolbox import __version__

    typer.echo(f"toolbox {__version__}")


def serial_logs(name: str, follow: bool) -> None:
    """Print the VM's serial console (boot messages, kernel, init); `toolbox logs` without
    a container (toolbox.cli.containers.logs) comes here."""
    from toolbox import state

    path = state.require(name).serial_log
    if not path.exists():
        typer.echo(f"(no console output yet: {path})", err=True)
        return
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif not follow:
                return
            else:
                time.sleep(0.3)


def shellinit(
    name: NameOpt = "default",
    shell: Annotated[Optional[str], typer.Option(help="bash, zsh, fish, powershell or cmd (default: from $SHELL).")] = None,
    docker_context: Annotated[bool, typer.Option("--docker-context", help="Also create and select a 'toolbox' docker context (then DOCKER_HOST is unset).")] = False,
) -> None:
    """Print the commands that point docker at this instance (alias: socket).

    Example: eval "$(toolbox shellinit)"   or   eval "$(toolbox shellinit --docker-context)"
    """
    from toolbox import shellinit as si
    from toolbox import state

    paths = state.require(name)
    kind = si.detect_shell(shell)
    if docker_context:
        ctx = si.use_docker_context(paths, name)
        typer.echo(f"docker context {ctx!r} now points at {paths.docker_socket} and is selected", err=True)
    typer.echo(si.render(kind, si.environment(paths, docker_context), name), nl=False)


def ssh(
    ctx: typer.Context,
    name: NameOpt = "default",
    command: Annotated[Optional[list[str]], typer.Argument(help="Command to run instead of a shell (after --).")] = None,
) -> None:
    """Open a shell in the VM, or run a command there and return its exit status.

    Example: toolbox ssh -- uname -a
    """
    from toolbox import guest, ssh as sshlib, state
    from toolbox.errors import InstanceNotRunning

    st = state.status(name)
    if st.state not in ("running", "starting"):
        raise InstanceNotRunning(name, st.state)
    paths, cfg = state.load(name)
    client = guest.connect(paths, cfg)
    try:
        if command:
            code = sshlib.exec_command(client, shlex.join(command) if len(command) > 1 else command[0])
        else:
            code = sshlib.interactive_shell(client)
    finally:
        client.close()
    raise typer.Exit(code)


def doctor(
    name: NameOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check the host and the instance; for each problem, say what to do. Exit 1 if any failed.

    Example: toolbox doctor --json | jq '.checks[] | select(.status == "fail")'
    """
    from toolbox import doctor as doc

    checks = doc.run_checks(name)
    if as_json:
        typer.echo(doc.as_json(checks))
    else:
        from rich.console import Console

        console = Console(highlight=False)
        for line in doc.render_lines(checks):
            console.print(line, soft_wrap=True)
    if any(c.failed for c in checks):
        raise typer.Exit(1)


def ssh_config(name: NameOpt = "default") -> None:
    """Print a Host block for ~/.ssh/config, so ssh, scp and rsync reach the VM.

    Example: toolbox ssh-config >> ~/.ssh/config && ssh toolbox-default
    """
    from toolbox import ssh as sshlib, state
    from toolbox.config import atomic_write

    paths, cfg = state.load(name)
    alias = f"toolbox-{name}"
    known = paths.root / "known_hosts"  # written from the pinned key: no first-use trust
    atomic_write(known, sshlib.known_hosts_line(alias, paths.host_pubkey), mode=0o600)
    typer.echo(sshlib.ssh_config_block(alias, cfg.ssh_port, paths.ssh_key, known), nl=False)


config_app = typer.Typer(help="Show, check or change the global defaults (config.toml).", no_args_is_help=True)


@config_app.command("show")
def config_show() -> None:
    """Print the effective global defaults (config.toml over host-fitted defaults).

    Example: toolbox config show
    """
    from dataclasses import asdict

    from toolbox import config
    from toolbox.paths import global_config_file

    typer.echo(f"# {global_config_file()}")
    for key, value in asdict(config.load_global()).items():
        typer.echo(f"{key} = {json.dumps(value)}")


@config_app.command("validate")
def config_validate(name: Annotated[Optional[str], typer.Option("--name", "-n", help="Also check this instance.")] = None) -> None:
    """Check config.toml (and an instance's instance.toml), listing every problem.

    Example: toolbox config validate -n default
    """
    from toolbox import config, state

    config.load_global()
    if name:
        state.load(name)
    typer.echo("configuration is valid")


@config_app.command("set")
def config_set(
    key: str, value: str,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Change this (stopped) instance instead.")] = None,
) -> None:
    """Change one global default (new instances get it), or with -n an instance's shared
    folders: `mounts` is a comma-separated list of HOST[:GUEST][:ro], "" for none.

    Example: toolbox config set memory_mib 4096; toolbox config set -n dev mounts "~,/data:ro"
    """
    from toolbox import config

    if name is None:
        saved = config.set_global(key, value)
        typer.echo(f"{key} = {json.dumps(saved.mounts) if key == 'mounts' else value}")
        return
    from toolbox import shares
    from toolbox.errors import ConfigError
    from toolbox.mounts import parse_list

    if key != "mounts":
        raise ConfigError([f"{key}: only mounts can change on an instance (others: toolbox config set KEY VALUE)"],
                          source=f"instance {name!r}")
    cfg = shares.set_mounts(name, parse_list(value, "mounts"))
    typer.echo(f"mounts of {name!r} = {json.dumps([m.render() for m in cfg.mounts])}")


def register(app: typer.Typer) -> None:
    for fn, cmd, aliases in (
        (status, "status", ()), (info, "info", ()), (ip, "ip", ()), (list_, "list", ("ls",)),
        (ssh, "ssh", ()), (ssh_config, "ssh-config", ()), (shellinit, "shellinit", ("socket",)),
        (version, "version", ()), (doctor, "doctor", ()),
    ):
        app.command(cmd)(fn)
        for alias in aliases:
            app.command(alias, hidden=True)(fn)
    app.add_typer(config_app, name="config")
    app.add_typer(config_app, name="cfg", hidden=True)
