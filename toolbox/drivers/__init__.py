"""Hypervisor drivers, one package each. `get_driver` imports only the one asked for,
so `toolbox status` never pays for libvirt's import."""

from __future__ import annotations

import importlib

from toolbox.drivers.base import Driver
from toolbox.errors import UsageError

# name -> "module:Class"; the module is imported only when that driver is used.
DRIVERS: dict[str, str] = {
    "qemu": "toolbox.drivers.qemu.driver:QemuDriver",
    "libvirt": "toolbox.drivers.libvirt.driver:LibvirtDriver",
    "virtualbox": "toolbox.drivers.virtualbox.driver:VirtualBoxDriver",
}


def get_driver(name: str) -> Driver:
    """An instance of the named driver, or UsageError listing the known ones."""
    try:
        target = DRIVERS[name]
    except KeyError:
        raise UsageError(f"unknown driver {name!r}; choose one of: {', '.join(DRIVERS)}") from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()
