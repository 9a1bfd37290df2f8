"""Which accelerator QEMU should use: "hvf" (macOS), "kvm" (Linux) or "tcg" (emulation).

The answer must never hang toolbox. On some hosts /dev/kvm exists yet a guest under it
hangs with no error (nested KVM on this project's build machines), so KVM is chosen only
after a probe proves it: a 512-byte boot sector, booted by QEMU with `-accel kvm`, must
take a few timer interrupts and exit QEMU through isa-debug-exit within PROBE_TIMEOUT
seconds. A healthy KVM does that in well under half a second; the broken nested KVM here
needs about 4 s, and a hung one never does. Anything else falls back to TCG.

The probe's verdict is kept in toolbox.paths.accel_cache_file(), keyed by the host
kernel release, the QEMU binary and the guest arch, so a kernel or QEMU upgrade probes
again. `--accel` (the `override` argument) or $TOOLBOX_ACCEL skip detection.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path

from toolbox import paths
from toolbox.errors import CommandTimedOut, ToolboxError, UsageError
from toolbox.run import run

log = logging.getLogger("toolbox.accel")

ACCELS = ("hvf", "kvm", "tcg")
PROBE_TIMEOUT = 2.5  # seconds; healthy KVM < 0.5 s, this host's broken nested KVM ~4 s
PROBE_EXIT_CODE = 33  # isa-debug-exit turns the guest's `out 0xf4, 0x10` into (0x10 << 1) | 1

# The probe payload, 16-bit real mode, loaded by SeaBIOS at 0x7c00:
#   sti                    ; let the BIOS's timer interrupt (IRQ0, 18.2 Hz) in
#   mov cx, 3
#   l: hlt                 ; wait for 3 ticks: proves interrupts reach the guest
#   loop l
#   mov al, 0x10
#   out 0xf4, al           ; isa-debug-exit: QEMU exits with PROBE_EXIT_CODE
#   cli / hlt / jmp $      ; never reached
_PROBE_CODE = bytes.fromhex("fb b9 03 00 f4 e2 fd b0 10 e6 f4 fa f4 eb fe".replace(" ", ""))
PROBE_BOOT_SECTOR = _PROBE_CODE + bytes(510 - len(_PROBE_CODE)) + b"\x55\xaa"


def detect_accel(arch: str, override: str | None = None) -> str:
    """The accelerator for a guest of `arch` ("x86_64" or "aarch64") on this host.

    `override` (the CLI's --accel), else $TOOLBOX_ACCEL, wins when set and not "auto";
    it is validated (UsageError for an unknown value or one this host cannot have).
    Otherwise: macOS with a guest of the host's arch → "hvf" (when the hypervisor
    framework is there); Linux → "kvm" only if the probe passes (cached); else "tcg".
    Never raises for a missing or broken KVM; never takes longer than ~PROBE_TIMEOUT.
    """
    chosen = override or os.environ.get("TOOLBOX_ACCEL") or "auto"
    host_os = platform.system()
    if chosen != "auto":
        return validate_accel(chosen, host_os)
    if not same_arch(arch, platform.machine()):
        return "tcg"  # no hardware acceleration across architectures
    if host_os == "Darwin":
        return "hvf" if _hvf_supported() else "tcg"
    if host_os == "Linux":
        return _cached_kvm_verdict(arch)
    return "tcg"


def validate_accel(value: str, host_os: str) -> str:
    """`value` if it is an accelerator this host could have, else UsageError."""
    if value not in ACCELS:
        raise UsageError(f"unknown accelerator {value!r}; choose one of: auto, {', '.join(ACCELS)}")
    if value == "hvf" and host_os != "Darwin":
        raise UsageError("accelerator 'hvf' exists only on macOS", hint="use --accel kvm or --accel tcg")
    if value == "kvm" and host_os != "Linux":
        raise UsageError("accelerator 'kvm' exists only on Linux", hint="use --accel hvf or --accel tcg")
    return value


def same_arch(guest_arch: str, host_machine: str) -> bool:
    """Whether a guest of `guest_arch` can run natively on a host whose uname -m is `host_machine`."""
    aliases = {"amd64": "x86_64", "arm64": "aarch64"}
    return aliases.get(host_machine.lower(), host_machine.lower()) == guest_arch


def qemu_binary(arch: str) -> str:
    """The QEMU system emulator's name for a guest arch."""
    return f"qemu-system-{arch}"


def _hvf_supported() -> bool:
    # An Intel Mac without VT-x (e.g. itself a VM) has no usable Hypervisor.framework.
    try:
        out = run(["sysctl", "-n", "kern.hv_support"], check=False, timeout=5.0)
    except ToolboxError:
        return False
    return out.stdout.strip() == "1"


def known_accel(arch: str) -> str | None:
    """What "auto" resolves to on this host, without probing (for `toolbox info`):
    hvf or tcg where no probe is needed, the cached probe's verdict on Linux with
    /dev/kvm, None when the probe has not run yet (the next `toolbox up` runs it)."""
    host_os = platform.system()
    if not same_arch(arch, platform.machine()) or host_os not in ("Darwin", "Linux"):
        return "tcg"
    if host_os == "Darwin":
        return "hvf" if _hvf_supported() else "tcg"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    binary = shutil.which(qemu_binary(arch))
    if binary is None:
        return None
    cached = _read_cache()
    if cached.get("key") == _cache_key(arch, Path(binary)) and cached.get("accel") in ("kvm", "tcg"):
        return str(cached["accel"])
    return None


def _cached_kvm_verdict(arch: str) -> str:
    """The probe's verdict for this host, from the cache when its key still matches."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    binary = shutil.which(qemu_binary(arch))
    if binary is None:
        return "tcg"  # the driver's check_installed reports the missing QEMU
    key = _cache_key(arch, Path(binary))
    cached = _read_cache()
    if cached.get("key") == key and cached.get("accel") in ("kvm", "tcg"):
        return str(cached["accel"])
    verdict = "kvm" if probe_kvm(binary, arch) else "tcg"
    _write_cache({"key": key, "accel": verdict})
    return verdict


def _cache_key(arch: str, binary: Path) -> dict[str, object]:
    # The binary's size and mtime stand for its version: they change on any upgrade and,
    # unlike `qemu --version`, cost no process start on every `toolbox up`.
    st = binary.stat()
    return {
        "arch": arch,
        "kernel": platform.release(),
        "qemu": str(binary),
        "qemu_size": st.st_size,
        "qemu_mtime_ns": st.st_mtime_ns,
    }


def _read_cache() -> dict[str, object]:
    try:
        data = json.loads(paths.accel_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(data: dict[str, object]) -> None:
    target = paths.accel_cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, target)  # atomic: a concurrent reader sees the old or the new file
    except OSError as exc:
        log.debug("cannot cache the accelerator verdict: %s", exc)


def probe_kvm(binary: str, arch: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether QEMU under KVM boots the probe payload and exits within `timeout` seconds.

    The QEMU process is killed when the time runs out (run() kills on timeout), so a
    hung KVM costs `timeout` seconds once, never a hang.
    """
    if arch != "x86_64":
        return _probe_kvm_aarch64(binary, timeout)
    with tempfile.TemporaryDirectory(prefix="toolbox-probe-") as tmp:
        image = Path(tmp) / "probe.img"
        image.write_bytes(PROBE_BOOT_SECTOR)
        argv = [binary, "-accel", "kvm", "-machine", "pc", "-nodefaults", "-display", "none",
                "-no-reboot", "-m", "16", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "-drive", f"file={image},format=raw,if=floppy"]  # fmt: skip
        return _run_probe(argv, timeout)


# aarch64: a raw image the virt board jumps to; it asks PSCI (via hvc, the conduit QEMU
# uses for KVM guests) for SYSTEM_OFF, which makes QEMU exit 0:
#   movz x0, #0x0008 ; movk x0, #0x8400, lsl #16 ; hvc #0 ; b .
_PROBE_AARCH64 = bytes.fromhex("000180d2" "0080b0f2" "020000d4" "00000014")


def _probe_kvm_aarch64(binary: str, timeout: float) -> bool:
    with tempfile.TemporaryDirectory(prefix="toolbox-probe-") as tmp:
        image = Path(tmp) / "probe.bin"
        image.write_bytes(_PROBE_AARCH64)
        argv = [binary, "-accel", "kvm", "-machine", "virt,gic-version=host", "-cpu", "host",
                "-nodefaults", "-display", "none", "-no-reboot", "-m", "64",
                "-kernel", str(image)]  # fmt: skip
        return _run_probe(argv, timeout, expect=0)


def _run_probe(argv: list[str], timeout: float, expect: int = PROBE_EXIT_CODE) -> bool:
    try:
        # input="" gives QEMU a pipe, not the user's terminal, on stdin.
        result = run(argv, check=False, timeout=timeout, input="")
    except CommandTimedOut:
        log.info("KVM probe did not finish within %g s: using TCG", timeout)
        return False
    except ToolboxError as exc:
        log.info("KVM probe failed (%s): using TCG", exc)
        return False
    ok = result.returncode == expect
    if not ok:
        log.info("KVM probe exited %d (%s): using TCG", result.returncode, result.stderr.strip()[-200:])
    return ok
