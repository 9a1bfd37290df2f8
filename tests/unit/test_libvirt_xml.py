"""The libvirt domain XML, byte for byte, for the three domain types toolbox uses."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from toolbox.drivers.base import Mount, VMSpec
from toolbox.drivers.libvirt.domain_xml import HostFacts, build_domain_xml, domain_name, domain_type_for


def make_spec(home: str, *, arch: str = "x86_64", accel: str = "tcg", port: int = 2222, writable: bool = True) -> VMSpec:
    d = Path(home) / ".toolbox/dev"
    return VMSpec(
        name="dev",
        instance_dir=d,
        arch=arch,
        cpus=2,
        memory_mib=2048,
        disk_size_gib=20,
        iso=d / "toolbox.iso",
        kernel=d / "vmlinuz",
        initrd=d / "initrd",
        kernel_cmdline="console=ttyS0,115200 quiet",
        cidata=d / "cidata.iso",
        data_disk=d / "disk.qcow2",
        ssh_port=port,
        accel=accel,
        serial_log=d / "serial.log",
        mounts=(Mount(Path("/src/proj"), Path("/src"), writable=writable),),
    )


TCG_XML = """<domain xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0" xmlns:toolbox="https://github.com/toolbox/xmlns/libvirt/1" type="qemu">
  <name>toolbox-dev</name>
  <title>toolbox instance dev</title>
  <metadata>
    <toolbox:instance dir="/home/u/.toolbox/dev" />
  </metadata>
  <memory unit="MiB">2048</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <kernel>/home/u/.toolbox/dev/vmlinuz</kernel>
    <initrd>/home/u/.toolbox/dev/initrd</initrd>
    <cmdline>console=ttyS0,115200 quiet</cmdline>
  </os>
  <features>
    <acpi />
    <apic />
  </features>
  <cpu mode="maximum" />
  <clock offset="utc" />
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2" discard="unmap" />
      <source file="/home/u/.toolbox/dev/disk.qcow2" />
      <target dev="vda" bus="virtio" />
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw" />
      <source file="/home/u/.toolbox/dev/toolbox.iso" />
      <target dev="sda" bus="sata" />
      <readonly />
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw" />
      <source file="/home/u/.toolbox/dev/cidata.iso" />
      <target dev="sdb" bus="sata" />
      <readonly />
    </disk>
    <filesystem type="mount" accessmode="squash">
      <source dir="/src/proj" />
      <target dir="tb3f0c9be07cc8" />
    </filesystem>
    <serial type="file">
      <source path="/home/u/.toolbox/dev/serial.log" append="on" />
      <target port="0" />
    </serial>
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
    <memballoon model="none" />
    <controller type="usb" model="none" />
  </devices>
  <seclabel type="static" model="dac" relabel="no">
    <label>+0:+0</label>
  </seclabel>
  <qemu:commandline>
    <qemu:arg value="-netdev" />
    <qemu:arg value="user,id=tbnet0,hostfwd=tcp:127.0.0.1:2222-:22" />
    <qemu:arg value="-device" />
    <qemu:arg value="virtio-net-pci,netdev=tbnet0,bus=pcie.0,addr=0x10" />
  </qemu:commandline>
</domain>
"""

KVM_PASST_XML = """<domain xmlns:toolbox="https://github.com/toolbox/xmlns/libvirt/1" type="kvm">
  <name>toolbox-dev</name>
  <title>toolbox instance dev</title>
  <metadata>
    <toolbox:instance dir="/home/u/.toolbox/dev" />
  </metadata>
  <memory unit="MiB">2048</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <kernel>/home/u/.toolbox/dev/vmlinuz</kernel>
    <initrd>/home/u/.toolbox/dev/initrd</initrd>
    <cmdline>console=ttyS0,115200 quiet</cmdline>
  </os>
  <features>
    <acpi />
    <apic />
  </features>
  <cpu mode="host-passthrough" />
  <clock offset="utc" />
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2" discard="unmap" />
      <source file="/home/u/.toolbox/dev/disk.qcow2" />
      <target dev="vda" bus="virtio" />
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw" />
      <source file="/home/u/.toolbox/dev/toolbox.iso" />
      <target dev="sda" bus="sata" />
      <readonly />
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw" />
      <source file="/home/u/.toolbox/dev/cidata.iso" />
      <target dev="sdb" bus="sata" />
      <readonly />
    </disk>
    <filesystem type="mount" accessmode="squash">
      <source dir="/src/proj" />
      <target dir="tb3f0c9be07cc8" />
    </filesystem>
    <interface type="user">
      <backend type="passt" />
      <portForward proto="tcp" address="127.0.0.1">
        <range start="2224" to="22" />
      </portForward>
      <model type="virtio" />
    </interface>
    <serial type="file">
      <source path="/home/u/.toolbox/dev/serial.log" append="on" />
      <target port="0" />
    </serial>
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
    <memballoon model="none" />
    <controller type="usb" model="none" />
  </devices>
  <seclabel type="static" model="dac" relabel="no">
    <label>+1000:+1000</label>
  </seclabel>
</domain>
"""

HVF_XML = """<domain xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0" xmlns:toolbox="https://github.com/toolbox/xmlns/libvirt/1" type="hvf">
  <name>toolbox-dev</name>
  <title>toolbox instance dev</title>
  <metadata>
    <toolbox:instance dir="/Users/u/.toolbox/dev" />
  </metadata>
  <memory unit="MiB">2048</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="aarch64" machine="virt">hvm</type>
    <kernel>/Users/u/.toolbox/dev/vmlinuz</kernel>
    <initrd>/Users/u/.toolbox/dev/initrd</initrd>
    <cmdline>console=ttyS0,115200 quiet</cmdline>
  </os>
  <features>
    <gic version="2" />
  </features>
  <cpu mode="host-passthrough" />
  <clock offset="utc" />
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/opt/homebrew/bin/qemu-system-aarch64</emulator>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2" discard="unmap" />
      <source file="/Users/u/.toolbox/dev/disk.qcow2" />
      <target dev="vda" bus="virtio" />
    </disk>
    <controller type="scsi" index="0" model="virtio-scsi" />
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw" />
      <source file="/Users/u/.toolbox/dev/toolbox.iso" />
      <target dev="sda" bus="scsi" />
      <readonly />
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw" />
      <source file="/Users/u/.toolbox/dev/cidata.iso" />
      <target dev="sdb" bus="scsi" />
      <readonly />
    </disk>
    <filesystem type="mount" accessmode="squash">
      <source dir="/src/proj" />
      <target dir="tb3f0c9be07cc8" />
      <readonly />
    </filesystem>
    <serial type="file">
      <source path="/Users/u/.toolbox/dev/serial.log" append="on" />
      <target port="0" />
    </serial>
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
    <memballoon model="none" />
    <controller type="usb" model="none" />
  </devices>
  <qemu:commandline>
    <qemu:arg value="-netdev" />
    <qemu:arg value="user,id=tbnet0,hostfwd=tcp:127.0.0.1:2223-:22" />
    <qemu:arg value="-device" />
    <qemu:arg value="virtio-net-pci,netdev=tbnet0,bus=pcie.0,addr=0x10" />
  </qemu:commandline>
</domain>
"""


def test_tcg_x86_64_with_qemu_user_networking() -> None:
    facts = HostFacts("qemu", "/usr/bin/qemu-system-x86_64", "qemu-user", (0, 0))
    assert build_domain_xml(make_spec("/home/u"), facts) == TCG_XML


def test_kvm_x86_64_with_passt() -> None:
    facts = HostFacts("kvm", "/usr/bin/qemu-system-x86_64", "passt", (1000, 1000))
    assert build_domain_xml(make_spec("/home/u", accel="kvm", port=2224), facts) == KVM_PASST_XML


def test_hvf_aarch64_session_read_only_share() -> None:
    facts = HostFacts("hvf", "/opt/homebrew/bin/qemu-system-aarch64", "qemu-user", None)
    spec = make_spec("/Users/u", arch="aarch64", accel="hvf", port=2223, writable=False)
    assert build_domain_xml(spec, facts) == HVF_XML


def test_deterministic() -> None:
    facts = HostFacts("qemu", "/usr/bin/qemu-system-x86_64", "qemu-user", None)
    assert build_domain_xml(make_spec("/h"), facts) == build_domain_xml(make_spec("/h"), facts)


def test_firmware_boot_from_the_iso_without_a_kernel() -> None:
    facts = HostFacts("qemu", "/usr/bin/qemu-system-x86_64", "qemu-user", None)
    spec = make_spec("/h")
    spec = VMSpec(**{**spec.__dict__, "kernel": None, "initrd": None})
    os_el = ET.fromstring(build_domain_xml(spec, facts)).find("os")
    assert os_el is not None
    assert os_el.find("kernel") is None
    assert os_el.find("boot").attrib == {"dev": "cdrom"}  # type: ignore[union-attr]


def test_paths_with_xml_special_characters_are_escaped() -> None:
    facts = HostFacts("qemu", "/usr/bin/qemu-system-x86_64", "qemu-user", None)
    xml = build_domain_xml(make_spec("/home/a&b<c>"), facts)
    disk = ET.fromstring(xml).find("devices/disk/source")
    assert disk is not None and disk.attrib["file"] == "/home/a&b<c>/.toolbox/dev/disk.qcow2"


@pytest.mark.parametrize(("accel", "expected"), [("tcg", "qemu"), ("kvm", "kvm"), ("hvf", "hvf")])
def test_domain_type_follows_the_probed_accelerator(accel: str, expected: str) -> None:
    assert domain_type_for(accel) == expected


def test_domain_name_is_prefixed() -> None:
    assert domain_name("dev") == "toolbox-dev"


def test_each_share_is_a_squashed_9p_export_named_by_its_tag() -> None:
    """The guest mounts Mount.tag; squash (QEMU's security_model=none) lets a QEMU run
    as the user create files for a container's root, owned by that user."""
    facts = HostFacts("qemu", "/usr/bin/qemu-system-x86_64", "qemu-user", None)
    spec = make_spec("/h", writable=False)
    fs = ET.fromstring(build_domain_xml(spec, facts)).findall("./devices/filesystem")
    assert len(fs) == 1
    assert fs[0].attrib == {"type": "mount", "accessmode": "squash"}
    assert fs[0].find("source").attrib == {"dir": "/src/proj"}  # type: ignore[union-attr]
    assert fs[0].find("target").attrib == {"dir": spec.mounts[0].tag}  # type: ignore[union-attr]
    assert fs[0].find("readonly") is not None
