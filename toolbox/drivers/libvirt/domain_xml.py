"""Pure: a VMSpec plus a few host facts -> libvirt domain XML.

No libvirt import and no I/O here, so the exact XML is tested byte for byte
(tests/unit/test_libvirt_xml.py). The stateful half is toolbox.drivers.libvirt.driver.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from toolbox.drivers.base import VMSpec

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
TOOLBOX_NS = "https://github.com/toolbox/xmlns/libvirt/1"

# Registered once so ElementTree writes xmlns:qemu="..." rather than ns0.
ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace("toolbox", TOOLBOX_NS)

# The id QEMU knows our NIC's netdev by when it is added through <qemu:commandline>.
NETDEV_ID = "tbnet0"
# The PCI slot on the root bus for that NIC (both q35 and arm's virt root bus is pcie.0).
NIC_PCI_SLOT = "0x10"


@dataclass(frozen=True)
class HostFacts:
    """What the XML depends on besides the spec; the driver finds these out."""

    domain_type: str  # "qemu" (TCG), "kvm" or "hvf"
    emulator: str  # full path of qemu-system-<arch>
    net_backend: str  # "passt" (libvirt >= 9.0 with passt) or "qemu-user" (-netdev user via qemu:commandline)
    run_as: tuple[int, int] | None = None  # system URI: run QEMU as this uid:gid, not libvirt-qemu


def domain_name(instance: str) -> str:
    """libvirt domain names are global to the connection, so ours carry a prefix."""
    return f"toolbox-{instance}"


def domain_type_for(accel: str) -> str:
    """libvirt's <domain type>: hvf (macOS) or kvm only where toolbox's accelerator probe
    found them working (spec.accel), else qemu, i.e. TCG, which always works."""
    return {"hvf": "hvf", "kvm": "kvm"}.get(accel, "qemu")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _os(root: ET.Element, spec: VMSpec) -> None:
    machine = "q35" if spec.arch == "x86_64" else "virt"
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch, machine=machine)
    if spec.kernel is not None and spec.initrd is not None:
        # Direct kernel boot: no firmware, no bootloader; seconds faster under TCG.
        _sub(os_el, "kernel", str(spec.kernel))
        _sub(os_el, "initrd", str(spec.initrd))
        _sub(os_el, "cmdline", spec.kernel_cmdline)
    else:
        # The ISO is hybrid BIOS/UEFI; without a kernel the firmware boots it.
        _sub(os_el, "boot", dev="cdrom")


def _features_and_cpu(root: ET.Element, spec: VMSpec, facts: HostFacts) -> None:
    features = _sub(root, "features")
    if spec.arch == "x86_64":
        _sub(features, "acpi")  # the guest powers off on the ACPI power button (graceful stop)
        _sub(features, "apic")
    else:
        # libvirt allows ACPI on arm only with UEFI; a directly booted kernel gets a device
        # tree instead, where QEMU's virt machine signals the power button on a GPIO key.
        _sub(features, "gic", version="3" if facts.domain_type == "qemu" else "2")
    if facts.domain_type in ("kvm", "hvf"):
        _sub(root, "cpu", mode="host-passthrough")  # with hardware help, the host's CPU
    elif spec.arch == "x86_64":
        # Under TCG, QEMU's "max": every feature it can emulate, as the QEMU driver does.
        # libvirt's default (qemu64) lacks SSE4.2/POPCNT, which the guest's software uses.
        _sub(root, "cpu", mode="maximum")
    else:
        # arm under TCG: cortex-a72 rather than max, whose emulated pointer
        # authentication makes TCG several times slower (as the QEMU driver chooses).
        cpu = _sub(root, "cpu", mode="custom")
        _sub(cpu, "model", "cortex-a72")
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")


def _cdrom(devices: ET.Element, path: str, target: str, bus: str) -> None:
    disk = _sub(devices, "disk", type="file", device="cdrom")
    _sub(disk, "driver", name="qemu", type="raw")
    _sub(disk, "source", file=path)
    _sub(disk, "target", dev=target, bus=bus)
    _sub(disk, "readonly")


def _disks(devices: ET.Element, spec: VMSpec) -> None:
    data = _sub(devices, "disk", type="file", device="disk")
    # discard=unmap lets fstrim in the guest give space back to the qcow2 file.
    _sub(data, "driver", name="qemu", type="qcow2", discard="unmap")
    _sub(data, "source", file=str(spec.data_disk))
    _sub(data, "target", dev="vda", bus="virtio")
    # q35 has an AHCI controller built in; arm's virt machine has none, so SCSI there.
    # Either way the guest sees sr0 (the image) and sr1 (cidata), which its initramfs scans.
    bus = "sata" if spec.arch == "x86_64" else "scsi"
    if bus == "scsi":
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    _cdrom(devices, str(spec.iso), "sda", bus)
    _cdrom(devices, str(spec.cidata), "sdb", bus)


def _filesystems(devices: ET.Element, spec: VMSpec) -> None:
    """One virtio-9p export per mount, as the QEMU driver makes them. accessmode squash
    is QEMU's security_model=none: files are created as the user QEMU runs as (the
    host user), and the chown to the guest's owner is tried but its failure ignored.
    passthrough would fail every write of a container's root under a non-root QEMU."""
    for mount in spec.mounts:
        fs = _sub(devices, "filesystem", type="mount", accessmode="squash")
        _sub(fs, "source", dir=str(mount.host_path))
        _sub(fs, "target", dir=mount.tag)
        if not mount.writable:
            _sub(fs, "readonly")


def _interface(devices: ET.Element, spec: VMSpec, facts: HostFacts) -> None:
    if facts.net_backend != "passt":
        return  # the NIC is added on QEMU's command line instead (see _qemu_commandline)
    iface = _sub(devices, "interface", type="user")
    _sub(iface, "backend", type="passt")
    fwd = _sub(iface, "portForward", proto="tcp", address="127.0.0.1")
    _sub(fwd, "range", start=str(spec.ssh_port), to="22")
    _sub(iface, "model", type="virtio")


def _qemu_commandline(root: ET.Element, spec: VMSpec, facts: HostFacts) -> None:
    if facts.net_backend == "passt":
        return
    # libvirt's own <interface type='user'> (SLIRP) cannot forward ports before passt, so
    # the NIC and its 127.0.0.1-only forward go straight to QEMU. Binding 127.0.0.1 keeps
    # the guest's sshd off the network.
    cmdline = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    netdev = f"user,id={NETDEV_ID},hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22"
    # libvirt places its own devices at explicit PCI addresses from slot 1 up, and does not
    # know about ours: a fixed slot far above the few it uses keeps them apart.
    device = f"virtio-net-pci,netdev={NETDEV_ID},bus=pcie.0,addr={NIC_PCI_SLOT}"
    for arg in ("-netdev", netdev, "-device", device):
        ET.SubElement(cmdline, f"{{{QEMU_NS}}}arg", {"value": arg})


def _devices(root: ET.Element, spec: VMSpec, facts: HostFacts) -> None:
    devices = _sub(root, "devices")
    _sub(devices, "emulator", facts.emulator)
    _disks(devices, spec)
    _filesystems(devices, spec)
    _interface(devices, spec, facts)
    serial = _sub(devices, "serial", type="file")
    # append: one serial.log across boots, like the QEMU driver's.
    _sub(serial, "source", path=str(spec.serial_log), append="on")
    _sub(serial, "target", port="0")
    rng = _sub(devices, "rng", model="virtio")  # sshd in a fresh guest needs entropy fast
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    # No USB controller (libvirt adds one by default): the guest has no USB device, and
    # probing an xHCI controller costs boot time under TCG.
    _sub(devices, "controller", type="usb", model="none")


def build_domain_xml(spec: VMSpec, facts: HostFacts) -> str:
    """The domain XML for spec, deterministic (same input, same bytes)."""
    root = ET.Element("domain", {"type": facts.domain_type})
    _sub(root, "name", domain_name(spec.name))
    _sub(root, "title", f"toolbox instance {spec.name}")
    meta = _sub(root, "metadata")
    # Lets a human (or `virsh dumpxml`) see which instance directory owns this domain.
    ET.SubElement(meta, f"{{{TOOLBOX_NS}}}instance", {"dir": str(spec.instance_dir)})
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.cpus))
    _os(root, spec)
    _features_and_cpu(root, spec, facts)
    _devices(root, spec, facts)
    if facts.run_as is not None:
        # qemu:///system would run QEMU as libvirt-qemu, which cannot read the files under
        # the user's ~/.toolbox (mode 0700). Run it as the owner instead and leave the
        # files' ownership alone (relabel=no), so nothing is chowned behind the user's back.
        uid, gid = facts.run_as
        label = _sub(root, "seclabel", type="static", model="dac", relabel="no")
        _sub(label, "label", f"+{uid}:+{gid}")
    _qemu_commandline(root, spec, facts)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"
