"""Issue 4's closing figures: toolbox's engine beside Docker's own engine (Debian's docker.io:
dockerd + containerd + runc, what boot2docker shipped), driven by the same docker CLI, in
the same VM, in one run:

- `docker run --rm busybox true` (target ≤ 0.5× Docker's), `docker ps` (≤ 1.0×), pulling a
  5-layer image from the loopback registry (≤ 1.0×, the image removed between rounds);
- idle memory: the toolbox agent's RSS (≤ 30 MB) beside dockerd + containerd's.

One VM, booted by toolbox itself (`toolbox init --manifest-url` + `toolbox up`) from the
benchmark variant `make -C vm-image VARIANT=docker` (vm-image/out-docker: the same image
plus docker.io), runs both engines: same kernel, same CPUs, same moment. The transport is
the same on both sides: toolbox's engine through the host agent's socket (`toolbox
shellinit`), dockerd's /run/docker.sock through a second copy of that very host agent
(`python -m toolbox.hostagent --guest-socket /run/docker.sock`): one paramiko SSH
connection each, a direct-streamlocal channel per docker connection. In every round the
two engines take turns and the order swaps each round, so the shared machine's load falls
on both alike.

Both engines pull the same references from Debian's docker-registry on loopback
(10.0.2.2:PORT from the guest, an insecure registry to both): busybox, tagged `busybox`
in both, and the 5-layer image of tests/e2e/registry.py's `bench_layers`.

    .venv/bin/python bench/run.py --rounds 5 --only docker-compare
    TOOLBOX_BENCH_VARIANT_OUT=/elsewhere/out-docker ...   # a variant built in another tree
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from figures import Figure, Skipped, Target
from lab import IMAGE_FILES, REPO, BenchError, Instance, Lab, timed

# the variant's build output; TOOLBOX_BENCH_VARIANT_OUT names another build of it
VARIANT_OUT = Path(os.environ.get("TOOLBOX_BENCH_VARIANT_OUT") or REPO / "vm-image" / "out-docker")
NAME = "benchdocker"
GUEST_HOST = "10.0.2.2"  # the host's loopback, seen from the guest (QEMU user network)
DOCKERD_SOCKET = "/run/docker.sock"
LAYERS_IMAGE = "bench/layers5:latest"
PS_REPEATS = 3  # docker ps pairs per round (cheap)
SETTLE_S = 5.0  # idle time before reading RSS
ENGINES = ("toolbox", "docker")

# Installs /tmp/daemon.json and restarts dockerd (its supervisor starts it again); waits
# for the first dockerd's pid file, then for a new pid and the socket. Under TCG the boot's
# first dockerd may have exited already (its pid file then names no process): no kill then.
RESTART_DOCKERD = """set -e
sudo mkdir -p /etc/docker && sudo cp /tmp/daemon.json /etc/docker/daemon.json
i=0; while [ ! -s /run/docker.pid ] && [ $i -lt 240 ]; do sleep 1; i=$((i+1)); done
old=$(cat /run/docker.pid); sudo kill "$old" 2>/dev/null || true
i=0; while [ $i -lt 240 ]; do
    new=$(cat /run/docker.pid 2>/dev/null || true)
    if [ -n "$new" ] && [ "$new" != "$old" ] && [ -S /run/docker.sock ]; then exit 0; fi
    sleep 1; i=$((i+1))
done
echo "dockerd did not come back with daemon.json:" >&2; sudo tail -20 /var/log/dockerd.log >&2; exit 1"""

# Sums VmRSS (KiB) in the guest: the toolbox agent (python3 -m toolbox_agent; not the
# supervise shell whose argv names it) and dockerd + containerd.
RSS_SCRIPT = r"""
import json, os
out = {"toolbox": [0, []], "docker": [0, []]}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        rss = [int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")]
    except OSError:
        continue
    prog = os.path.basename(argv[0].decode(errors="replace"))
    kind = ("toolbox" if prog.startswith("python") and b"toolbox_agent" in argv
            else "docker" if prog in ("dockerd", "containerd") else None)
    if kind and rss:
        out[kind][0] += rss[0]
        out[kind][1].append(f"{prog}:{pid}")
print(json.dumps(out))
"""


@dataclass
class Samples:
    """Paired samples: toolbox[i] and docker[i] were measured back to back."""

    toolbox: list[float] = field(default_factory=list)
    docker: list[float] = field(default_factory=list)

    def add(self, engine: str, value: float) -> None:
        getattr(self, engine).append(value)


def _order(round_no: int) -> tuple[str, str]:
    return ENGINES if round_no % 2 == 0 else ENGINES[::-1]


def _variant_manifest_url(lab: Lab) -> str:
    """Snapshot vm-image/out-docker beside the lab's release (a rebuild mid-run changes nothing)."""
    dest = lab.release.parent / "docker"
    dest.mkdir()
    for name in IMAGE_FILES:
        if (VARIANT_OUT / name).exists():
            shutil.copy2(VARIANT_OUT / name, dest / name)
    return f"{lab.server.url}/docker/manifest.json"  # type: ignore[attr-defined]


def _boot(lab: Lab, registry: str) -> Instance:
    inst = Instance(lab, NAME, "qemu")
    inst.run("init", "--memory", "1G", "--cpus", "2", "--manifest-url", _variant_manifest_url(lab),
             "--insecure-registry", registry, "--registry-mirror", f"http://{registry}")
    lab.instances[NAME] = inst  # lab.close() deletes it (toolbox delete -f) whatever happens
    inst.run("up")
    return inst


def _guest(inst: Instance, command: str, timeout: float = 300) -> str:
    return inst.run("ssh", "--", "sh", "-c", command, timeout=timeout)


def _shellinit_env(inst: Instance) -> dict[str, str]:
    env = dict(inst.lab.env)
    for line in inst.run("shellinit", "--shell", "bash").splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'\"")
    if "DOCKER_HOST" not in env:
        raise BenchError("toolbox shellinit exported no DOCKER_HOST")
    return env


def _wait_docker(env: dict[str, str], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                              capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: docker version did not answer within {timeout:.0f} s: {proc.stderr[-300:]}")
        time.sleep(1)


def _configure_dockerd(inst: Instance, registry: str) -> None:
    """The loopback registry as dockerd's insecure registry: /etc/docker/daemon.json, then
    dockerd stopped by its pid; the variant's init supervises it and starts it again (with
    the flags of vm-image/rootfs/usr/lib/toolbox/init-steps.sh: socket group `toolbox`,
    data root on the data disk). daemon.json must not repeat a flag, or dockerd refuses it."""
    daemon = json.dumps({"insecure-registries": [registry]})
    _guest(inst, f"echo '{daemon}' >/tmp/daemon.json && {RESTART_DOCKERD}", timeout=600)


@contextmanager
def _dockerd_forwarder(inst: Instance) -> Iterator[dict[str, str]]:
    """A second host agent (the same program `toolbox up` starts) serving dockerd's socket;
    yields the docker CLI's environment for it; stopped by its pid."""
    port = next(int(line.split()[1]) for line in inst.run("ssh-config").splitlines()
                if line.strip().startswith("Port "))
    sock = inst.lab.work / "dockerd.sock"
    argv = [sys.executable, "-m", "toolbox.hostagent", "--socket", str(sock), "--ssh-port", str(port),
            "--key", str(inst.dir / "id_ed25519"), "--host-key", str(inst.dir / "ssh_host_ed25519_key.pub"),
            "--guest-socket", DOCKERD_SOCKET]
    with open(inst.lab.work / "dockerd-forwarder.log", "ab") as log:
        proc = subprocess.Popen(argv, env=inst.lab.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        env = {k: v for k, v in inst.lab.env.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = f"unix://{sock}"
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the dockerd forwarder did not start (see {inst.lab.work}/dockerd-forwarder.log)")
            time.sleep(0.1)
        yield env
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def _docker(env: dict[str, str], *args: str) -> None:
    timed(["docker", *args], env)


def _prepare(envs: dict[str, dict[str, str]], registry: str) -> None:
    """busybox in both engines (same reference, tagged `busybox`), one unmeasured run and ps each."""
    for env in envs.values():
        _docker(env, "pull", f"{registry}/busybox:latest")
        _docker(env, "tag", f"{registry}/busybox:latest", "busybox:latest")
        _docker(env, "run", "--rm", "busybox", "true")
        _docker(env, "ps")


def _rss_mb(inst: Instance) -> tuple[dict[str, float], str]:
    """Idle RSS in MB (10^6 bytes) of each engine, and which processes were counted."""
    doc = json.loads(_guest(inst, f"python3 -c '{RSS_SCRIPT}'").strip().splitlines()[-1])
    return {k: doc[k][0] * 1024 / 1e6 for k in ENGINES}, "; ".join(" ".join(doc[k][1]) for k in ENGINES)


def _round(i: int, envs: dict[str, dict[str, str]], registry: str, s: dict[str, Samples]) -> None:
    layers = f"{registry}/{LAYERS_IMAGE}"
    for engine in _order(i):
        for _ in range(PS_REPEATS):
            s["ps"].add(engine, timed(["docker", "ps"], envs[engine]) * 1000)
    for engine in _order(i):
        s["run"].add(engine, timed(["docker", "run", "--rm", "busybox", "true"], envs[engine]))
    for engine in _order(i):
        s["pull"].add(engine, timed(["docker", "pull", layers], envs[engine]))
        _docker(envs[engine], "rmi", layers)


def _ps_pairs(s: Samples) -> Samples:
    """ps was measured in runs of PS_REPEATS per engine; pair them up in order."""
    return Samples(s.toolbox[: len(s.docker)], s.docker[: len(s.toolbox)])


def _figures(lab: Lab, s: dict[str, Samples], note: str, counted: str) -> list[Figure]:
    ps = _ps_pairs(s["ps"])
    base = "Docker's engine"
    return [
        Figure("docker run --rm busybox true: toolbox vs dockerd", "s", s["run"].toolbox, lab.accel,
               s["run"].docker, base, Target("ratio", 0.5, 4), note),
        Figure("docker ps via host socket: toolbox vs dockerd", "ms", ps.toolbox, lab.accel, ps.docker, base,
               Target("ratio", 1.0, 4), note),
        Figure("pull 5-layer image (loopback registry): toolbox vs dockerd", "s", s["pull"].toolbox, lab.accel,
               s["pull"].docker, base, Target("ratio", 1.0, 4), note),
        Figure("idle RSS: toolbox agent vs dockerd + containerd", "MB", s["rss"].toolbox, lab.accel,
               s["rss"].docker, "dockerd + containerd", Target("max", 30, 4),
               f"VmRSS {SETTLE_S:.0f} s after each round's last command; counted: {counted}"),
    ]


def _measure(inst: Instance, envs: dict[str, dict[str, str]], registry: str, rounds: int,
             say: Callable[[str], None]) -> tuple[dict[str, Samples], str]:
    s = {k: Samples() for k in ("ps", "run", "pull", "rss")}
    counted = ""
    for i in range(rounds):
        _round(i, envs, registry, s)
        time.sleep(SETTLE_S)
        rss, counted = _rss_mb(inst)
        for engine in ENGINES:
            s["rss"].add(engine, rss[engine])
        say(f"docker-compare round {i + 1}/{rounds} (toolbox/dockerd):"
            f" run {s['run'].toolbox[-1]:.2f}/{s['run'].docker[-1]:.2f} s,"
            f" pull {s['pull'].toolbox[-1]:.1f}/{s['pull'].docker[-1]:.1f} s,"
            f" ps {s['ps'].toolbox[-1]:.0f}/{s['ps'].docker[-1]:.0f} ms, rss {rss['toolbox']:.1f}/{rss['docker']:.1f} MB")
    return s, counted


def run(lab: Lab, rounds: int, say: Callable[[str], None]) -> list[Figure | Skipped]:
    if shutil.which("docker") is None:
        return [Skipped("toolbox vs dockerd", "no docker CLI on PATH")]
    if not (VARIANT_OUT / "manifest.json").is_file():
        return [Skipped("toolbox vs dockerd", f"no {VARIANT_OUT}/manifest.json: make -C vm-image VARIANT=docker")]
    from registry import RegistryServer, bench_layers, make_image, publish_defaults, push

    with RegistryServer() as reg:
        publish_defaults(reg)
        push(reg, f"/{LAYERS_IMAGE}", make_image(bench_layers(count=5)))
        registry = f"{GUEST_HOST}:{reg.port}"
        say(f"docker-compare: booting {NAME} from {VARIANT_OUT} (registry {registry})")
        inst = _boot(lab, registry)
        envs = {"toolbox": _shellinit_env(inst)}
        _configure_dockerd(inst, registry)
        with _dockerd_forwarder(inst) as docker_env:
            envs["docker"] = docker_env
            for engine, env in envs.items():
                _wait_docker(env, engine)
            _prepare(envs, registry)
            samples, counted = _measure(inst, envs, registry, rounds, say)
        lab.drop(NAME)
    note = f"one {lab.accel} VM (1 GiB, 2 CPUs) runs both engines; dockerd via a 2nd host agent (paramiko)"
    return _figures(lab, samples, note, counted)
