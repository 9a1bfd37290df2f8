"""Accelerator detection: overrides, platform rules, the KVM probe and its cache.

The probe's QEMU is faked at the run() choke point; one real test runs the real probe.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from toolbox import accel
from toolbox.errors import CommandTimedOut, UsageError
from toolbox.run import Completed


class FakeRun:
    """Stands in for toolbox.run.run inside toolbox.accel; records each argv."""

    def __init__(self, returncode: int = accel.PROBE_EXIT_CODE, *, hang: bool = False) -> None:
        self.returncode = returncode
        self.hang = hang
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **kwargs: object) -> Completed:
        self.calls.append([str(a) for a in argv])
        if self.hang:
            raise CommandTimedOut(argv, float(kwargs["timeout"]))  # type: ignore[arg-type]
        return Completed([str(a) for a in argv], self.returncode, "", "")


@pytest.fixture
def linux(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A Linux x86_64 host with a usable /dev/kvm and a qemu binary; TOOLBOX_HOME in tmp."""
    monkeypatch.setenv("TOOLBOX_HOME", str(tmp_path))
    monkeypatch.delenv("TOOLBOX_ACCEL", raising=False)
    monkeypatch.setattr(accel.platform, "system", lambda: "Linux")
    monkeypatch.setattr(accel.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(accel.platform, "release", lambda: "6.1.0-test")
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_text("fake")
    monkeypatch.setattr(accel.shutil, "which", lambda name: str(binary))
    monkeypatch.setattr(accel.os, "access", lambda path, mode: True)
    return binary


def fake(monkeypatch: pytest.MonkeyPatch, runner: FakeRun) -> FakeRun:
    monkeypatch.setattr(accel, "run", runner)
    return runner


def test_working_kvm_is_used_and_remembered(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = fake(monkeypatch, FakeRun())
    assert accel.detect_accel("x86_64") == "kvm"
    assert accel.detect_accel("x86_64") == "kvm"
    assert len(runner.calls) == 1  # the second answer came from the cache
    argv = runner.calls[0]
    assert argv[:3] == [str(linux), "-accel", "kvm"]
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in argv
    cached = json.loads((linux.parent / "accel.json").read_text())
    assert cached["accel"] == "kvm" and cached["key"]["kernel"] == "6.1.0-test"


def test_hanging_kvm_falls_back_to_tcg(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = fake(monkeypatch, FakeRun(hang=True))
    assert accel.detect_accel("x86_64") == "tcg"
    assert accel.detect_accel("x86_64") == "tcg"
    assert len(runner.calls) == 1


def test_kvm_that_fails_falls_back_to_tcg(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(monkeypatch, FakeRun(returncode=1))
    assert accel.detect_accel("x86_64") == "tcg"


def test_new_kernel_probes_again(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = fake(monkeypatch, FakeRun(hang=True))
    assert accel.detect_accel("x86_64") == "tcg"
    monkeypatch.setattr(accel.platform, "release", lambda: "6.2.0-new")
    runner.hang = False
    assert accel.detect_accel("x86_64") == "kvm"
    assert len(runner.calls) == 2


def test_upgraded_qemu_probes_again(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = fake(monkeypatch, FakeRun())
    accel.detect_accel("x86_64")
    linux.write_text("a bigger fake binary")
    accel.detect_accel("x86_64")
    assert len(runner.calls) == 2


def test_unusable_dev_kvm_means_tcg_without_probe(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = fake(monkeypatch, FakeRun())
    monkeypatch.setattr(accel.os, "access", lambda path, mode: False)
    assert accel.detect_accel("x86_64") == "tcg"
    assert runner.calls == []


def test_other_arch_guest_is_emulated(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = fake(monkeypatch, FakeRun())
    assert accel.detect_accel("aarch64") == "tcg"
    assert runner.calls == []


def test_corrupt_cache_is_ignored(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (linux.parent / "accel.json").write_text("{not json")
    fake(monkeypatch, FakeRun())
    assert accel.detect_accel("x86_64") == "kvm"


@pytest.mark.parametrize("host_arch", ["x86_64", "arm64"])
def test_macos_uses_hvf_for_its_own_arch(monkeypatch: pytest.MonkeyPatch, host_arch: str) -> None:
    monkeypatch.delenv("TOOLBOX_ACCEL", raising=False)
    monkeypatch.setattr(accel.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(accel.platform, "machine", lambda: host_arch)
    monkeypatch.setattr(accel, "run", lambda argv, **kw: Completed(list(argv), 0, "1\n", ""))
    guest = "aarch64" if host_arch == "arm64" else "x86_64"
    other = "x86_64" if guest == "aarch64" else "aarch64"
    assert accel.detect_accel(guest) == "hvf"
    assert accel.detect_accel(other) == "tcg"


def test_macos_without_hypervisor_support_emulates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLBOX_ACCEL", raising=False)
    monkeypatch.setattr(accel.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(accel.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(accel, "run", lambda argv, **kw: Completed(list(argv), 0, "0\n", ""))
    assert accel.detect_accel("x86_64") == "tcg"


def test_override_wins_without_probing(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = fake(monkeypatch, FakeRun())
    assert accel.detect_accel("x86_64", "tcg") == "tcg"
    monkeypatch.setenv("TOOLBOX_ACCEL", "tcg")
    assert accel.detect_accel("x86_64") == "tcg"
    assert accel.detect_accel("x86_64", "kvm") == "kvm"  # the argument beats the env
    assert runner.calls == []


def test_auto_override_means_detect(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(monkeypatch, FakeRun())
    monkeypatch.setenv("TOOLBOX_ACCEL", "auto")
    assert accel.detect_accel("x86_64") == "kvm"


@pytest.mark.parametrize(("value", "message"), [("xen", "unknown accelerator"), ("hvf", "only on macOS")])
def test_bad_override_is_a_usage_error(linux: Path, value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        accel.detect_accel("x86_64", value)


def test_kvm_on_macos_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel.platform, "system", lambda: "Darwin")
    with pytest.raises(UsageError, match="only on Linux"):
        accel.detect_accel("x86_64", "kvm")


def test_probe_boot_sector_is_bootable() -> None:
    assert len(accel.PROBE_BOOT_SECTOR) == 512
    assert accel.PROBE_BOOT_SECTOR.endswith(b"\x55\xaa")


@pytest.mark.skipif(
    not (os.path.exists("/dev/kvm") and shutil.which("qemu-system-x86_64")),
    reason="needs /dev/kvm and qemu-system-x86_64",
)
def test_real_probe_on_this_machine_says_tcg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The truth on the project's build machines: /dev/kvm exists but hangs guests."""
    monkeypatch.setenv("TOOLBOX_HOME", str(tmp_path))
    monkeypatch.delenv("TOOLBOX_ACCEL", raising=False)
    started = time.monotonic()
    assert accel.detect_accel("x86_64") == "tcg"
    assert time.monotonic() - started < 10.0
    assert json.loads((tmp_path / "accel.json").read_text())["accel"] == "tcg"


def test_known_accel_reads_the_cache_and_never_probes(linux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = fake(monkeypatch, FakeRun())
    assert accel.known_accel("x86_64") is None  # not probed yet
    assert accel.detect_accel("x86_64") == "kvm"
    assert accel.known_accel("x86_64") == "kvm"
    assert accel.known_accel("aarch64") == "tcg"  # emulated, no probe needed
    monkeypatch.setattr(accel.os, "access", lambda path, mode: False)
    assert accel.known_accel("x86_64") == "tcg"
    assert len(runner.calls) == 1  # only detect_accel probed
