"""An instance's shared folders over its life: on the config drive, changed on a stopped
instance, and out of QEMU's way while the VM is saved.

The hypervisor exports each folder (9p for QEMU and libvirt, a VirtualBox shared folder)
and the guest mounts it as the config drive's `mounts` file says
(vm-image/rootfs/usr/lib/toolbox/shares). Both are fixed when the VM boots, so a running
instance's shares cannot change: `toolbox config set -n NAME mounts ...` wants it stopped.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox import config as cfgmod
from toolbox.drivers import get_driver
from toolbox.drivers.base import Driver, Mount, VMState
from toolbox.errors import DriverError, ToolboxError
from toolbox.lock import instance_lock
from toolbox.mounts import MountConfig, merge
from toolbox.paths import InstancePaths
from toolbox.state import load, spec_for

if TYPE_CHECKING:
    from toolbox.cidata import DriveMount
    from toolbox.config import InstanceConfig

GUEST_SHARES = "/usr/lib/toolbox/shares"  # the guest's mount/umount helper


class SharesInUse(ToolboxError):
    def __init__(self, name: str, detail: str) -> None:
        super().__init__(
            f"cannot save {name!r}: QEMU cannot save a VM while a shared folder is mounted, "
            f"and the guest could not unmount them ({detail})",
            hint="stop the containers that use them, or stop the VM with: toolbox down",
        )


def drive_mounts(mounts: list[MountConfig], share_type: str) -> list[DriveMount]:
    """The config drive's lines for these mounts, tagged as the driver exports them."""
    from toolbox.cidata import DriveMount

    return [
        DriveMount(share_type, Mount(Path(m.host_path), Path(m.guest_path), m.writable).tag, m.guest_path, m.writable)
        for m in mounts
    ]


def check_host_folders(cfg: InstanceConfig) -> None:
    """Before a boot: every shared host folder must still be there (the hypervisor would
    refuse to start with a less helpful message)."""
    missing = [m.host_path for m in cfg.mounts if not Path(m.host_path).is_dir()]
    if missing:
        keep = ",".join(m.render() for m in cfg.mounts if m.host_path not in missing)
        raise ToolboxError(
            f"shared folder{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {cfg.name!r} "
            f"{'are' if len(missing) > 1 else 'is'} gone from the host",
            hint=f"create {'them' if len(missing) > 1 else 'it'} again, or stop sharing: "
                 f"toolbox config set -n {cfg.name} mounts {shlex.quote(keep)}",
        )


def set_mounts(name: str, mounts: list[MountConfig]) -> InstanceConfig:
    """Replace a stopped instance's shared folders: config drive, VM definition, config."""
    from toolbox.cidata import replace_mounts

    paths, _ = load(name)
    with instance_lock(name, paths.lock):
        paths, cfg = load(name)
        driver = get_driver(cfg.driver)
        state = driver.status(spec_for(cfg, paths, driver)).state
        if state is not VMState.STOPPED:
            raise ToolboxError(
                f"the shared folders of {name!r} cannot change while it is {state.value}: the VM's "
                "hardware and the guest's mounts are fixed at boot",
                hint=f"stop it first (toolbox down -n {name}), change them, then toolbox up -n {name}",
            )
        old_drive = paths.cidata.read_bytes()
        cfg.mounts = merge([], mounts)
        replace_mounts(paths.cidata, drive_mounts(cfg.mounts, driver.features.share_type))
        try:
            driver.reconfigure(spec_for(cfg, paths, driver))
        except BaseException:
            cfgmod.atomic_write(paths.cidata, old_drive, mode=0o600)
            raise
        cfgmod.save_instance(paths.config, cfg)
        return cfg


def _guest(paths: InstancePaths, cfg: InstanceConfig, action: str) -> tuple[int, str]:
    from toolbox import guest, ssh

    client = guest.connect(paths, cfg)
    try:
        code, out, err = ssh.run(client, f"sudo -n {GUEST_SHARES} {action}", timeout=60.0)
        return code, (err or out).strip()
    finally:
        client.close()


@contextmanager
def unmounted_while_saving(paths: InstancePaths, cfg: InstanceConfig, driver: Driver) -> Iterator[None]:
    """QEMU refuses to save a VM while the guest has a 9p share mounted: unmount them
    first (mounted again after the resume, or at once when the save fails)."""
    if not cfg.mounts or driver.features.share_type != "9p":
        yield
        return
    code, detail = _guest(paths, cfg, "umount")
    if code != 0:
        _guest(paths, cfg, "mount")
        raise SharesInUse(cfg.name, detail or f"exit {code}")
    try:
        yield
    except DriverError as exc:
        _guest(paths, cfg, "mount")
        if "VirtFS" in exc.message:  # QEMU: "Migration is disabled when VirtFS export path ... is mounted"
            raise SharesInUse(cfg.name, "a container still uses one") from exc
        raise
    except BaseException:
        _guest(paths, cfg, "mount")
        raise


def remount_after_resume(paths: InstancePaths, cfg: InstanceConfig, driver: Driver) -> None:
    """The counterpart of unmounted_while_saving, once the restored guest answers."""
    if cfg.mounts and driver.features.share_type == "9p":
        code, detail = _guest(paths, cfg, "mount")
        if code != 0:
            raise ToolboxError(f"the shared folders did not mount again after the resume ({detail})",
                               hint=f"see the guest's log with: toolbox logs -n {cfg.name}")
