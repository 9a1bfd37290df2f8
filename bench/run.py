"""Run every benchmark, print one table, write bench/results/latest.json.

    .venv/bin/python bench/run.py [--rounds N] [--only image up docker]

Each benchmark (a module here with `run(lab, rounds, say)`) returns Figure records: median,
min and max over N rounds, and for a comparison the median of the per-pair ratios, the
pairs measured alternately in the same run. bench/README.md says how to read the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import Figure, Skipped, Target  # noqa: E402
from lab import REPO, lab  # noqa: E402

RESULTS = REPO / "bench" / "results" / "latest.json"
BENCHMARKS: dict[str, str] = {  # name -> module; run in this order
    "image": "image_boot",
    "up": "cli_up",
    "up-ab": "up_ab",  # toolbox up and ps: this tree vs BENCH_BASELINE's toolbox/, pairs alternated
    "docker": "docker_client",
    "docker-compare": "docker_compare",  # toolbox's engine vs dockerd, needs vm-image/out-docker
    "ports": "port_forward",  # the host agent's localhost port forward vs ssh -L
    "shared-folder": "shared_folder",  # the shared home folder (9p) vs the guest's disk
    "network": "network",  # bridge vs loopback throughput, docker run -p vs without
    "agent-ab": "agent_ab",  # the guest agent before/after a change (TOOLBOX_BENCH_AGENT_A), one VM
}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return f"{text} {unit}".strip()


def render(figures: list[Figure], skipped: list[Skipped]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="toolbox benchmarks", show_lines=False)
    for col in ("figure", "median", "min", "max", "n", "baseline median", "ratio", "target", "met?", "accel"):
        table.add_column(col, justify="left" if col in ("figure", "baseline median") else "right")
    for f in figures:
        base = f"{_num(f.baseline_median, f.unit)} ({f.baseline_name})" if f.baseline else "-"
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[f.met]
        table.add_row(f.name, _num(f.median, f.unit), _num(min(f.samples), f.unit), _num(max(f.samples), f.unit),
                      str(f.n), base, f"{f.ratio:.2f}×" if f.ratio is not None else "-",
                      f.target.render(f.unit) if f.target else "-", met, f.accel)
    for s in skipped:
        table.add_row(f"[yellow]{s.name}[/]", "skipped", "", "", "", s.reason, "", "", "", "")
    console = Console(width=200)
    console.print(table)
    for f in figures:
        if f.note:
            console.print(f"  [dim]{f.name}: {f.note}[/]")


def markdown(doc: dict[str, Any]) -> str:
    """The README's table from a results JSON (what `--markdown FILE` prints)."""
    rows = ["| figure | median | min | max | n | baseline median | ratio (median of pairs) | target | met? | accel |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for f in doc["figures"]:
        unit, t = f["unit"], f["target"]
        target = Target(**t).render(unit) if t else "-"
        base = f"{_num(f['baseline_median'], unit)} ({f['baseline_name']})" if f["baseline"] else "-"
        ratio = f"{f['ratio']:.2f}×" if f["ratio"] is not None else "-"
        met = {True: "yes", False: "**no**", None: "-"}[f["met"]]
        rows.append(f"| {f['name']} | {_num(f['median'], unit)} | {_num(f['min'], unit)} | {_num(f['max'], unit)} "
                    f"| {f['n']} | {base} | {ratio} | {target} | {met} | {f['accel']} |")
    for s in doc["skipped"]:
        rows.append(f"| {s['name']} | skipped: {s['reason']} | | | | | | | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per benchmark (default 3)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these: {', '.join(BENCHMARKS)}")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the results ({RESULTS})")
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a results file as the README's table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    figures: list[Figure] = []
    skipped: list[Skipped] = []
    failed = False
    with lab() as the_lab:
        image_version = str(the_lab.manifest.get("version"))
        for name in names:
            module = __import__(BENCHMARKS[name])
            runner: Callable[..., list[Any]] = module.run
            say(f"{name}: {args.rounds} rounds")
            t0 = time.monotonic()
            try:
                for item in runner(the_lab, args.rounds, say):
                    (figures if isinstance(item, Figure) else skipped).append(item)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 (one failing must not lose the others)
                failed = True
                traceback.print_exc()
                skipped.append(Skipped(name, f"failed: {exc}"[:300]))
            say(f"{name}: done in {time.monotonic() - t0:.0f} s")
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "image_version": image_version,
        "rounds": args.rounds, "benchmarks": names,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "figures": [f.to_json() for f in figures],
        "skipped": [{"name": s.name, "reason": s.reason} for s in skipped],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    render(figures, skipped)
    print(f"image {image_version}; load average {load_before[0]:.1f} before, {doc['loadavg_after'][0]:.1f} after; "
          f"written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
