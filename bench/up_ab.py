"""`toolbox up` and `toolbox ps`: this tree's toolbox/ against another checkout's, pairs
alternated in one run, one instance (the same VM files) driven by both.

    BENCH_BASELINE=/path/with/toolbox .venv/bin/python bench/run.py --rounds 5 --only up-ab

BENCH_BASELINE is a directory holding a `toolbox/` package (e.g. `git archive main toolbox
| tar -x -C DIR`): each command runs with PYTHONPATH set to it or to this repository, from
a working directory holding neither, so `python -m toolbox` (and the host agent it spawns,
`python -m toolbox.hostagent`) import the version under test. Each round measures the
bare-kernel floor, then `up` (stopped → ready) with each version, the order swapping every
round; after each up, `toolbox ps` (running, one container-less list) three times.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from figures import Figure, Skipped, Target
from lab import REPO, BenchError, Instance, Lab

PS_REPEATS = 3


def _env(lab: Lab, root: Path) -> dict[str, str]:
    return {**lab.env, "PYTHONPATH": str(root)}


def _timed(inst: Instance, root: Path, *args: str) -> float:
    """Wall seconds of `python -m toolbox ARGS -n NAME` with `root`'s toolbox/."""
    argv = [sys.executable, "-m", "toolbox", args[0], "-n", inst.name, *args[1:]]
    start = time.perf_counter()
    proc = subprocess.run(argv, env=_env(inst.lab, root), cwd=inst.lab.work, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"toolbox {' '.join(args)} ({root}) exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
    return took


def _which(root: Path, lab: Lab) -> str:
    """The toolbox/ that PYTHONPATH=root really imports (the bench must not fool itself)."""
    out = subprocess.run([sys.executable, "-c", "import toolbox; print(toolbox.__file__)"], env=_env(lab, root),
                         cwd=lab.work, capture_output=True, text=True, check=True).stdout.strip()
    if not out.startswith(str(root)):
        raise BenchError(f"PYTHONPATH={root} imports {out}, not {root}/toolbox")
    return out


def run(lab: Lab, rounds: int, say: Callable[[str], None]) -> list[Figure | Skipped]:
    import boot
    import image_helpers

    base = os.environ.get("BENCH_BASELINE")
    if not base:
        return [Skipped("toolbox up, A/B", "set BENCH_BASELINE to a directory holding the other toolbox/")]
    old, new = Path(base).resolve(), REPO
    say(f"up-ab: baseline {_which(old, lab)}, this tree {_which(new, lab)}")
    boot.IMAGE_OUT = image_helpers.IMAGE_OUT = lab.release
    work = lab.work / "ab"
    work.mkdir()
    initrd = boot.floor_initrd(work)
    inst = lab.instance("qemu")
    say("up-ab: warm-up boot (formats the data disk)")
    _timed(inst, new, "up")
    _timed(inst, new, "down")
    floors: list[float] = []
    ups: dict[Path, list[float]] = {old: [], new: []}
    ps: dict[Path, list[float]] = {old: [], new: []}
    for i in range(rounds):
        floors.append(boot.measure_floor(initrd, 1024, 2))
        for root in ((old, new) if i % 2 == 0 else (new, old)):
            ups[root].append(_timed(inst, root, "up"))
            for _ in range(PS_REPEATS):
                for other in (old, new):
                    ps[other].append(_timed(inst, other, "ps") * 1000)
            _timed(inst, root, "down")
        say(f"up-ab round {i + 1}/{rounds}: floor {floors[-1]:.2f} s, baseline {ups[old][-1]:.2f} s, "
            f"this tree {ups[new][-1]:.2f} s")
    accel = lab.accel
    return [
        Figure("toolbox up: this tree vs the baseline checkout", "s", ups[new], accel, ups[old], "baseline up",
               note=f"baseline {old}; order swapped every round"),
        Figure("toolbox up (this tree): stopped → ready", "s", ups[new], accel, floors, "bare-kernel floor",
               Target("ratio", 2.0, 3)),
        Figure("toolbox up (baseline): stopped → ready", "s", ups[old], accel, floors, "bare-kernel floor",
               Target("ratio", 2.0, 3)),
        Figure("toolbox ps, running, no containers (this tree vs baseline)", "ms", ps[new], "-", ps[old],
               "baseline ps", note="python -m toolbox ps, Python start-up included"),
    ]
