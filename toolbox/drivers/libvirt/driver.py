"""LibvirtDriver: the Driver protocol on libvirt's QEMU, through libvirt-python.

The domain XML comes from domain_xml (pure); this module holds the state: the
connection, the data disk, and the order of operations that leaves nothing
half-made when something fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from toolbox.drivers.base import DriverFeatures, VMSpec, VMState, VMStatus
from toolbox.drivers.libvirt.connection import (
    DRIVER,
    default_uri,
    import_libvirt,
    install_hint,
    is_system,
    open_connection,
    translate,
)
from toolbox.drivers.libvirt.domain_xml import TOOLBOX_NS, HostFacts, build_domain_xml, domain_name, domain_type_for
from toolbox.drivers.libvirt.states import PAUSED_USER, map_state
from toolbox.errors import DriverError, ToolMissing
from toolbox.run import run

log = logging.getLogger("toolbox.drivers.libvirt")

# Flags libvirt 9.0 knows (the python binding may be newer than the daemon): drop the
# managed-save image, snapshot/checkpoint metadata and any UEFI vars with the definition.
_UNDEFINE_FLAGS = 1 | 2 | 4 | 16  # MANAGED_SAVE | SNAPSHOTS_METADATA | NVRAM | CHECKPOINTS_METADATA
_ACPI_POWER_BTN = 1  # VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
# A guest still booting may not listen for the power button yet; press it again this often.
_ACPI_REPEAT_S = 5.0
_POLL_S = 0.2


def qemu_binary(arch: str) -> str:
    return f"qemu-system-{arch}"


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)


def _net_backend() -> str:
    """QEMU's own user networking, unless TOOLBOX_LIBVIRT_NET=passt asks for passt.

    Not probed, on purpose: Debian 12's libvirt 9.0 rejects <backend type='passt'/>
    ("Invalid value for attribute 'type' in element 'backend'") even with the passt
    package installed, and passt does not exist on macOS. QEMU's SLIRP through
    <qemu:commandline> works on every libvirt toolbox supports; passt stays an opt-in
    for newer libvirt on Linux.
    """
    choice = os.environ.get("TOOLBOX_LIBVIRT_NET")
    if choice in ("passt", "qemu-user"):
        return choice
    if choice:
        raise DriverError(DRIVER, f"TOOLBOX_LIBVIRT_NET={choice!r} is not one of: passt, qemu-user")
    return "qemu-user"


class LibvirtDriver:
    name: ClassVar[str] = "libvirt"
    features: ClassVar[DriverFeatures] = DriverFeatures(
        direct_kernel_boot=True, suspend=True, share_type="9p", disk_format="qcow2"
    )

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or default_uri()

    # -- plumbing ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self) -> Iterator[Any]:
        conn = open_connection(self.uri)
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _lookup(self, conn: Any, spec: VMSpec) -> Any | None:
        libvirt = import_libvirt()
        try:
            return conn.lookupByName(domain_name(spec.name))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(exc, f"looking up {domain_name(spec.name)}", uri=self.uri) from exc

    def _call(self, doing: str, fn: Any, *args: Any) -> Any:
        libvirt = import_libvirt()
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            raise translate(exc, doing, uri=self.uri) from exc

    def _facts(self, conn: Any, spec: VMSpec) -> HostFacts:
        emulator = shutil.which(qemu_binary(spec.arch))
        if emulator is None:
            raise ToolMissing(qemu_binary(spec.arch), install_hint())
        # On the system daemon QEMU would run as libvirt-qemu; run it as us instead (see
        # domain_xml). The session daemon already runs everything as the user.
        system = is_system(self._call("reading the connection URI", conn.getURI))
        return HostFacts(
            domain_type=domain_type_for(spec.accel),
            emulator=emulator,
            net_backend=_net_backend(),
            run_as=(os.getuid(), os.getgid()) if system else None,
        )

    def domain_xml(self, conn: Any, spec: VMSpec, uuid: str | None = None) -> str:
        """The XML for spec, stamped with its own digest (and the domain's UUID if given)."""
        xml = build_domain_xml(spec, self._facts(conn, spec))
        root = ET.fromstring(xml)
        # The digest of what we asked for, so a redefinition can be skipped when nothing
        # changed: libvirt checks QEMU's capabilities on every define, which costs
        # seconds (tens of seconds where its capability cache never stays valid).
        meta = root.find(f"metadata/{{{TOOLBOX_NS}}}instance")
        assert meta is not None
        meta.set("xml-sha256", hashlib.sha256(xml.encode()).hexdigest())
        if uuid is not None:
            # Redefining an existing domain must keep its UUID, or libvirt refuses the name.
            el = ET.Element("uuid")
            el.text = uuid
            root.insert(1, el)
        ET.indent(root, space="  ")
        return ET.tostring(root, encoding="unicode") + "\n"

    def _redefine(self, conn: Any, dom: Any, spec: VMSpec, doing: str) -> None:
        """defineXML for spec, unless the domain was defined from exactly this spec."""
        xml = self.domain_xml(conn, spec, uuid=dom.UUIDString())
        wanted = ET.fromstring(xml).find(f"metadata/{{{TOOLBOX_NS}}}instance")
        if wanted is not None and wanted.get("xml-sha256") == self._defined_digest(dom):
            return
        self._call(doing, conn.defineXML, xml)

    def _defined_digest(self, dom: Any) -> str | None:
        libvirt = import_libvirt()
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, TOOLBOX_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError:
            return None  # defined by an older toolbox, or by hand
        return ET.fromstring(text).get("xml-sha256")

    # -- Driver -------------------------------------------------------------------------

    def check_installed(self) -> None:
        import_libvirt()
        if shutil.which(qemu_binary(host_arch())) is None:
            raise ToolMissing(qemu_binary(host_arch()), install_hint())
        if shutil.which("qemu-img") is None:
            raise ToolMissing("qemu-img", install_hint())

    def create(self, spec: VMSpec) -> None:
        name = domain_name(spec.name)
        with self._conn() as conn:
            if self._lookup(conn, spec) is not None:
                raise DriverError(
                    DRIVER,
                    f"a domain named {name} already exists on {self.uri}",
                    hint=f"remove it with 'virsh -c {self.uri} undefine {name}' or choose another instance name",
                )
            xml = self.domain_xml(conn, spec)  # before the disk: a missing qemu leaves nothing behind
            made_disk = not spec.data_disk.exists()
            if made_disk:
                spec.data_disk.parent.mkdir(parents=True, exist_ok=True)
                run(["qemu-img", "create", "-q", "-f", "qcow2", spec.data_disk, f"{spec.disk_size_gib}G"])
            try:
                self._call(f"defining {name}", conn.defineXML, xml)
            except BaseException:
                if made_disk:
                    spec.data_disk.unlink(missing_ok=True)
                raise

    def reconfigure(self, spec: VMSpec) -> None:
        with self._conn() as conn:
            dom = self._require(conn, spec)
            if dom.isActive():
                raise DriverError(DRIVER, f"{dom.name()} is running; stop it before changing its settings")
            if dom.hasManagedSaveImage(0):
                raise DriverError(
                    DRIVER,
                    f"{dom.name()} is suspended; its saved memory would not match the new settings",
                    hint=f"resume and stop it first: toolbox up -n {spec.name} && toolbox down -n {spec.name}",
                )
            self._redefine(conn, dom, spec, f"redefining {dom.name()}")

    def _require(self, conn: Any, spec: VMSpec) -> Any:
        dom = self._lookup(conn, spec)
        if dom is None:
            raise DriverError(
                DRIVER,
                f"no domain {domain_name(spec.name)} on {self.uri}",
                hint=f"recreate the instance: toolbox delete -n {spec.name} && toolbox init -n {spec.name}",
            )
        return dom

    def start(self, spec: VMSpec) -> None:
        with self._conn() as conn:
            dom = self._require(conn, spec)
            state, reason = self._call("reading the domain state", dom.state)
            if (state, reason) == (3, PAUSED_USER):  # paused in memory by someone: carry on
                self._call(f"resuming {dom.name()}", dom.resume)
            elif not dom.isActive():
                if not dom.hasManagedSaveImage(0):
                    # A fresh boot follows this boot's spec: the accelerator is probed only
                    # now (create got the configured one), and the image may be new.
                    self._redefine(conn, dom, spec, f"updating {dom.name()}")
                # With a managed-save image, create() restores it instead of booting.
                self._call(f"starting {dom.name()}", dom.create)

    def stop(self, spec: VMSpec, *, force: bool = False, timeout: float = 30.0) -> None:
        with self._conn() as conn:
            dom = self._lookup(conn, spec)
            if dom is None:
                return
            if not dom.isActive():
                if force and dom.hasManagedSaveImage(0):
                    # A suspended VM forced down loses its saved memory, as a powered-off one would.
                    self._call("discarding the saved state", dom.managedSaveRemove, 0)
                return
            if not force and self._graceful(dom, timeout):
                return
            self._destroy(dom)

    def _graceful(self, dom: Any, timeout: float) -> bool:
        """Press the ACPI power button until the guest is off or time runs out."""
        libvirt = import_libvirt()
        if tuple(dom.state()) == (3, PAUSED_USER):  # a paused guest cannot see the button
            self._call(f"resuming {dom.name()}", dom.resume)
        deadline = time.monotonic() + timeout
        next_press = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_press:
                try:
                    dom.shutdownFlags(_ACPI_POWER_BTN)
                except libvirt.libvirtError:
                    if not dom.isActive():
                        return True  # it went down between our check and the press
                    raise
                next_press = time.monotonic() + _ACPI_REPEAT_S
            time.sleep(_POLL_S)
            if not dom.isActive():
                return True
        log.info("%s did not power off within %gs; pulling the plug", dom.name(), timeout)
        return False

    def _destroy(self, dom: Any) -> None:
        libvirt = import_libvirt()
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if dom.isActive():  # not just "domain is not running" after a late power-off
                raise translate(exc, f"powering off {dom.name()}", uri=self.uri) from exc

    def delete(self, spec: VMSpec) -> None:
        with self._conn() as conn:
            dom = self._lookup(conn, spec)
            if dom is not None:
                if dom.isActive():
                    self._destroy(dom)
                self._call(f"undefining {dom.name()}", dom.undefineFlags, _UNDEFINE_FLAGS)
        spec.data_disk.unlink(missing_ok=True)
        for log_file in self._daemon_logs(spec):
            log_file.unlink(missing_ok=True)

    def _daemon_logs(self, spec: VMSpec) -> list[Path]:
        """libvirt's per-domain QEMU log, which outlives the domain otherwise."""
        name = f"{domain_name(spec.name)}.log"
        if is_system(self.uri):
            return [Path("/var/log/libvirt/qemu") / name]
        return [Path.home() / ".cache/libvirt/qemu/log" / name]

    def status(self, spec: VMSpec) -> VMStatus:
        with self._conn() as conn:
            dom = self._lookup(conn, spec)
            if dom is None:
                return VMStatus(VMState.MISSING)
            state, reason = self._call("reading the domain state", dom.state)
            saved = bool(self._call("checking for a managed save", dom.hasManagedSaveImage, 0))
            return map_state(state, reason, has_managed_save=saved)

    def ssh_address(self, spec: VMSpec) -> tuple[str, int]:
        return ("127.0.0.1", spec.ssh_port)

    # -- Suspendable, Resettable ----------------------------------------------------------

    def suspend(self, spec: VMSpec) -> None:
        with self._conn() as conn:
            dom = self._require(conn, spec)
            if not dom.isActive():
                return  # stopped or already saved: nothing in memory to save
            self._call(f"saving {dom.name()}", dom.managedSave, 0)

    def resume(self, spec: VMSpec) -> None:
        self.start(spec)

    def reset(self, spec: VMSpec) -> None:
        with self._conn() as conn:
            dom = self._require(conn, spec)
            if not dom.isActive():
                raise DriverError(DRIVER, f"{dom.name()} is not running; nothing to reset")
            self._call(f"resetting {dom.name()}", dom.reset, 0)
