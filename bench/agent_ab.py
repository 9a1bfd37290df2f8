"""The guest agent, before/after a change, in one VM (issue 4's agent figures):

- start-up: process start → the first `/_ping` answered (and the CPU seconds spent by then),
  and → the first container list answered (an agent may answer /_ping before it can list);
- RSS after start-up, and idle RSS after a work phase (target ≤ 30 MB);
- the work phase: pull the 5-layer image and busybox from the loopback registry, three
  `docker run --rm busybox true`, through the docker CLI and the host agent's socket;
- `docker ps` through the host socket (CLI wall), and the agent's CPU per `docker ps`.

Two trees of guest-agent/ are compared: A = `git archive` of a revision
(TOOLBOX_BENCH_AGENT_A, default main), B = the working tree. One VM booted by `toolbox up`
from vm-image/out; agent_guest.py (run in the guest) stops init's supervised agent and
starts each tree's agent in turn, exactly as init starts it. Each round runs A and B
alternately, the order swapped each round; every figure pairs A and B of one round.

    TOOLBOX_BENCH_AGENT_A=073b601 .venv/bin/python bench/run.py --rounds 4 --only agent-ab
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from docker_compare import GUEST_HOST, _guest, _shellinit_env, _wait_docker
from figures import Figure, Skipped, Target
from lab import REPO, BenchError, Instance, Lab, timed

NAME = "benchagent"
BASE_REV = os.environ.get("TOOLBOX_BENCH_AGENT_A", "main")
LAYERS_IMAGE = "bench/layers5:latest"
GUEST_SCRIPT = "/var/tmp/agent_guest.py"
SETTLE_S = 5.0  # idle before reading RSS (the agent trims its heap 2 s after the last connection)
RUNS = 3  # docker run --rm busybox true per work phase
PS_REPEATS = 10


@dataclass
class Pairs:
    """b[i] and a[i] were measured in the same round."""

    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)


def _tree_tar(rev: str | None) -> bytes:
    """guest-agent/ as a tar.gz: of git revision rev, or of the working tree (rev None)."""
    if rev is not None:
        raw = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "guest-agent/toolbox_agent"],
                             check=True, capture_output=True).stdout
        src = tarfile.open(fileobj=io.BytesIO(raw))
        members = [(m, src.extractfile(m)) for m in src.getmembers() if m.isfile()]
    else:
        members = []
        for path in sorted((REPO / "guest-agent" / "toolbox_agent").rglob("*.py")):
            info = tarfile.TarInfo(str(path.relative_to(REPO)))
            data = path.read_bytes()
            info.size, info.mode = len(data), 0o644
            members.append((info, io.BytesIO(data)))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        for info, data in members:
            info.name = info.name.removeprefix("guest-agent/")  # toolbox_agent/... on PYTHONPATH
            tf.addfile(info, data)
    return out.getvalue()


def _ctl(inst: Instance, *args: str) -> dict[str, object]:
    out = _guest(inst, f"sudo python3 {GUEST_SCRIPT} {' '.join(args)}", timeout=600)
    return json.loads(out.strip().splitlines()[-1])


def _install(lab: Lab, inst: Instance) -> None:
    """agent_guest.py and both trees, served by the lab's release server, fetched by the guest."""
    served = lab.release.parent / "agents"
    served.mkdir()
    (served / "agent_guest.py").write_bytes((Path(__file__).parent / "agent_guest.py").read_bytes())
    (served / "A.tar.gz").write_bytes(_tree_tar(BASE_REV))
    (served / "B.tar.gz").write_bytes(_tree_tar(None))
    url = lab.server.url.replace("127.0.0.1", GUEST_HOST) + "/agents"  # type: ignore[attr-defined]
    _guest(inst, f"python3 -c 'import urllib.request as u; u.urlretrieve(\"{url}/agent_guest.py\", \"{GUEST_SCRIPT}\")'")
    for name in ("A", "B"):
        _ctl(inst, "fetch", f"{url}/{name}.tar.gz", name)
    _ctl(inst, "takeover")


def _work(env: dict[str, str], registry: str) -> float:
    """Pulls and runs, timed; the images removed after (untimed), so every phase pulls again."""
    start = time.perf_counter()
    timed(["docker", "pull", f"{registry}/{LAYERS_IMAGE}"], env)
    timed(["docker", "pull", f"{registry}/busybox:latest"], env)
    for _ in range(RUNS):
        timed(["docker", "run", "--rm", f"{registry}/busybox:latest", "true"], env)
    took = time.perf_counter() - start
    timed(["docker", "rmi", f"{registry}/{LAYERS_IMAGE}", f"{registry}/busybox:latest"], env)
    return took


def _one(inst: Instance, env: dict[str, str], registry: str, name: str, samples: dict[str, Pairs]) -> None:
    def add(key: str, value: float) -> None:
        getattr(samples[key], name.lower()).append(value)

    started = _ctl(inst, "start", name)
    pid = str(started["pid"])
    add("ready", float(started["ready_s"]))  # type: ignore[arg-type]
    add("ready_cpu", float(started["cpu_s"]))  # type: ignore[arg-type]
    add("listed", float(started["listed_s"]))  # type: ignore[arg-type]
    _wait_docker(env, f"agent {name}")
    time.sleep(SETTLE_S)
    add("rss_start", float(_ctl(inst, "stat", pid)["rss_kb"]) * 1024 / 1e6)  # type: ignore[arg-type]
    add("work", _work(env, registry))
    time.sleep(SETTLE_S)
    before = _ctl(inst, "stat", pid)
    add("rss_work", float(before["rss_kb"]) * 1024 / 1e6)  # type: ignore[arg-type]
    walls = [timed(["docker", "ps"], env) * 1000 for _ in range(PS_REPEATS)]
    after = _ctl(inst, "stat", pid)
    add("ps", sorted(walls)[len(walls) // 2])
    add("ps_cpu", (float(after["cpu_s"]) - float(before["cpu_s"])) / PS_REPEATS * 1000)  # type: ignore[arg-type]
    _ctl(inst, "stop", pid)


def _figures(lab: Lab, s: dict[str, Pairs]) -> list[Figure]:
    base = f"agent at {BASE_REV}"
    note = f"B = working tree vs A = {BASE_REV}, one {lab.accel} VM, agents alternated"
    rows = [
        ("agent start → first /_ping answered", "s", "ready", None),
        ("agent CPU time at the first /_ping", "s", "ready_cpu", None),
        ("agent start → first GET /containers/json answered", "s", "listed", None),
        ("agent RSS after start-up", "MB", "rss_start", None),
        ("agent idle RSS after the work phase", "MB", "rss_work", Target("max", 30, 4)),
        (f"work phase: pull 5 layers + busybox, {RUNS}× run --rm (CLI wall)", "s", "work", None),
        (f"docker ps via host socket (median of {PS_REPEATS} per round)", "ms", "ps", None),
        (f"agent CPU per docker ps (mean of {PS_REPEATS}; 10 ms clock ticks)", "ms", "ps_cpu", None),
    ]
    return [Figure(f"agent A/B: {title}", unit, s[key].b, lab.accel, s[key].a, base, target, note)
            for title, unit, key, target in rows]


def run(lab: Lab, rounds: int, say: Callable[[str], None]) -> list[Figure | Skipped]:
    from registry import RegistryServer, bench_layers, make_image, publish_defaults, push

    keys = ("ready", "ready_cpu", "listed", "rss_start", "rss_work", "work", "ps", "ps_cpu")
    s = {k: Pairs() for k in keys}
    with RegistryServer() as reg:
        publish_defaults(reg)
        push(reg, f"/{LAYERS_IMAGE}", make_image(bench_layers(count=5)))
        registry = f"{GUEST_HOST}:{reg.port}"
        inst = Instance(lab, NAME, "qemu")
        inst.run("init", "--memory", "1G", "--cpus", "2", "--manifest-url", lab.manifest_url,
                 "--insecure-registry", registry)
        lab.instances[NAME] = inst  # lab.close() deletes it whatever happens
        inst.run("up")
        env = _shellinit_env(inst)
        _install(lab, inst)
        for i in range(rounds + 1):  # round 0: a warm-up of both (page cache, the data disk), not kept
            into = s if i else {k: Pairs() for k in keys}
            for name in (("A", "B") if i % 2 == 0 else ("B", "A")):
                _one(inst, env, registry, name, into)
            say(f"agent-ab round {i}/{rounds}{' (warm-up)' if not i else ''} B/A:"
                f" ping {into['ready'].b[-1]:.2f}/{into['ready'].a[-1]:.2f} s,"
                f" list {into['listed'].b[-1]:.2f}/{into['listed'].a[-1]:.2f} s,"
                f" rss {into['rss_start'].b[-1]:.1f}/{into['rss_start'].a[-1]:.1f} ->"
                f" {into['rss_work'].b[-1]:.1f}/{into['rss_work'].a[-1]:.1f} MB,"
                f" work {into['work'].b[-1]:.1f}/{into['work'].a[-1]:.1f} s,"
                f" ps {into['ps'].b[-1]:.0f}/{into['ps'].a[-1]:.0f} ms,"
                f" ps cpu {into['ps_cpu'].b[-1]:.1f}/{into['ps_cpu'].a[-1]:.1f} ms")
        lab.drop(NAME)
    if not s["ready"].b:
        raise BenchError("agent-ab measured no round")
    return _figures(lab, s)
