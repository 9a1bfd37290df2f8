"""Issue 3's and issue 7's figures, through the real CLI (python -m toolbox, as typed):

- `toolbox up` from stopped to ready (SSH with the pinned key, agent /_ping, host agent)
  with the qemu driver, vs the bare-kernel floor measured just before it in each round;
- the same with the libvirt driver, vs the qemu driver, same image, same round (the order
  of the two swaps every round, so neither always runs on a machine the other warmed);
- `toolbox status` wall time with Python's start-up (the installed console script),
  running and stopped, each paired with a bare `python -c pass` start-up.

One unmeasured up/down per driver first formats each instance's data disk.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from figures import Figure, Skipped, Target
from lab import BenchError, Instance, Lab, libvirtd, timed

STATUS_REPEATS = 3  # status samples per state per round (cheap)


def _status_argv(inst: Instance) -> list[str]:
    script = Path(sys.executable).parent / "toolbox"  # the console script a user runs
    base = [str(script)] if script.exists() else [sys.executable, "-m", "toolbox"]
    return [*base, "status", "-n", inst.name]


def _status_pairs(inst: Instance, samples: list[float], floor: list[float]) -> None:
    python = [sys.executable, "-c", "pass"]
    for _ in range(STATUS_REPEATS):
        floor.append(timed(python, inst.lab.env) * 1000)
        samples.append(timed(_status_argv(inst), inst.lab.env) * 1000)


def _libvirt_up(inst: Instance | None, say: Callable[[str], None]) -> float | None:
    """One measured `toolbox up` (then down) with the libvirt driver; None if it failed."""
    if inst is None:
        return None
    try:
        took = inst.timed("up")
        inst.run("down")
        return took
    except BenchError as exc:
        say(f"up: libvirt round failed: {exc}")
        return None


def _data_disk_note(inst: Instance) -> str:
    """'' when the guest mounted its data disk; a warning for the figure's note otherwise
    (an image that cannot mount it boots faster and keeps nothing: not a fair figure)."""
    try:
        inst.run("ssh", "--", "grep", "-q", " /var/lib/toolbox ", "/proc/mounts")
        return ""
    except BenchError:
        return "; WARNING: this image did not mount its data disk"


def run(lab: Lab, rounds: int, say: Callable[[str], None]) -> list[Figure | Skipped]:
    import boot
    import image_helpers

    boot.IMAGE_OUT = image_helpers.IMAGE_OUT = lab.release
    work = lab.work / "cli"
    work.mkdir()
    initrd = boot.floor_initrd(work)
    out: list[Figure | Skipped] = []
    with ExitStack() as stack:
        qemu = lab.instance("qemu")
        libvirt: Instance | None = None
        try:
            os.environ["TOOLBOX_LIBVIRT_URI"] = stack.enter_context(libvirtd())
            if shutil.which("virsh") is None:
                say("note: virsh missing (only libvirt-python is needed)")
            libvirt = lab.instance("libvirt")
            stack.callback(lab.drop, "libvirt")  # before our libvirtd (if ours) stops
        except BenchError as exc:
            out.append(Skipped("toolbox up, libvirt driver", str(exc)))
        say("up: warm-up boot of qemu (formats the data disk)")
        qemu.run("up")
        disk_note = _data_disk_note(qemu)
        qemu.run("down")
        if libvirt is not None:
            try:
                say("up: warm-up boot of libvirt (formats the data disk)")
                libvirt.run("up")
                libvirt.run("down")
            except BenchError as exc:
                out.append(Skipped("toolbox up, libvirt driver", f"warm-up failed: {exc}"[:300]))
                libvirt = None
        floors, ups, lv_ups, lv_pair = [], [], [], []
        st_run, st_run_py, st_stop, st_stop_py = [], [], [], []
        for i in range(rounds):
            _status_pairs(qemu, st_stop, st_stop_py)
            lv_first = i % 2 == 1 and libvirt is not None
            lv_time = _libvirt_up(libvirt, say) if lv_first else None
            floors.append(boot.measure_floor(initrd, 1024, 2))
            ups.append(qemu.timed("up"))
            _status_pairs(qemu, st_run, st_run_py)
            qemu.run("down")
            if not lv_first and libvirt is not None:
                lv_time = _libvirt_up(libvirt, say)
            if lv_time is not None:
                lv_ups.append(lv_time)
                lv_pair.append(ups[-1])
            say(f"up round {i + 1}/{rounds}: floor {floors[-1]:.2f} s, qemu up {ups[-1]:.2f} s"
                + (f", libvirt up {lv_time:.2f} s" if lv_time is not None else ""))
        accel = lab.accel
        out += [
            Figure("toolbox up (qemu driver): stopped → ready", "s", ups, accel, floors, "bare-kernel floor",
                   Target("ratio", 2.0, 3),
                   note="CLI wall time: boot, SSH with pinned key, agent /_ping, host agent" + disk_note),
            Figure("toolbox status, running (Python start-up included)", "ms", st_run, "-", st_run_py,
                   "python -c pass", Target("max", 150, 3)),
            Figure("toolbox status, stopped (Python start-up included)", "ms", st_stop, "-", st_stop_py,
                   "python -c pass", Target("max", 150, 3)),
        ]
        if lv_ups:
            out.append(Figure("toolbox up (libvirt driver): stopped → ready", "s", lv_ups, accel, lv_pair,
                              "toolbox up, qemu driver", note="libvirt domain type qemu (TCG); no target set"))
    return out

