"""The shared home folder (9p, virtio) vs the guest's own disk, in one VM made by
`toolbox init` / `toolbox up` (qemu driver): sequential write and read of a 64 MiB file,
and `find` over a tree of 10,000 files, each pair alternated (which side goes first
swaps every round). The guest times each operation itself (a python3 one-shot run as
root over `toolbox ssh`), so SSH and CLI start-up are not counted; the page cache is
dropped before every read and find, and every write ends with fsync.

The default mount options (cache=mmap, msize=512000: vm-image's usr/lib/toolbox/shares)
are the measured figures; the other 9p cache modes are measured the same way, fewer
rounds, by remounting the share, to show what the choice costs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from figures import Figure, Skipped, Target
from lab import BenchError, Instance, Lab

FILE_MIB = 64
TREE_DIRS, TREE_FILES = 100, 100  # 10,000 files
DISK = "/var/lib/toolbox/bench-share"  # on the guest's data disk (ext4 on virtio-blk)
DEFAULT_OPTS = "cache=mmap,msize=512000"
OTHER_OPTS = ("cache=none,msize=512000", "cache=loose,msize=512000", "cache=mmap,msize=131072")
TARGET = Target("ratio", 2.0, 6)  # time ratio ≤ 2× is throughput ≥ 0.5× the guest disk's

# One operation, timed in the guest: `python3 -c GUEST_OP OP PATH [N ...]`.
GUEST_OP = r"""
import os, subprocess, sys, time
op, path = sys.argv[1], sys.argv[2]
def drop():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
if op == "write":
    buf = os.urandom(1 << 20)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(int(sys.argv[3])):
        os.write(fd, buf)
    os.fsync(fd)
    os.close(fd)
elif op == "read":
    drop()
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, 1 << 20):
        pass
    os.close(fd)
elif op == "find":
    drop()
    start = time.perf_counter()
    out = subprocess.run(["find", path], capture_output=True, check=True).stdout
    assert out.count(b"\n") > int(sys.argv[3]), out.count(b"\n")
elif op == "tree":
    start = time.perf_counter()
    for d in range(int(sys.argv[3])):
        os.makedirs(f"{path}/d{d}", exist_ok=True)
        for f in range(int(sys.argv[4])):
            with open(f"{path}/d{d}/f{f}", "w") as fh:
                fh.write("x")
print(time.perf_counter() - start)
"""


def _guest(inst: Instance, op: str, path: str, *args: int) -> float:
    out = inst.run("ssh", "--", "sudo", "python3", "-c", GUEST_OP, op, path, *map(str, args))
    return float(out.strip().splitlines()[-1])


def _share(inst: Instance) -> tuple[str, str, str]:
    """(host path, 9p tag, its mount line) of the instance's home share."""
    mounts = json.loads(inst.run("info", "--json"))["mounts"]
    if not mounts:
        raise BenchError("the instance shares no folder (config.toml mounts is empty?)")
    path = mounts[0]["guest"]
    line = inst.run("ssh", "--", "grep", f" {path} 9p ", "/proc/mounts").strip()
    return path, line.split()[0], line


def _remount(inst: Instance, tag: str, path: str, opts: str) -> None:
    full = f"trans=virtio,version=9p2000.L,{opts},rw"
    inst.run("ssh", "--", "sh", "-c", f"sudo umount {path} && sudo mount -t 9p -o {full} {tag} {path}")


def _measure(inst: Instance, share: str, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """{op: [(share seconds, disk seconds) per round]}, the two alternated."""
    pairs: dict[str, list[tuple[float, float]]] = {"write": [], "read": [], "find": []}
    for i in range(rounds):
        for op, name, extra in (("write", "big", (FILE_MIB,)), ("read", "big", ()), ("find", "tree", (TREE_DIRS * TREE_FILES,))):
            sides = [f"{share}/bench/{name}", f"{DISK}/{name}"]
            order = sides if i % 2 == 0 else sides[::-1]
            took = {side: _guest(inst, op, side, *extra) for side in order}
            pairs[op].append((took[sides[0]], took[sides[1]]))
    return pairs


def _figures(pairs: dict[str, list[tuple[float, float]]], accel: str, label: str, command: str,
             target: bool) -> list[Figure]:
    what = {"write": f"sequential write {FILE_MIB} MiB + fsync", "read": f"sequential read {FILE_MIB} MiB, cold",
            "find": f"find over {TREE_DIRS * TREE_FILES:,} files, cold"}
    out = []
    for op, values in pairs.items():
        mbps = [FILE_MIB / s for s, _ in values] if op != "find" else []
        note = f"{label}; {command}"
        if mbps:
            disk = [FILE_MIB / d for _, d in values]
            note += f"; MiB/s share {sorted(mbps)[len(mbps) // 2]:.0f} vs disk {sorted(disk)[len(disk) // 2]:.0f}"
        out.append(Figure(
            f"shared folder ({label}): {what[op]}", "s", [s for s, _ in values], accel,
            baseline=[d for _, d in values], baseline_name="guest disk",
            target=TARGET if target and op != "find" else None, note=note,
        ))  # fmt: skip
    return out


def run(lab: Lab, rounds: int, say: Callable[[str], None]) -> list[Figure | Skipped]:
    inst = lab.instance("qemu")
    inst.run("up")
    share, tag, line = _share(inst)
    say(f"shared folder: {line}")
    host_tree = Path(share) / "bench"
    host_tree.mkdir(exist_ok=True)
    # The share's tree is made on the host (where a user's files come from); the disk's
    # in the guest. Both hold the same 100 directories of 100 one-byte files.
    for d in range(TREE_DIRS):
        (host_tree / "tree" / f"d{d}").mkdir(parents=True, exist_ok=True)
        for f in range(TREE_FILES):
            (host_tree / "tree" / f"d{d}" / f"f{f}").write_text("x")
    inst.run("ssh", "--", "sudo", "mkdir", "-p", DISK)
    _guest(inst, "tree", f"{DISK}/tree", TREE_DIRS, TREE_FILES)
    command = f".venv/bin/python bench/run.py --rounds {rounds} --only shared-folder"
    figures: list[Figure | Skipped] = []
    pairs = _measure(inst, share, rounds)
    say(f"shared folder ({DEFAULT_OPTS}): {pairs}")
    figures += _figures(pairs, lab.accel, f"9p {DEFAULT_OPTS}, the default", command, target=True)
    for opts in OTHER_OPTS:
        _remount(inst, tag, share, opts)
        other = _measure(inst, share, max(1, rounds // 2))
        say(f"shared folder ({opts}): {other}")
        figures += _figures(other, lab.accel, f"9p {opts}", command, target=False)
    _remount(inst, tag, share, DEFAULT_OPTS)
    return figures
