"""Boot benchmark for the guest image (vm-image/out), QEMU under TCG.

Each round runs, alternately:
  floor  the same kernel, same accelerator, memory and CPUs, with a trivial initramfs
         (static busybox) that powers off at once: QEMU start -> QEMU exit.
  boot   the image as the host boots it (direct kernel boot, ISO attached, config drive,
         data disk, virtio-rng): QEMU start -> sshd's banner on the forwarded port.
After each boot it logs in, waits for the agent to answer /_ping, reads idle memory
(MemTotal - MemAvailable) and powers off by ACPI. Prints median/min/max and the ratio,
and writes bench/results/boot.json.

    python bench/boot.py [--rounds 3] [--no-rng]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO))

from image_helpers import IMAGE_OUT, GuestVM, KeyPair, create_disk, run, write_cidata  # noqa: E402

RESULTS = REPO / "bench" / "results" / "boot.json"
PING = ("import socket,time\n"
        "for _ in range(600):\n"
        "    try:\n"
        "        s=socket.socket(socket.AF_UNIX); s.connect('/run/toolbox/docker.sock'); break\n"
        "    except OSError as e: err=e; time.sleep(0.1)\n"
        "else: raise SystemExit(err)\n"
        "s.sendall(b'GET /_ping HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); print(s.recv(4096).decode().split()[1])\n")


def floor_initrd(workdir: Path) -> Path:
    """A cpio with a static busybox whose /init powers the machine off at once."""
    root = workdir / "floor"
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    init = root / "init"
    init.write_text("#!/bin/busybox sh\n/bin/busybox poweroff -f\n")
    init.chmod(0o755)
    out = workdir / "floor.cpio"
    files = subprocess.run(["find", ".", "-mindepth", "1"], cwd=root, capture_output=True, text=True,
                           check=True).stdout
    with open(out, "wb") as f:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=root, input=files.encode(),
                       stdout=f, check=True)
    return out


def measure_floor(initrd: Path, memory_mb: int, cpus: int, image: Path | None = None) -> float:
    """QEMU start -> exit for `image`'s kernel and command line (default IMAGE_OUT)."""
    out = image or IMAGE_OUT
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-smp", str(cpus),
            "-display", "none", "-serial", "null", "-no-reboot",
            "-kernel", str(out / "vmlinuz"), "-initrd", str(initrd),
            "-append", (out / "cmdline.txt").read_text().strip()]
    start = time.monotonic()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, timeout=300)
    return time.monotonic() - start


def measure_boot(vm: GuestVM, login: KeyPair) -> dict[str, float]:
    vm.start()
    sshd = vm.wait_for_sshd(timeout=300)
    with vm.ssh(login) as client:
        status, out = run(client, f"python3 -c \"{PING}\"", timeout=300)
        agent = time.monotonic() - vm.started_at
        if status != 0 or out.strip() != "200":
            raise SystemExit(f"agent did not answer /_ping: {out}")
        time.sleep(5)  # let the boot settle: idle
        _, meminfo = run(client, "cat /proc/meminfo")
    fields = {line.split(":")[0]: int(line.split()[1]) for line in meminfo.splitlines()}
    used_mb = (fields["MemTotal"] - fields["MemAvailable"]) / 1024
    stop = time.monotonic()
    vm.qmp("system_powerdown")
    if vm.wait_exit(timeout=120) is None:
        vm.kill()
        raise SystemExit("ACPI power-down did not stop the guest")
    return {"sshd_s": sshd, "agent_ping_s": agent, "idle_used_mb": used_mb,
            "shutdown_s": time.monotonic() - stop}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", type=int, default=1024)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--no-rng", action="store_true", help="boot without virtio-rng")
    args = parser.parse_args()
    manifest = json.loads((IMAGE_OUT / "manifest.json").read_text())
    with tempfile.TemporaryDirectory(prefix="toolbox-bench-") as tmp:
        work = Path(tmp)
        login, host = KeyPair.generate("bench"), KeyPair.generate("root@bench")
        cidata = work / "cidata.iso"
        write_cidata(cidata, login, host, hostname="bench")
        disk = create_disk(work / "disk.qcow2")
        initrd = floor_initrd(work)
        floors, boots = [], []
        for i in range(args.rounds):
            floors.append(measure_floor(initrd, args.memory, args.cpus))
            vm = GuestVM(work, "kernel", cidata=cidata, disk=disk, memory_mb=args.memory, cpus=args.cpus,
                         rng=not args.no_rng)
            boots.append(measure_boot(vm, login))
            print(f"round {i + 1}: floor {floors[-1]:.2f} s, sshd {boots[-1]['sshd_s']:.2f} s, "
                  f"agent {boots[-1]['agent_ping_s']:.2f} s, idle {boots[-1]['idle_used_mb']:.0f} MB, "
                  f"shutdown {boots[-1]['shutdown_s']:.2f} s", flush=True)
    floor = summary(floors)
    sshd = summary([b["sshd_s"] for b in boots])
    result = {
        "accel": "tcg", "rounds": args.rounds, "memory_mb": args.memory, "cpus": args.cpus,
        "virtio_rng": not args.no_rng, "image_version": manifest["version"],
        "iso_bytes": manifest["files"]["toolbox.iso"]["size"], "host": platform.node(),
        "floor_s": floor, "sshd_s": sshd,
        "agent_ping_s": summary([b["agent_ping_s"] for b in boots]),
        "idle_used_mb": summary([b["idle_used_mb"] for b in boots]),
        "shutdown_s": summary([b["shutdown_s"] for b in boots]),
        "ratio_sshd_to_floor": sshd["median"] / floor["median"],
        "note": "round 1 formats the empty data disk; later rounds mount it",
        "rounds_detail": [{"floor_s": f, **b} for f, b in zip(floors, boots)],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for key in ("floor_s", "sshd_s", "agent_ping_s", "idle_used_mb"):
        s = result[key]
        print(f"{key:14} median {s['median']:7.2f}  min {s['min']:7.2f}  max {s['max']:7.2f}")
    print(f"ISO {result['iso_bytes'] / 1e6:.1f} MB; ratio sshd/floor (medians) "
          f"{result['ratio_sshd_to_floor']:.2f}; accel tcg; written to {RESULTS}")


if __name__ == "__main__":
    main()
