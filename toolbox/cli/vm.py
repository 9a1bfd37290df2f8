"""Commands that change an instance: init, up, down, restart, poweroff, reset, save, resume,
delete, download, upgrade. Each parses, calls one library function, and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Instance name.", show_default=True)]
ManifestOpt = Annotated[Optional[str], typer.Option("--manifest-url", help="Release manifest (URL or path) to take the image from.")]
IsoUrlOpt = Annotated[Optional[str], typer.Option("--iso-url", help="Image ISO URL; its sha256 comes from SHA256SUMS beside it or --sha256.")]
IsoOpt = Annotated[Optional[Path], typer.Option("--iso", help="A local image ISO.")]
ShaOpt = Annotated[Optional[str], typer.Option("--sha256", help="Expected sha256 of --iso-url/--iso.")]


def image_source(manifest_url: str | None, iso_url: str | None, iso: Path | None, sha256: str | None) -> Any:
    """The ImageSource the flags name, or None for the configured default manifest."""
    from toolbox.errors import UsageError
    from toolbox.images import ImageSource

    if sum(x is not None for x in (manifest_url, iso_url, iso)) > 1:
        raise UsageError("use only one of --manifest-url, --iso-url and --iso")
    if sha256 and not (iso_url or iso):
        raise UsageError("--sha256 goes with --iso-url or --iso")
    if not (manifest_url or iso_url or iso):
        return None
    return ImageSource(manifest_url=manifest_url, iso_url=iso_url, iso_path=iso, sha256=sha256)


def _suffix(name: str) -> str:
    return "" if name == "default" else f" -n {name}"


def init(
    name: NameOpt = "default",
    cpus: Annotated[Optional[int], typer.Option(help="Virtual CPUs (default: up to 2).")] = None,
    memory: Annotated[Optional[str], typer.Option(help="Memory: MiB, or with a unit (2G).")] = None,
    disk_size: Annotated[Optional[str], typer.Option("--disk-size", help="Data disk: GiB, or with a unit.")] = None,
    driver: Annotated[Optional[str], typer.Option(help="qemu, libvirt or virtualbox.")] = None,
    accel: Annotated[Optional[str], typer.Option(help="auto, hvf, kvm or tcg (also $TOOLBOX_ACCEL).")] = None,
    mount: Annotated[Optional[list[str]], typer.Option(
        help="Share a host folder too: HOST[:GUEST][:ro] (repeatable; GUEST defaults to HOST).")] = None,
    default_mounts: Annotated[bool, typer.Option(
        "--default-mounts/--no-default-mounts",
        help="Share config.toml's mounts (default: your home folder, read-write, at the same path).")] = True,
    insecure_registry: Annotated[Optional[list[str]], typer.Option(
        help="A registry the VM reaches over plain HTTP: HOST[:PORT] (repeatable).")] = None,
    registry_mirror: Annotated[Optional[list[str]], typer.Option(
        help="A mirror tried before Docker Hub: http(s)://HOST[:PORT] (repeatable).")] = None,
    manifest_url: ManifestOpt = None, iso_url: IsoUrlOpt = None, iso: IsoOpt = None, sha256: ShaOpt = None,
) -> None:
    """Create an instance: download and verify the image, make keys, create the VM.

    Your home folder is shared read-write at its own path in the VM (docker run -v "$PWD":/src works under it).

    --mount adds folders, --no-default-mounts leaves config.toml's (home) out; change them with: toolbox config set -n NAME mounts

    Example: toolbox init --cpus 2 --memory 2G --disk-size 40 --mount /opt/data:ro
    """
    from toolbox import instance
    from toolbox.cli.ui import DownloadBar, info, steps
    from toolbox.config import parse_size_mib
    from toolbox.mounts import parse_mounts

    opts = instance.InitOptions(
        name=name, source=image_source(manifest_url, iso_url, iso, sha256), driver=driver, cpus=cpus,
        memory_mib=parse_size_mib(memory, "m") if memory else None,
        disk_size_gib=parse_size_mib(disk_size, "g") // 1024 if disk_size else None, accel=accel,
        mounts=parse_mounts(mount or []), default_mounts=default_mounts,
        insecure_registries=insecure_registry or [], registry_mirrors=registry_mirror or [],
    )
    with steps("creating") as step:
        cfg = instance.init(opts, step=step, progress=DownloadBar())
    info(f"[green]Created[/] {name!r}: {cfg.cpus} CPUs, {cfg.memory_mib} MiB, {cfg.disk_size_gib} GiB disk, "
         f"image {cfg.image.version}. Start it with: toolbox up{_suffix(name)}")
    for m in cfg.mounts:
        info(f"  shares {m.host_path} at {m.guest_path} ({'read-write' if m.writable else 'read-only'})")


def up(
    name: NameOpt = "default",
    accel: Annotated[Optional[str], typer.Option(help="Override the accelerator for this boot.")] = None,
) -> None:
    """Boot the instance and wait until it is ready (aliases: start, boot).

    Example: toolbox up && eval "$(toolbox shellinit)"
    """
    from toolbox import instance
    from toolbox.cli.ui import info, steps

    with steps("starting") as step:
        instance.up(name, step=step, accel=accel)
    info(f"[green]Ready:[/] {name!r}. Use it with: eval \"$(toolbox shellinit{_suffix(name)})\"")


def down(
    name: NameOpt = "default",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a clean shutdown before forcing.")] = 30.0,
) -> None:
    """Shut the VM down cleanly; force it off after --timeout (aliases: stop, halt).

    `toolbox stop` is boot2docker's alias; with container names it stops those instead.

    Example: toolbox down --timeout 10
    """
    from toolbox import instance
    from toolbox.cli.ui import info

    instance.down(name, timeout=timeout)
    info(f"Stopped {name!r}.")


def poweroff(name: NameOpt = "default") -> None:
    """Pull the plug: stop the VM at once, without a clean shutdown.

    Example: toolbox poweroff
    """
    from toolbox import instance
    from toolbox.cli.ui import info

    instance.down(name, force=True, timeout=0)
    info(f"Powered off {name!r}.")


def restart(name: NameOpt = "default") -> None:
    """Shut down cleanly and boot again.

    Example: toolbox restart -n dev
    """
    from toolbox import instance
    from toolbox.cli.ui import steps

    with steps("restarting") as step:
        instance.restart(name, step=step)


def reset(name: NameOpt = "default") -> None:
    """Hard-reset the running VM (the reset button) and wait until it is ready.

    Example: toolbox reset
    """
    from toolbox import instance
    from toolbox.cli.ui import steps

    with steps("resetting") as step:
        instance.reset(name, step=step)


def save(name: NameOpt = "default") -> None:
    """Save the running VM's memory to disk and stop it (alias: suspend).

    Example: toolbox save && toolbox resume
    """
    from toolbox import instance
    from toolbox.cli.ui import info

    instance.suspend(name)
    info(f"Saved {name!r}. Continue with: toolbox resume{_suffix(name)}")


def resume(name: NameOpt = "default") -> None:
    """Continue a saved VM where it left off.

    Example: toolbox resume
    """
    from toolbox import instance
    from toolbox.cli.ui import steps

    with steps("resuming") as step:
        instance.resume(name, step=step)


def delete(
    name: NameOpt = "default",
    force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask.")] = False,
) -> None:
    """Delete the VM, its data disk and every file of the instance (alias: destroy).

    Example: toolbox delete -f -n dev
    """
    from toolbox import instance, state
    from toolbox.cli.ui import info

    state.require(name)
    if not force and not typer.confirm(f"Delete {name!r} and all its data?", default=False, err=True):
        raise typer.Exit(1)
    instance.delete(name)
    info(f"Deleted {name!r}.")


def download(
    manifest_url: ManifestOpt = None, iso_url: IsoUrlOpt = None, iso: IsoOpt = None, sha256: ShaOpt = None,
) -> None:
    """Download and verify an image into the cache, for a later init or upgrade.

    Example: toolbox download --manifest-url https://example.org/toolbox/manifest.json
    """
    from toolbox import instance
    from toolbox.cli.ui import DownloadBar

    image = instance.download(image_source(manifest_url, iso_url, iso, sha256), DownloadBar())
    typer.echo(f"{image.resolved.version} {image.resolved.sha256} {image.iso}")


def upgrade(
    name: NameOpt = "default",
    manifest_url: ManifestOpt = None, iso_url: IsoUrlOpt = None, iso: IsoOpt = None, sha256: ShaOpt = None,
) -> None:
    """Move the instance to the newest image and boot it; the data disk is kept.

    Example: toolbox upgrade
    """
    from toolbox import instance
    from toolbox.cli.ui import DownloadBar, info, steps

    with steps("upgrading") as step:
        result = instance.upgrade(name, image_source(manifest_url, iso_url, iso, sha256), step, DownloadBar())
    if result.changed:
        info(f"[green]Upgraded[/] {name!r}: {result.old_version} → {result.new_version}")
    else:
        info(f"{name!r} is up to date ({result.new_version}).")


def register(app: typer.Typer) -> None:
    """Add the commands, and boot2docker's aliases as hidden twins."""
    for fn, aliases in (
        (init, ()), (up, ("start", "boot")), (down, ("halt",)), (restart, ()),
        (poweroff, ()), (reset, ()), (save, ("suspend",)), (resume, ()),
        (delete, ("destroy",)), (download, ()), (upgrade, ()),
    ):
        app.command(fn.__name__)(fn)
        for alias in aliases:
            app.command(alias, hidden=True)(fn)
