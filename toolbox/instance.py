"""Orchestration above the drivers: init, up, down, delete, upgrade ... of one instance.

The pattern for every change: lock → load → validate → driver → wait. Drivers never
download and never make keys; that happens here. `init` undoes everything it made when
any step fails, so no half-made instance is left. Status lives in toolbox.state (kept
free of paramiko/requests so `toolbox status` starts fast); heavy modules are imported
inside the functions that need them.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from toolbox import config as cfgmod
from toolbox import guest, shares
from toolbox.config import HostFacts, ImageRef, InstanceConfig, MountConfig
from toolbox.drivers import get_driver
from toolbox.drivers.base import Driver, Resettable, Suspendable, VMState
from toolbox.errors import (
    ConfigError, DriverError, GuestHung, GuestTimeout, InstanceExists, InstanceNotRunning,
    NotSupported, ToolboxError,
)
from toolbox.lock import instance_lock
from toolbox.mounts import list_problems as mount_list_problems
from toolbox.mounts import merge as merge_mounts
from toolbox.mounts import parse_mounts
from toolbox.paths import InstancePaths
from toolbox.state import guest_hung, guest_panicked, load, require, spec_for, vm_status

if TYPE_CHECKING:
    from toolbox.images import CachedImage, ImageSource, ProgressHook

Step = Callable[[str], None]  # tells the user what is happening now (the CLI's spinner)

BOOT_TIMEOUT = float(os.environ.get("TOOLBOX_BOOT_TIMEOUT", "240"))  # TCG boots are slow
UP_LOCK_TIMEOUT = BOOT_TIMEOUT + guest.AGENT_TIMEOUT + 30.0  # a concurrent boot, to its end
STOP_TIMEOUT = 30.0


def _quiet(_: str) -> None:
    pass


@dataclass
class InitOptions:
    name: str
    source: ImageSource | None = None  # None: the manifest URL from config.toml / env
    driver: str | None = None
    cpus: int | None = None
    memory_mib: int | None = None
    disk_size_gib: int | None = None
    accel: str | None = None
    mounts: list[MountConfig] = field(default_factory=list)  # added to config.toml's mounts
    default_mounts: bool = True  # False: share only `mounts`, not config.toml's (the home folder)
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)


# --- init --------------------------------------------------------------------------


def _settings(opts: InitOptions, host: HostFacts) -> dict[str, Any]:
    """The options merged over config.toml's defaults, validated all at once."""
    glob = cfgmod.load_global(host)
    given = {"driver": opts.driver, "cpus": opts.cpus, "memory_mib": opts.memory_mib,
             "disk_size_gib": opts.disk_size_gib, "accel": opts.accel}
    merged = {k: (v if v is not None else getattr(glob, k)) for k, v in given.items()}
    problems: list[str] = []
    cfgmod.validate_resources(problems, "--", merged, host)
    cfgmod.validate_registries(problems, "--", opts.insecure_registries, opts.registry_mirrors)
    if problems:
        raise ConfigError([p.replace("_mib", "").replace("_gib", "").replace("_", "-") for p in problems],
                          source="options")
    merged["image_url"] = os.environ.get("TOOLBOX_IMAGE_URL") or glob.image_url
    defaults = parse_mounts(glob.mounts, "config.toml mounts") if opts.default_mounts else []
    merged["mounts"] = merge_mounts(defaults, opts.mounts)
    problems = mount_list_problems("--", merged["mounts"])
    if problems:
        raise ConfigError(problems, source="options")
    return merged


def _claim_dir(paths: InstancePaths) -> None:
    """Create the instance directory; a leftover without instance.toml is cleaned."""
    if paths.config.exists():
        raise InstanceExists(paths.name)
    if paths.root.exists():
        with instance_lock(paths.name, paths.lock, timeout=0):  # a concurrent init holds it
            shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True, exist_ok=False, mode=0o700)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel picks; we release it for QEMU)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether QEMU could listen on 127.0.0.1:`port` now. SO_REUSEADDR as QEMU's user
    network sets it: the last boot's connections in TIME_WAIT do not make it taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _write_keys_and_drive(paths: InstancePaths, cfg: InstanceConfig, share_type: str) -> None:
    from toolbox.cidata import ConfigDrive, write_config_drive
    from toolbox.keys import generate_ed25519, write_keypair

    login = generate_ed25519(f"toolbox@{cfg.name}")
    write_keypair(login, paths.ssh_key, paths.ssh_pubkey)
    # The guest's host key: only its public half stays on the host, pinned; the private
    # half exists only on the config drive (which is 0600 in the 0700 instance directory).
    host = generate_ed25519(f"root@toolbox-{cfg.name}")
    cfgmod.atomic_write(paths.host_pubkey, host.public_openssh.strip() + "\n", mode=0o644)
    drive = ConfigDrive(
        hostname=f"toolbox-{cfg.name}", uid=_guest_id(os.getuid()), gid=_guest_id(os.getgid()),
        authorized_keys=[login.public_openssh.strip()], host_private_key=host.private_openssh,
        host_public_key=host.public_openssh.strip(), mounts=shares.drive_mounts(cfg.mounts, share_type),
        agent=_agent_settings(cfg),
    )
    write_config_drive(paths.cidata, drive)
    os.chmod(paths.cidata, 0o600)


def _agent_settings(cfg: InstanceConfig) -> dict[str, object]:
    """agent.json on the config drive. With mirrors set, Docker Hub is tried only after
    them, as dockerd does; the guest agent reads these keys (guest-agent/README.md)."""
    settings: dict[str, object] = {"docker_socket": guest.GUEST_DOCKER_SOCKET}
    if cfg.insecure_registries:
        settings["insecure_registries"] = list(cfg.insecure_registries)
    if cfg.registry_mirrors:
        settings["registry_mirrors"] = list(cfg.registry_mirrors)
    return settings


def _guest_id(host_id: int) -> int:
    """The uid/gid the guest's login user gets: the host user's (so shared files match),
    except root's: run from a root shell, the guest user must not join the root group."""
    return host_id if host_id != 0 else 1000


def image_ref(image: CachedImage) -> ImageRef:
    r = image.resolved
    return ImageRef(
        version=r.version, sha256=r.sha256, iso=str(image.iso), kernel=str(image.kernel or ""),
        initrd=str(image.initrd or ""), cmdline=image.cmdline, arch=r.arch, source=r.source,
    )


def resolve_and_fetch(source: ImageSource | None, default_url: str, progress: ProgressHook | None) -> CachedImage:
    from toolbox.images import ImageSource, ensure_cached, resolve

    src = source or ImageSource(manifest_url=os.environ.get("TOOLBOX_IMAGE_URL") or default_url)
    return ensure_cached(resolve(src), progress)


def init(opts: InitOptions, step: Step = _quiet, progress: ProgressHook | None = None) -> InstanceConfig:
    """Create an instance; on any failure everything it made is removed again."""
    paths = InstancePaths.for_name(opts.name)
    host = HostFacts.probe()
    settings = _settings(opts, host)
    driver = get_driver(settings["driver"])
    driver.check_installed()
    if paths.config.exists():
        raise InstanceExists(opts.name)
    step("resolving the image")
    image = resolve_and_fetch(opts.source, settings["image_url"], progress)
    _claim_dir(paths)
    created = False
    try:
        with instance_lock(paths.name, paths.lock):
            cfg = InstanceConfig(
                name=opts.name, driver=settings["driver"], cpus=settings["cpus"],
                memory_mib=settings["memory_mib"], disk_size_gib=settings["disk_size_gib"],
                image=image_ref(image), ssh_port=free_port(), accel=settings["accel"],
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"), mounts=settings["mounts"],
                insecure_registries=opts.insecure_registries, registry_mirrors=opts.registry_mirrors,
            )
            step("making keys and the config drive")
            _write_keys_and_drive(paths, cfg, driver.features.share_type)
            step(f"creating the VM ({driver.name})")
            driver.create(spec_for(cfg, paths, driver))
            created = True
            cfgmod.save_instance(paths.config, cfg)
            return cfg
    except BaseException:
        if created:
            _best_effort(lambda: driver.delete(spec_for(cfg, paths, driver)))
        shutil.rmtree(paths.root, ignore_errors=True)
        raise


def _best_effort(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 (cleanup after another failure: that one is reported)
        pass


# --- up ----------------------------------------------------------------------------


def _boot_accel(cfg: InstanceConfig, override: str | None) -> str:
    from toolbox.accel import detect_accel

    chosen = override or os.environ.get("TOOLBOX_ACCEL") or (cfg.accel if cfg.accel != "auto" else None)
    return detect_accel(cfg.image.arch, chosen)


def _ensure_port(paths: InstancePaths, cfg: InstanceConfig, driver: Driver, step: Step) -> None:
    """If another program took our SSH port while we were stopped, move to a free one."""
    if port_is_free(cfg.ssh_port):
        return
    old = cfg.ssh_port
    cfg.ssh_port = free_port()
    step(f"port {old} is taken; using {cfg.ssh_port} for SSH")
    driver.reconfigure(spec_for(cfg, paths, driver))
    cfgmod.save_instance(paths.config, cfg)


def _log_size(paths: InstancePaths) -> int:
    try:
        return paths.serial_log.stat().st_size
    except OSError:
        return 0


def _alive_check(paths: InstancePaths, cfg: InstanceConfig, driver: Driver, since: int) -> Callable[[], None]:
    def alive() -> None:
        panic = guest_panicked(paths.serial_log, since)
        if panic:  # a panicked guest only burns CPU: switch it off, keep the console log
            _best_effort(lambda: driver.stop(spec_for(cfg, paths, driver), force=True, timeout=0))
            raise DriverError(driver.name, f"the guest kernel panicked while booting ({panic})",
                              hint="see the console with: toolbox logs")
        hung = guest_hung(paths.serial_log, since)
        if hung:  # the same: it never comes back (state.LOCKUP_RE)
            _best_effort(lambda: driver.stop(spec_for(cfg, paths, driver), force=True, timeout=0))
            raise GuestHung(driver.name, f"the guest kernel hung while booting ({hung})",
                            hint="boot it again: toolbox up; see the console with: toolbox logs")
        st = driver.status(spec_for(cfg, paths, driver))
        if st.state is not VMState.RUNNING:
            why = "; ".join(st.reasons) or st.state.value
            raise DriverError(driver.name, f"the VM stopped while booting ({why})", hint="see: toolbox logs")
    return alive


def _boot(paths: InstancePaths, cfg: InstanceConfig, driver: Driver, step: Step, accel: str | None) -> None:
    """_boot_once, and once more when the guest kernel hung: under TCG on a busy host a boot
    rarely locks up for good (state.LOCKUP_RE), and the next boot is almost always fine."""
    try:
        _boot_once(paths, cfg, driver, step, accel)
    except GuestHung as exc:
        step(f"{exc.message}: the VM was switched off; booting it again")
        _boot_once(paths, cfg, driver, step, accel)


def _boot_once(paths: InstancePaths, cfg: InstanceConfig, driver: Driver, step: Step, accel: str | None) -> None:
    """Start (or resume) the VM and wait until docker.sock answers through the host agent."""
    spec = spec_for(cfg, paths, driver)
    state = driver.status(spec).state
    log_start = _log_size(paths)
    if state is VMState.MISSING:
        raise DriverError(driver.name, f"the hypervisor has no VM for {cfg.name!r}",
                          hint=f"recreate it: toolbox delete -f -n {cfg.name} && toolbox init -n {cfg.name}")
    resumed = state is VMState.SUSPENDED and isinstance(driver, Suspendable)
    booting = not resumed and state is not VMState.RUNNING
    if resumed:
        step("resuming the VM")
        driver.resume(spec)
    elif booting:
        shares.check_host_folders(cfg)
        _ensure_port(paths, cfg, driver, step)
        step("checking the accelerator")
        spec = spec_for(cfg, paths, driver, accel=_boot_accel(cfg, accel))
        step(f"starting the VM ({driver.name}, {spec.accel})")
        driver.start(spec)
        paths.booted_accel.write_text(spec.accel + "\n")  # what `toolbox info` shows
    alive = _alive_check(paths, cfg, driver, log_start)
    try:
        if booting:
            # Started with the VM, the host agent's start-up overlaps the guest's boot, and
            # its login (the pinned host key checked there) is the only one up makes.
            step("starting the host agent")
            guest.start_host_agent(paths, cfg, boot_timeout=BOOT_TIMEOUT)
        else:
            _login_and_prepare(paths, cfg, driver, step, alive, resumed=resumed)
        step("waiting for the guest (SSH, then the guest agent)" if booting else "checking docker.sock")
        try:
            guest.wait_for_docker_socket(paths, alive, BOOT_TIMEOUT + guest.AGENT_TIMEOUT if booting else guest.AGENT_TIMEOUT)
        except GuestTimeout as exc:
            raise GuestTimeout(exc.message + guest.agent_log_tail_now(paths, cfg), hint=exc.hint) from None
    except ToolboxError:
        if booting:
            _best_effort(lambda: guest.stop_host_agent(paths))
        raise


def _login_and_prepare(paths: InstancePaths, cfg: InstanceConfig, driver: Driver, step: Step,
                       alive: Callable[[], None], *, resumed: bool) -> None:
    """After a resume or on a running VM: log in (the pinned host key), wait for the guest
    agent, mount the shares again (after a resume), then (re)start the host agent."""
    from toolbox import ssh

    step(f"waiting for SSH on 127.0.0.1:{cfg.ssh_port}")
    client = ssh.wait_for_ssh("127.0.0.1", cfg.ssh_port, paths.ssh_key, paths.host_pubkey, BOOT_TIMEOUT, alive=alive)
    try:
        step("waiting for the guest agent")
        guest.wait_for_agent(client)
        if resumed:
            shares.remount_after_resume(paths, cfg, driver)
        step("starting the host agent")
        guest.start_host_agent(paths, cfg)
    finally:
        client.close()


def up(name: str, step: Step = _quiet, accel: str | None = None) -> InstanceConfig:
    """Boot the instance (idempotent) and return once it is ready for work."""
    paths, cfg = load(name)
    # Another `up` may hold the lock through a whole boot: wait as long as one may take,
    # then find the VM running and return, as the user who typed `up` twice expects.
    with instance_lock(name, paths.lock, timeout=UP_LOCK_TIMEOUT,
                       on_wait=lambda: step("waiting for another toolbox command on this instance")):
        paths, cfg = load(name)  # again under the lock: another command may have changed it
        driver = get_driver(cfg.driver)
        driver.check_installed()
        _boot(paths, cfg, driver, step, accel)
    return cfg


# --- stopping and the rest of the lifecycle ------------------------------------------


def _stop(paths: InstancePaths, cfg: InstanceConfig, driver: Driver, *, force: bool, timeout: float) -> None:
    guest.stop_host_agent(paths)
    driver.stop(spec_for(cfg, paths, driver), force=force, timeout=timeout)


def down(name: str, *, force: bool = False, timeout: float = STOP_TIMEOUT) -> None:
    """Shut down gracefully (ACPI) within `timeout`, then force; `force` pulls the plug."""
    paths, _ = load(name)
    with instance_lock(name, paths.lock):
        paths, cfg = load(name)
        _stop(paths, cfg, get_driver(cfg.driver), force=force, timeout=timeout)


def restart(name: str, step: Step = _quiet) -> InstanceConfig:
    paths, _ = load(name)
    with instance_lock(name, paths.lock):
        paths, cfg = load(name)
        driver = get_driver(cfg.driver)
        step("stopping the VM")
        _stop(paths, cfg, driver, force=False, timeout=STOP_TIMEOUT)
        _boot(paths, cfg, driver, step, None)
    return cfg


def reset(name: str, step: Step = _quiet) -> None:
    """Hard reset (the reset button), then wait until ready again."""
    paths, _ = load(name)
    with instance_lock(name, paths.lock):
        paths, cfg = load(name)
        driver = get_driver(cfg.driver)
        spec = spec_for(cfg, paths, driver)
        if vm_status(driver, spec).state is not VMState.RUNNING:
            raise InstanceNotRunning(name, vm_status(driver, spec).state.value)
        if isinstance(driver, Resettable):
            driver.reset(spec)
        else:  # without a reset button, power off and on: the same to the guest
            _stop(paths, cfg, driver, force=True, timeout=0)
        _boot(paths, cfg, driver, step, None)


def suspend(name: str) -> None:
    paths, _ = load(name)
    with instance_lock(name, paths.lock):
        paths, cfg = load(name)
        driver = get_driver(cfg.driver)
        if not isinstance(driver, Suspendable) or not driver.features.suspend:
            raise NotSupported(driver.name, "cannot save a running VM", hint="use 'toolbox down' instead")
        spec = spec_for(cfg, paths, driver)
        state = vm_status(driver, spec).state
        if state is not VMState.RUNNING:
            raise InstanceNotRunning(name, state.value)
        with shares.unmounted_while_saving(paths, cfg, driver):
            guest.stop_host_agent(paths)
            try:
                driver.suspend(spec)
            except BaseException:
                if vm_status(driver, spec).state is VMState.RUNNING:  # not saved: serve docker.sock again
                    _best_effort(lambda: guest.start_host_agent(paths, cfg))
                raise


def resume(name: str, step: Step = _quiet) -> None:
    paths, _ = load(name)
    with instance_lock(name, paths.lock):
        paths, cfg = load(name)
        driver = get_driver(cfg.driver)
        if not isinstance(driver, Suspendable) or not driver.features.suspend:
            raise NotSupported(driver.name, "cannot save or resume VMs", hint="use 'toolbox up'")
        _boot(paths, cfg, driver, step, None)


def delete(name: str) -> None:
    """Remove the VM and every file of the instance; works on a broken instance too."""
    paths = require(name)
    with instance_lock(name, paths.lock):
        try:
            _, cfg = load(name)
        except ConfigError:
            cfg = None  # unreadable config: nothing to tell the driver, remove the files
        if cfg is not None:
            driver = get_driver(cfg.driver)
            spec = spec_for(cfg, paths, driver)
            guest.stop_host_agent(paths)
            if vm_status(driver, spec).state in (VMState.RUNNING, VMState.SUSPENDED):
                driver.stop(spec, force=True, timeout=0)
            driver.delete(spec)
        shutil.rmtree(paths.root)


# --- images: download, upgrade ------------------------------------------------------


def download(source: ImageSource | None, progress: ProgressHook | None = None) -> CachedImage:
    """Fetch and verify an image into the cache without touching any instance."""
    return resolve_and_fetch(source, cfgmod.load_global().image_url, progress)


@dataclass(frozen=True)
class UpgradeResult:
    old_version: str
    new_version: str
    changed: bool


def upgrade(name: str, source: ImageSource | None, step: Step = _quiet,
            progress: ProgressHook | None = None) -> UpgradeResult:
    """Swap in a new image; the data disk (and its data) is kept. Boots it when done."""
    paths, cfg = load(name)
    step("resolving the image")
    image = resolve_and_fetch(source, cfgmod.load_global().image_url, progress)  # before stopping
    old = cfg.image.version
    if image.resolved.sha256 == cfg.image.sha256:
        return UpgradeResult(old, image.resolved.version, changed=False)
    with instance_lock(name, paths.lock):
        paths, cfg = load(name)
        driver = get_driver(cfg.driver)
        step("stopping the VM")
        _stop(paths, cfg, driver, force=False, timeout=STOP_TIMEOUT)
        previous = cfg.image
        _switch_image(paths, cfg, driver, image_ref(image), step)
        try:
            _boot(paths, cfg, driver, step, None)
        except ToolboxError as exc:  # the new image does not come up: go back to the old one
            _best_effort(lambda: driver.stop(spec_for(cfg, paths, driver), force=True, timeout=0))
            _switch_image(paths, cfg, driver, previous, step)
            raise UpgradeFailed(name, previous.version, exc) from exc
    return UpgradeResult(old, image.resolved.version, changed=True)


def _switch_image(paths: InstancePaths, cfg: InstanceConfig, driver: Driver, ref: ImageRef, step: Step) -> None:
    step(f"switching the VM to image {ref.version}")
    cfg.image = ref
    driver.reconfigure(spec_for(cfg, paths, driver))
    cfgmod.save_instance(paths.config, cfg)


class UpgradeFailed(ToolboxError):
    def __init__(self, name: str, kept: str, cause: ToolboxError) -> None:
        super().__init__(
            f"the new image did not boot ({cause.message}); {name!r} is back on image {kept}, its data untouched",
            hint=f"start it again with: toolbox up -n {name}",
        )


__all__ = [
    "InitOptions", "UpgradeResult", "delete", "down", "download", "init", "reset",
    "restart", "resume", "suspend", "up", "upgrade", "UpgradeFailed",
]
