"""`toolbox up` to ready with the libvirt driver vs the QEMU driver: same image, same
host, same run, interleaved (libvirt, qemu, libvirt, qemu ...) so both see the same load.

    python bench/up_libvirt_vs_qemu.py [ROUNDS]    # needs vm-image/out and a running libvirtd

Each round: `toolbox up` timed, then `toolbox down`. Prints one line per boot and the
median per driver. Instances live in a temporary TOOLBOX_HOME and are deleted at the end.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "vm-image" / "out" / "manifest.json"


def toolbox(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "toolbox", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)  # fmt: skip


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="tbb-") as home:
        env = {**os.environ, "TOOLBOX_HOME": home, "TOOLBOX_ACCEL": os.environ.get("TOOLBOX_ACCEL", "tcg"),
               "PYTHONPATH": str(REPO)}  # fmt: skip
        drivers = ("libvirt", "qemu")
        for d in drivers:
            toolbox(env, "init", "-n", f"b{d[0]}", "--driver", d, "--memory", "1G", "--manifest-url", str(MANIFEST))
        times: dict[str, list[float]] = {d: [] for d in drivers}
        try:
            for r in range(rounds):
                for d in drivers:
                    start = time.monotonic()
                    toolbox(env, "up", "-n", f"b{d[0]}")
                    times[d].append(time.monotonic() - start)
                    print(f"round {r + 1} {d:8s} up to ready {times[d][-1]:6.1f} s", flush=True)
                    toolbox(env, "down", "-n", f"b{d[0]}")
        finally:
            for d in drivers:
                subprocess.run([sys.executable, "-m", "toolbox", "delete", "-f", "-n", f"b{d[0]}"], env=env,
                               capture_output=True, timeout=300)  # fmt: skip
        for d in drivers:
            print(f"{d:8s} median {statistics.median(times[d]):6.1f} s  all {[round(t, 1) for t in times[d]]}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
