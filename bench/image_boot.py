"""Issue 2's figures, measured with bench/boot.py's own functions (the image engineer's
method): QEMU start → sshd banner vs the bare-kernel floor, pair by pair; idle guest
memory; ISO size.

Each round: the floor (same kernel, same accelerator, memory and CPUs, a busybox initramfs
that powers off at once), then the image booted as the host boots it. One unmeasured boot
first formats the empty data disk, so every measured round mounts an existing one, as a
user's every boot after the first does.

`--ab OLD_OUT NEW_OUT` compares two builds of the image instead (vm-image/out, or copies of
it): one warm-up boot each, then rounds of both, the order swapped each round, every boot
right after a floor of its own; writes bench/results/image_ab.json:

    .venv/bin/python bench/image_boot.py --ab /tmp/out-old vm-image/out --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


# --- A/B: two builds of the image, alternated in one run ---------------------------------

AB_RESULTS = Path(__file__).resolve().parent / "results" / "image_ab.json"


def _init_uptimes(serial: str) -> dict[str, float]:
    """Seconds since the kernel started at which the initramfs started, it mounted the root,
    init mounted the data disk and started sshd: init's own log lines on the serial console."""
    found = {}
    for key, pattern in (("initramfs_up_s", r"\[toolbox-initramfs ([\d.]+)s\] initramfs started"),
                         ("root_up_s", r"\[toolbox-initramfs ([\d.]+)s\] root mounted"),
                         ("data_disk_up_s", r"\[toolbox-init ([\d.]+)s\] data disk"),
                         ("sshd_up_s", r"\[toolbox-init ([\d.]+)s\] sshd started")):
        m = re.search(pattern, serial)
        if m:
            found[key] = float(m.group(1))
    return found


def ab(images: dict[str, Path], rounds: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Boot each image `rounds` times, alternating which goes first, each boot right after a
    floor of its own kernel: per boot sshd/floor, idle memory, init's uptimes."""
    import boot
    from image_helpers import GuestVM, KeyPair, create_disk, write_cidata

    work = Path(tempfile.mkdtemp(prefix="toolbox-image-ab-"))
    try:
        login, host = KeyPair.generate("bench"), KeyPair.generate("root@bench")
        cidata = work / "cidata.iso"
        write_cidata(cidata, login, host, hostname="bench", uid=os.getuid() or 1000, gid=os.getgid() or 1000)
        initrd = boot.floor_initrd(work)
        disks = {name: create_disk(work / f"disk-{name}.qcow2") for name in images}

        def one(name: str) -> dict[str, float]:
            try:
                floor = boot.measure_floor(initrd, MEMORY_MB, CPUS, images[name])
            except subprocess.TimeoutExpired:  # seen once under load 13: a floor kernel that hung
                say(f"{name}: the floor's QEMU hung (killed after 300 s); measuring it again")
                floor = boot.measure_floor(initrd, MEMORY_MB, CPUS, images[name])
            vm = GuestVM(work, "kernel", cidata=cidata, disk=disks[name], memory_mb=MEMORY_MB, cpus=CPUS,
                         image=images[name])
            try:
                result = boot.measure_boot(vm, login)
            except (SystemExit, AssertionError) as exc:
                raise BenchError(f"{name}: boot failed: {exc}\n{vm.serial()[-1500:]}") from None
            finally:
                vm.kill()
            return {"floor_s": floor, **result, "ratio": result["sshd_s"] / floor, **_init_uptimes(vm.serial())}

        for name in images:
            say(f"{name}: warm-up boot (formats its data disk)")
            try:
                one(name)
            except BenchError as exc:  # under heavy load TCG boots sometimes hang or panic early
                say(f"{name}: warm-up failed ({str(exc).splitlines()[0]}); once more")
                one(name)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in images}
        names = list(images)
        failed: list[str] = []
        for i in range(rounds):
            boots = {}
            for name in names if i % 2 == 0 else names[::-1]:
                try:
                    boots[name] = s = one(name)
                except BenchError as exc:  # e.g. the kernel's early "IO-APIC + timer" panic under load
                    failed.append(f"round {i + 1} {str(exc).splitlines()[0]}")
                    say(f"round {i + 1}/{rounds}: {exc}")
                    continue
                say(f"round {i + 1}/{rounds} {name}: floor {s['floor_s']:.2f} s, sshd {s['sshd_s']:.2f} s "
                    f"({s['ratio']:.2f}x), agent {s['agent_ping_s']:.2f} s, idle {s['idle_used_mb']:.1f} MiB, "
                    "uptime at initramfs/root/data disk/sshd "
                    + "/".join(f"{s.get(k, float('nan')):.2f}" for k in ("initramfs_up_s", "root_up_s",
                                                                       "data_disk_up_s", "sshd_up_s")))
            if len(boots) == len(names):  # only whole rounds: the comparison is pair by pair
                for name in names:
                    samples[name].append(boots[name])
        return {"images": {n: str(p) for n, p in images.items()}, "rounds": rounds, "samples": samples,
                "failed": failed,
                "load_avg": os.getloadavg()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(result: dict[str, Any]) -> str:
    samples = result["samples"]
    a, b = list(samples)
    if not samples[a]:
        return f"no whole round: {'; '.join(result['failed'])}"
    lines = []
    for name, boots in samples.items():
        med = {k: statistics.median(s[k] for s in boots) for k in ("floor_s", "sshd_s", "ratio", "idle_used_mb")}
        ratios = ", ".join(f"{s['ratio']:.2f}" for s in boots)
        idle = ", ".join(f"{s['idle_used_mb']:.1f}" for s in boots)
        lines.append(f"{name}: sshd/floor median {med['ratio']:.2f}x (each: {ratios}), sshd {med['sshd_s']:.2f} s, "
                     f"floor {med['floor_s']:.2f} s, idle {med['idle_used_mb']:.1f} MiB (each: {idle})")
    pairs = [y["sshd_s"] / x["sshd_s"] for x, y in zip(samples[a], samples[b])]
    each = ", ".join(f"{r:.2f}" for r in pairs)
    lines.append(f"{b}/{a} sshd per pair: {each}; median {statistics.median(pairs):.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="A/B of two image builds: python bench/image_boot.py "
                                     "--ab OLD_OUT NEW_OUT [--rounds N]")
    parser.add_argument("--ab", nargs=2, type=Path, required=True, metavar=("OLD_OUT", "NEW_OUT"),
                        help="two build output directories (vm-image/out or a copy of one)")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    images = {"old": args.ab[0].resolve(), "new": args.ab[1].resolve()}
    before = os.getloadavg()
    result = ab(images, args.rounds, lambda line: print(line, flush=True))
    result["load_avg_before"] = before
    AB_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    AB_RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(summarize(result))
    print(f"load average before {before[0]:.1f}, after {result['load_avg'][0]:.1f}; written to {AB_RESULTS}")


if __name__ == "__main__":
    main()
