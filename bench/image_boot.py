"""Issue 2's figures, measured with bench/boot.py's own functions (the image engineer's
method): QEMU start → sshd banner vs the bare-kernel floor, pair by pair; idle guest
memory; ISO size.

Each round: the floor (same kernel, same accelerator, memory and CPUs, a busybox initramfs
that powers off at once), then the image booted as the host boots it. One unmeasured boot
first formats the empty data disk, so every measured round mounts an existing one, as a
user's every boot after the first does.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from figures import Figure, Target
from lab import BenchError, Lab

MEMORY_MB, CPUS = 1024, 2


def run(lab: Lab, rounds: int, say: Callable[[str], None]) -> list[Figure]:
    import boot
    import image_helpers
    from image_helpers import GuestVM, KeyPair, create_disk, write_cidata

    boot.IMAGE_OUT = image_helpers.IMAGE_OUT = lab.release  # the run's snapshot, not vm-image/out
    work = lab.work / "image"
    work.mkdir()
    login, host = KeyPair.generate("bench"), KeyPair.generate("root@bench")
    cidata = work / "cidata.iso"
    # The ids toolbox's CLI gives the guest user on this host (root's become 1000), so the
    # image boots as `toolbox up` boots it here.
    write_cidata(cidata, login, host, hostname="bench", uid=os.getuid() or 1000, gid=os.getgid() or 1000)
    disk = create_disk(work / "disk.qcow2")
    initrd = boot.floor_initrd(work)

    def one_boot() -> dict[str, float]:
        vm = GuestVM(work, "kernel", cidata=cidata, disk=disk, memory_mb=MEMORY_MB, cpus=CPUS)
        try:
            return boot.measure_boot(vm, login)
        except (SystemExit, AssertionError) as exc:  # boot.py reports a failed boot with SystemExit
            tail = vm.serial()[-1500:]
            raise BenchError(f"boot failed: {exc}\n--- serial log tail ---\n{tail}") from None
        finally:
            vm.kill()

    say("image: warm-up boot (formats the data disk)")
    try:
        one_boot()
    except BenchError as exc:
        say(f"image: warm-up {exc}")
    floors, boots, failed = [], [], []
    for i in range(rounds):
        floor = boot.measure_floor(initrd, MEMORY_MB, CPUS)
        try:
            boots.append(one_boot())
        except BenchError as exc:
            failed.append(str(exc).split("\n", 1)[0])
            say(f"image round {i + 1}/{rounds}: {exc}")
            continue
        floors.append(floor)
        say(f"image round {i + 1}/{rounds}: floor {floors[-1]:.2f} s, sshd {boots[-1]['sshd_s']:.2f} s, "
            f"agent {boots[-1]['agent_ping_s']:.2f} s, idle {boots[-1]['idle_used_mb']:.0f} MiB")
    iso_bytes = (lab.release / "toolbox.iso").stat().st_size
    accel = "tcg"  # boot.py always boots under TCG
    if not boots:
        raise BenchError(f"every measured boot failed: {failed[0]}")
    fails = f"; {len(failed)} of {rounds} rounds failed ({failed[0]})" if failed else ""
    return [
        Figure("image boot: QEMU start → sshd banner", "s", [b["sshd_s"] for b in boots], accel,
               floors, "bare-kernel floor", Target("ratio", 2.0, 2), note=fails.lstrip("; ")),
        Figure("image boot: QEMU start → agent /_ping", "s", [b["agent_ping_s"] for b in boots], accel,
               floors, "bare-kernel floor", note="no target; sshd login + agent socket"),
        Figure("image: ISO size", "MB", [iso_bytes / 1e6], "-", target=Target("max", 40, 2),
               note=f"{iso_bytes} bytes = {iso_bytes / 2**20:.1f} MiB"),
        Figure("image: idle memory, MemTotal − MemAvailable", "MiB", [b["idle_used_mb"] for b in boots], accel,
               target=Target("max", 64, 2), note="5 s after the agent answers; 1024 MiB guest"),
    ]
