"""Parsing `showvminfo --machinereadable` (tests/fixtures/virtualbox/, see its README)
and the exact argv of each VBoxManage command the driver runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolbox.drivers.base import Mount, VMSpec, VMState
from toolbox.drivers.virtualbox import vboxmanage as vbm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "virtualbox"
DEV = "/Users/alice/.toolbox/dev"


def fixture(state: str) -> vbm.VMInfo:
    return vbm.parse_vminfo((FIXTURES / f"showvminfo-{state}.txt").read_text())


@pytest.mark.parametrize(
    ("state", "expected", "reasons"),
    [
        ("running", VMState.RUNNING, ()),
        ("poweroff", VMState.STOPPED, ()),
        ("saved", VMState.SUSPENDED, ("memory saved to disk (VirtualBox saved state)",)),
        ("paused", VMState.SUSPENDED, ("paused in memory",)),
        ("aborted", VMState.STOPPED, ("aborted: the VM process ended without a clean power-off",)),
    ],
)
def test_every_fixture_state(state: str, expected: VMState, reasons: tuple[str, ...]) -> None:
    info = fixture(state)
    assert info.vm_state == state
    assert (info.status.state, info.status.reasons) == (expected, reasons)


@pytest.mark.parametrize("state", ["running", "poweroff", "saved", "paused", "aborted"])
def test_every_fixture_settings(state: str) -> None:
    info = fixture(state)
    assert info.name == "toolbox-dev"
    assert len(info.uuid) == 36
    assert (info.memory_mib, info.cpus, info.firmware) == (2048, 2, "BIOS")
    assert info.forwards == (
        vbm.Forward("ssh", "tcp", "127.0.0.1", 2222, "", 22),
        vbm.Forward("docker-8080", "tcp", "127.0.0.1", 8080, "", 8080),
    )
    assert info.forward("ssh") == info.forwards[0]
    assert info.attachments == (
        vbm.Attachment("SATA", 0, 0, f"{DEV}/toolbox.iso"),
        vbm.Attachment("SATA", 1, 0, f"{DEV}/cidata.iso"),
        vbm.Attachment("SATA", 2, 0, f"{DEV}/disk.vdi"),
    )
    assert info.medium_at("SATA", 2) == f"{DEV}/disk.vdi"
    # The host path holds a space and escaped quotes: \" in the file is " here.
    assert info.shared_folders == (vbm.SharedFolder("tb1f2e3d4c5b6a", '/Users/alice/src/my "app"'),)
    assert info.uart_mode == f"file,{DEV}/serial.log"
    assert info.raw["BIOS NVRAM File"].endswith("toolbox-dev.nvram")  # a quoted key with spaces
    assert "Encryption" not in info.raw  # VirtualBox 7's one human-style line is skipped


def test_saved_state_file_and_running_only_keys() -> None:
    assert fixture("saved").raw["VMStateFile"].endswith("toolbox-dev.sav")
    assert fixture("running").raw["SessionName"] == "headless"
    assert fixture("running").raw["VideoMode"] == "720,400,0"  # the odd "..."@0,0 1 line
    assert "SessionName" not in fixture("poweroff").raw


def test_escapes_and_empty_values() -> None:
    pairs = vbm.parse_pairs('a="x\\\\y\\"z"\nb=""\n"C-1-0"="none"\nnum=12\n\ngarbage line\n')
    assert pairs == {"a": 'x\\y"z', "b": "", "C-1-0": "none", "num": "12"}


def test_not_machinereadable_output_is_refused() -> None:
    with pytest.raises(ValueError):
        vbm.parse_vminfo("Name:   toolbox-dev\nState:  running\n")


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("starting", VMState.RUNNING), ("restoring", VMState.RUNNING), ("stopping", VMState.RUNNING),
        ("saving", VMState.RUNNING), ("teleported", VMState.STOPPED), ("gurumeditation", VMState.BROKEN),
        ("something-new", VMState.BROKEN),
    ],
)  # fmt: skip
def test_other_states(word: str, expected: VMState) -> None:
    assert vbm.map_state(word).state is expected


def test_error_message_skips_details_and_context() -> None:
    out = (
        "VBoxManage: error: Could not find a registered machine named 'toolbox-x'\n"
        "VBoxManage: error: Details: code VBOX_E_OBJECT_NOT_FOUND (0x80bb0001), component VirtualBoxWrap\n"
        'VBoxManage: error: Context: "FindMachine(...)" at line 3064 of file VBoxManageMisc.cpp\n'
    )
    assert vbm.error_message(out) == "Could not find a registered machine named 'toolbox-x'"
    assert vbm.is_not_found(out)
    assert vbm.error_message("") == "no output"


def _spec() -> VMSpec:
    d = Path(DEV)
    return VMSpec(
        name="dev", instance_dir=d, arch="x86_64", cpus=2, memory_mib=2048, disk_size_gib=20,
        iso=d / "toolbox.iso", kernel=None, initrd=None, kernel_cmdline="", cidata=d / "cidata.iso",
        data_disk=d / "disk.vdi", ssh_port=2222, accel="tcg", serial_log=d / "serial.log",
    )  # fmt: skip


def test_argv_builders() -> None:
    spec = _spec()
    assert vbm.createvm("toolbox-dev", Path(f"{DEV}/vbox")) == [
        "VBoxManage", "createvm", "--name", "toolbox-dev", "--ostype", "Linux26_64",
        "--basefolder", f"{DEV}/vbox", "--register",
    ]  # fmt: skip
    assert vbm.modifyvm("toolbox-dev", spec) == [
        "VBoxManage", "modifyvm", "toolbox-dev", "--memory", "2048", "--cpus", "2", "--firmware", "bios",
        "--ioapic", "on", "--rtcuseutc", "on", "--boot1", "dvd", "--boot2", "none", "--boot3", "none",
        "--boot4", "none", "--audio-driver", "none", "--nic1", "nat", "--nictype1", "virtio",
        "--cableconnected1", "on", "--natpf1", "ssh,tcp,127.0.0.1,2222,,22", "--uart1", "0x3F8", "4",
        "--uartmode1", "file", f"{DEV}/serial.log",
    ]  # fmt: skip
    assert vbm.storagectl("toolbox-dev") == [
        "VBoxManage", "storagectl", "toolbox-dev", "--name", "SATA", "--add", "sata",
        "--controller", "IntelAhci", "--portcount", "3", "--bootable", "on",
    ]  # fmt: skip
    assert vbm.createmedium(spec.data_disk, 20) == [
        "VBoxManage", "createmedium", "disk", "--filename", f"{DEV}/disk.vdi", "--format", "VDI",
        "--variant", "Standard", "--size", "20480",
    ]  # fmt: skip
    assert vbm.storageattach("toolbox-dev", 2, "hdd", spec.data_disk) == [
        "VBoxManage", "storageattach", "toolbox-dev", "--storagectl", "SATA", "--port", "2",
        "--device", "0", "--type", "hdd", "--medium", f"{DEV}/disk.vdi",
    ]  # fmt: skip
    ro = Mount(Path("/Users/alice/src"), Path("/src"), writable=False)
    assert vbm.sharedfolder_add("toolbox-dev", ro) == [
        "VBoxManage", "sharedfolder", "add", "toolbox-dev", "--name", ro.tag,
        "--hostpath", "/Users/alice/src", "--readonly",
    ]  # fmt: skip
    assert vbm.startvm("toolbox-dev") == ["VBoxManage", "startvm", "toolbox-dev", "--type", "headless"]
    assert vbm.controlvm("toolbox-dev", "acpipowerbutton") == ["VBoxManage", "controlvm", "toolbox-dev", "acpipowerbutton"]
    assert vbm.unregistervm("toolbox-dev") == ["VBoxManage", "unregistervm", "toolbox-dev", "--delete"]
    assert vbm.showvminfo("toolbox-dev") == ["VBoxManage", "showvminfo", "toolbox-dev", "--machinereadable"]
