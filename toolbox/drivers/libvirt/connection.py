"""Opening a libvirt connection, and turning libvirt's errors into one clear DriverError.

libvirt-python is imported here and only here (lazily), so a host without it gets
ToolMissing with the install command rather than an ImportError.
"""

from __future__ import annotations

import os
import platform
import re
from types import ModuleType
from urllib.parse import urlsplit
from typing import Any

from toolbox.errors import DriverError, ToolMissing

DRIVER = "libvirt"


def is_macos() -> bool:
    return platform.system() == "Darwin"


def install_hint() -> str:
    if is_macos():
        return "brew install libvirt qemu && brew services start libvirt && pip install libvirt-python"
    return (
        "sudo apt-get install libvirt-daemon-system libvirt-dev pkg-config qemu-system-x86 qemu-utils"
        " && pip install libvirt-python"
    )


def start_hint(uri: str) -> str:
    if is_macos():
        return "start libvirtd: brew services start libvirt"
    if is_system(uri):
        return "start libvirtd: sudo systemctl start libvirtd (or run 'virtlogd -d; libvirtd -d' as root)"
    return "start libvirtd: libvirtd --daemon (as your user, for qemu:///session)"


def is_system(uri: str) -> bool:
    """Whether uri names a system daemon (qemu:///system, also with ?socket=... naming its socket)."""
    return urlsplit(uri).path.rstrip("/") == "/system"


def default_uri() -> str:
    """$TOOLBOX_LIBVIRT_URI, else the connection a user of this platform has.

    On macOS Homebrew's libvirt runs per user (session). On Linux root uses the system
    daemon; other users their own session daemon, which needs no group membership.
    """
    env = os.environ.get("TOOLBOX_LIBVIRT_URI")
    if env:
        return env
    if is_macos():
        return "qemu:///session"
    return "qemu:///system" if os.geteuid() == 0 else "qemu:///session"


def import_libvirt() -> ModuleType:
    try:
        import libvirt
    except ImportError as exc:
        raise ToolMissing("libvirt-python", install_hint()) from exc
    # Without a handler libvirt prints every error to stderr as well as raising it.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def translate(exc: Exception, doing: str, *, uri: str) -> DriverError:
    """One DriverError line for a libvirtError, with a hint where we know the fix."""
    libvirt = import_libvirt()
    if not isinstance(exc, libvirt.libvirtError):
        return DriverError(DRIVER, f"{doing}: {one_line(str(exc))}")
    message = one_line(exc.get_error_message() or str(exc))
    code, domain = exc.get_error_code(), exc.get_error_domain()
    hint: str | None = None
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_SYSTEM_ERROR) and domain in (
        libvirt.VIR_FROM_RPC,
        libvirt.VIR_FROM_REMOTE,
    ):
        hint = start_hint(uri)
    elif code in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_OPERATION_DENIED):
        hint = f"you may not use {uri}; set TOOLBOX_LIBVIRT_URI=qemu:///session or join the libvirt group"
    elif "host forwarding rule" in message or "Address already in use" in message:
        hint = "the instance's SSH port is taken by another program; free it or recreate the instance"
    return DriverError(DRIVER, f"{doing}: {message}", hint=hint)


def open_connection(uri: str) -> Any:
    """A libvirt connection (virConnect) to uri, or DriverError saying how to start libvirtd."""
    libvirt = import_libvirt()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        err = translate(exc, f"cannot connect to {uri}", uri=uri)
        if err.hint is None:
            err = DriverError(DRIVER, err.message.removeprefix(f"{DRIVER}: "), hint=start_hint(uri))
        raise err from exc
