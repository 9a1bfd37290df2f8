"""VirtualBoxDriver against the fake VBoxManage (tests/fakes/VBoxManage), which keeps VM
state across calls and logs every argv: the exact command sequences of create, start,
stop and delete, and the bad cases (VBoxManage missing or failing mid-create).

No VirtualBox runs here: the fake only models VirtualBox's bookkeeping and states.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from toolbox.drivers.base import Mount, VMSpec, VMState
from toolbox.drivers.virtualbox.driver import VirtualBoxDriver
from toolbox.errors import DriverError, ToolMissing

FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture
def vbox_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "vbox-home"
    monkeypatch.setenv("PATH", f"{FAKES}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_VBOX_HOME", str(home))
    for knob in ("FAKE_VBOX_FAIL", "FAKE_VBOX_IGNORE_ACPI"):
        monkeypatch.delenv(knob, raising=False)
    return home


@pytest.fixture
def spec(tmp_path: Path) -> VMSpec:
    d = tmp_path / "dev"
    d.mkdir()
    (d / "toolbox.iso").write_bytes(b"iso")
    (d / "cidata.iso").write_bytes(b"cidata")
    share = tmp_path / "src"
    share.mkdir()
    return VMSpec(
        name="dev", instance_dir=d, arch="x86_64", cpus=2, memory_mib=2048, disk_size_gib=20,
        iso=d / "toolbox.iso", kernel=None, initrd=None, kernel_cmdline="", cidata=d / "cidata.iso",
        data_disk=d / "disk.vdi", ssh_port=2222, accel="tcg", serial_log=d / "serial.log",
        mounts=(Mount(share, Path("/src")),),
    )  # fmt: skip


def calls(home: Path) -> list[list[str]]:
    """Every argv the fake saw since the last call (the log is emptied)."""
    log = home / "calls.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    log.write_text("")
    return lines


def registered(home: Path) -> list[str]:
    out = subprocess.run(["VBoxManage", "list", "vms"], capture_output=True, text=True, check=True).stdout
    calls(home)
    return out.splitlines()


def info(vm: str) -> list[str]:
    return ["showvminfo", vm, "--machinereadable"]


def test_create_start_stop_delete_command_sequence(vbox_home: Path, spec: VMSpec) -> None:
    driver = VirtualBoxDriver()
    d, vm = spec.instance_dir, "toolbox-dev"
    driver.create(spec)
    assert calls(vbox_home) == [
        info(vm),
        ["createvm", "--name", vm, "--ostype", "Linux26_64", "--basefolder", f"{d}/vbox", "--register"],
        ["modifyvm", vm, "--memory", "2048", "--cpus", "2", "--firmware", "bios", "--ioapic", "on",
         "--rtcuseutc", "on", "--boot1", "dvd", "--boot2", "none", "--boot3", "none", "--boot4", "none",
         "--audio-driver", "none", "--nic1", "nat", "--nictype1", "virtio", "--cableconnected1", "on",
         "--natpf1", "ssh,tcp,127.0.0.1,2222,,22", "--uart1", "0x3F8", "4", "--uartmode1", "file", f"{d}/serial.log"],
        ["storagectl", vm, "--name", "SATA", "--add", "sata", "--controller", "IntelAhci", "--portcount", "3",
         "--bootable", "on"],
        ["createmedium", "disk", "--filename", f"{d}/disk.vdi", "--format", "VDI", "--variant", "Standard",
         "--size", "20480"],
        ["storageattach", vm, "--storagectl", "SATA", "--port", "0", "--device", "0", "--type", "dvddrive",
         "--medium", f"{d}/toolbox.iso"],
        ["storageattach", vm, "--storagectl", "SATA", "--port", "1", "--device", "0", "--type", "dvddrive",
         "--medium", f"{d}/cidata.iso"],
        ["storageattach", vm, "--storagectl", "SATA", "--port", "2", "--device", "0", "--type", "hdd",
         "--medium", f"{d}/disk.vdi"],
        ["sharedfolder", "add", vm, "--name", spec.mounts[0].tag, "--hostpath", str(spec.mounts[0].host_path)],
        ["setextradata", vm, f"VBoxInternal2/SharedFoldersEnableSymlinksCreate/{spec.mounts[0].tag}", "1"],
    ]  # fmt: skip
    assert driver.status(spec).state is VMState.STOPPED
    assert spec.data_disk.exists()
    calls(vbox_home)

    driver.start(spec)
    assert calls(vbox_home) == [info(vm), ["startvm", vm, "--type", "headless"]]
    driver.start(spec)  # idempotent: looks, does nothing
    assert calls(vbox_home) == [info(vm)]
    assert driver.status(spec).state is VMState.RUNNING
    calls(vbox_home)

    driver.stop(spec, timeout=10.0)
    assert calls(vbox_home) == [info(vm), ["controlvm", vm, "acpipowerbutton"], info(vm)]
    assert driver.status(spec).state is VMState.STOPPED
    calls(vbox_home)

    driver.delete(spec)
    assert calls(vbox_home) == [
        info(vm),
        ["storageattach", vm, "--storagectl", "SATA", "--port", "0", "--device", "0", "--type", "dvddrive",
         "--medium", "none"],
        ["storageattach", vm, "--storagectl", "SATA", "--port", "1", "--device", "0", "--type", "dvddrive",
         "--medium", "none"],
        ["unregistervm", vm, "--delete"],
        ["closemedium", "dvd", f"{d}/toolbox.iso"],
        ["closemedium", "dvd", f"{d}/cidata.iso"],
    ]  # fmt: skip
    assert driver.status(spec).state is VMState.MISSING
    assert registered(vbox_home) == []
    # The VM's files are gone; the image and the config drive (not VirtualBox's) stay.
    assert sorted(p.name for p in d.iterdir()) == ["cidata.iso", "toolbox.iso"]
    driver.delete(spec)  # deleting a missing VM does nothing


def test_hung_guest_is_powered_off_after_the_time_limit(
    vbox_home: Path, spec: VMSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = VirtualBoxDriver()
    driver.create(spec)
    driver.start(spec)
    monkeypatch.setenv("FAKE_VBOX_IGNORE_ACPI", "1")
    calls(vbox_home)
    driver.stop(spec, timeout=1.2)
    seen = [c[2] for c in calls(vbox_home) if c[0] == "controlvm"]
    assert seen[0] == "acpipowerbutton" and seen[-1] == "poweroff"
    assert driver.status(spec).state is VMState.STOPPED


def test_force_stop_pulls_the_plug_at_once(vbox_home: Path, spec: VMSpec) -> None:
    driver = VirtualBoxDriver()
    driver.create(spec)
    driver.start(spec)
    calls(vbox_home)
    driver.stop(spec, force=True)
    assert calls(vbox_home) == [info("toolbox-dev"), ["controlvm", "toolbox-dev", "poweroff"]]


def test_suspend_resume_reset(vbox_home: Path, spec: VMSpec) -> None:
    driver = VirtualBoxDriver()
    driver.create(spec)
    driver.start(spec)
    driver.suspend(spec)
    assert driver.status(spec).state is VMState.SUSPENDED
    calls(vbox_home)
    driver.resume(spec)  # from "saved", startvm restores the memory
    assert calls(vbox_home) == [info("toolbox-dev"), ["startvm", "toolbox-dev", "--type", "headless"]]
    driver.reset(spec)
    assert driver.status(spec).state is VMState.RUNNING
    with pytest.raises(DriverError, match="stop it before changing its settings"):
        driver.reconfigure(spec)


def test_reconfigure_a_stopped_vm(vbox_home: Path, spec: VMSpec) -> None:
    driver = VirtualBoxDriver()
    driver.create(spec)
    bigger = VMSpec(**{**spec.__dict__, "cpus": 4, "memory_mib": 4096, "ssh_port": 2300})
    driver.reconfigure(bigger)
    now = driver.info(bigger)
    assert now is not None
    assert (now.cpus, now.memory_mib, now.forward("ssh").host_port) == (4, 4096, 2300)  # type: ignore[union-attr]
    assert now.medium_at("SATA", 2) == str(spec.data_disk)  # the data disk is untouched


def test_vboxmanage_missing_is_tool_missing(tmp_path: Path, spec: VMSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    driver = VirtualBoxDriver()
    with pytest.raises(ToolMissing) as err:
        driver.check_installed()
    assert "VBoxManage is not installed" in str(err.value) and "virtualbox.org" in str(err.value)
    with pytest.raises(ToolMissing):
        driver.create(spec)
    assert not spec.data_disk.exists()


@pytest.mark.parametrize(
    ("fail", "doing"),
    [
        ("createvm", "creating toolbox-dev"),
        ("modifyvm", "configuring toolbox-dev"),
        ("storagectl", "adding the disk controller"),
        ("createmedium", "creating the data disk"),
        ("storageattach:2", "attaching the config drive"),
        ("storageattach:3", "attaching the data disk"),
        ("sharedfolder", "sharing"),
    ],
)
def test_failure_mid_create_leaves_nothing(
    vbox_home: Path, spec: VMSpec, monkeypatch: pytest.MonkeyPatch, fail: str, doing: str
) -> None:
    monkeypatch.setenv("FAKE_VBOX_FAIL", fail)
    driver = VirtualBoxDriver()
    with pytest.raises(DriverError) as err:
        driver.create(spec)
    message = str(err.value)
    assert message.startswith(f"virtualbox: {doing}") and "injected by FAKE_VBOX_FAIL" in message
    assert "\n" not in message and "Details:" not in message
    monkeypatch.delenv("FAKE_VBOX_FAIL")
    assert registered(vbox_home) == []
    assert driver.status(spec).state is VMState.MISSING
    assert sorted(p.name for p in spec.instance_dir.iterdir()) == ["cidata.iso", "toolbox.iso"]
    driver.create(spec)  # and a retry works
    assert driver.status(spec).state is VMState.STOPPED


def test_name_taken_creates_nothing(vbox_home: Path, spec: VMSpec, tmp_path: Path) -> None:
    driver = VirtualBoxDriver()
    driver.create(spec)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = VMSpec(**{**spec.__dict__, "instance_dir": other_dir, "data_disk": other_dir / "disk.vdi"})
    with pytest.raises(DriverError, match="already registered"):
        driver.create(other)
    assert list(other_dir.iterdir()) == []
    assert len(registered(vbox_home)) == 1


def test_vboxmanage_error_is_one_line(vbox_home: Path, spec: VMSpec) -> None:
    driver = VirtualBoxDriver()
    driver.create(spec)
    spec.iso.unlink()  # the image vanished from the cache: VirtualBox refuses to start
    with pytest.raises(DriverError) as err:
        driver.start(spec)
    assert str(err.value).startswith("virtualbox: starting toolbox-dev: Could not open the medium")


def test_fake_rejects_what_vboxmanage_rejects(vbox_home: Path) -> None:
    for argv in (["frobnicate"], ["createvm", "--name", "x", "--bogus"], ["controlvm", "nope", "poweroff"]):
        proc = subprocess.run(["VBoxManage", *argv], capture_output=True, text=True)
        assert proc.returncode == 1
        assert proc.stderr.startswith("VBoxManage: error: ")


def _fake_vm(home: Path) -> dict:  # type: ignore[type-arg]
    (vm,) = json.loads((home / "state.json").read_text())["vms"].values()
    return vm  # type: ignore[no-any-return]


def test_shares_read_write_and_read_only_and_changed_while_stopped(vbox_home: Path, spec: VMSpec, tmp_path: Path) -> None:
    ro = Mount(tmp_path / "ro", Path("/ro"), writable=False)
    spec = VMSpec(**{**spec.__dict__, "mounts": (spec.mounts[0], ro)})
    driver = VirtualBoxDriver()
    driver.create(spec)
    vm, (rw, _) = "toolbox-dev", spec.mounts
    shares = [c for c in calls(vbox_home) if c[0] in ("sharedfolder", "setextradata")]
    assert shares == [
        ["sharedfolder", "add", vm, "--name", rw.tag, "--hostpath", str(rw.host_path)],
        ["setextradata", vm, f"VBoxInternal2/SharedFoldersEnableSymlinksCreate/{rw.tag}", "1"],
        ["sharedfolder", "add", vm, "--name", ro.tag, "--hostpath", str(ro.host_path), "--readonly"],
    ]  # fmt: skip
    assert [(f["name"], f["readonly"]) for f in _fake_vm(vbox_home)["shared"]] == [(rw.tag, False), (ro.tag, True)]
    # A new set while stopped: the old folders go, the new come (a documented re-init path).
    data = Mount(tmp_path / "data", Path("/data"))
    driver.reconfigure(VMSpec(**{**spec.__dict__, "mounts": (data,)}))
    assert [f["name"] for f in _fake_vm(vbox_home)["shared"]] == [data.tag]
    assert ["sharedfolder", "remove", vm, "--name", ro.tag] in calls(vbox_home)
    driver.start(spec)
    with pytest.raises(DriverError, match="stop it before changing"):
        driver.reconfigure(spec)


def test_fake_refuses_a_permanent_share_on_a_running_vm(vbox_home: Path, spec: VMSpec, tmp_path: Path) -> None:
    """As VirtualBox documents: only a --transient share can be added to a running VM."""
    driver = VirtualBoxDriver()
    driver.create(spec)
    driver.start(spec)
    argv = ["VBoxManage", "sharedfolder", "add", "toolbox-dev", "--name", "x", "--hostpath", str(tmp_path)]
    refused = subprocess.run(argv, capture_output=True, text=True)
    assert refused.returncode == 1 and "already locked for a session" in refused.stderr
    assert subprocess.run([*argv, "--transient"], capture_output=True, text=True).returncode == 0
