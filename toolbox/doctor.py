"""`toolbox doctor`: check the host and the instance, and for each problem say what to do.

Each check is a small function returning Checks; none raises for what it finds (a
ToolboxError becomes a failed check with its message and hint). Checks that need the
VM running are skipped, with the reason, when it is not: one root cause, one line.
The clock check reads the guest agent's clock as the host agent does (hostagent/clock.py:
the drift measured over a round trip, the guest clock stepped when surely over 100 ms); an
agent without that route is asked over SSH for `date +%s.%N` instead, the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from toolbox import paths as pathmod
from toolbox.errors import EngineError, ToolboxError

MIN_FREE_BYTES = 2 * 1024**3  # a pull or a build needs room; less is a problem waiting to happen
CLOCK_TOLERANCE_MS = 1000.0
SSH_TIMEOUT = 5.0


@dataclass
class Check:
    name: str
    status: str  # "ok", "fail" or "skip"
    detail: str
    advice: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def fail(name: str, detail: str, advice: str) -> Check:
    return Check(name, "fail", detail, advice)


def skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


def run_checks(name: str) -> list[Check]:
    """Every check, in the order a person would fix things."""
    from toolbox import state

    checks: list[Check] = []
    ipaths = pathmod.InstancePaths.for_name(name)
    loaded = None
    if not ipaths.root.is_dir():
        checks.append(fail("instance", f"{name!r} does not exist", f"create it with: toolbox init -n {name}"))
    else:
        try:
            loaded = state.load(name)
        except ToolboxError as exc:
            checks.append(fail("instance", exc.message, exc.hint or f"see: toolbox config validate -n {name}"))
    driver_name = loaded[1].driver if loaded else "qemu"
    arch = loaded[1].image.arch if loaded else "x86_64"
    checks += hypervisor(driver_name, arch, loaded[1].accel if loaded else "auto")
    checks += disk_space([ipaths.root if ipaths.root.is_dir() else pathmod.toolbox_home(), pathmod.cache_dir()])
    checks += modes(ipaths)
    if loaded is None:
        return checks
    cfg = loaded[1]
    st = state.status(name)
    if st.state != "running":
        why = "; ".join(st.reasons) or st.state
        checks.append(fail("vm", f"{st.state} ({why})" if st.reasons else st.state, f"start it with: toolbox up -n {name}"))
        return checks + [skip(c, f"the VM is {st.state}") for c in ("ssh", "docker socket", "clock")]
    checks.append(ok("vm", "running"))
    checks += [ssh_port(cfg.ssh_port, name), docker_socket(ipaths, name)]
    checks.append(clock(ipaths, cfg, name) if not checks[-1].failed else skip("clock", "the docker socket does not answer"))
    return checks + forwards(ipaths, name)


def hypervisor(driver_name: str, arch: str, configured_accel: str) -> list[Check]:
    from toolbox import accel
    from toolbox.drivers import get_driver

    try:
        get_driver(driver_name).check_installed()
    except ToolboxError as exc:
        return [fail("hypervisor", exc.message, exc.hint or "install it"), skip("accelerator", "no hypervisor")]
    found = [ok("hypervisor", f"{driver_name} is installed")]
    if driver_name != "qemu":
        return found
    binary = shutil.which(accel.qemu_binary(arch)) or accel.qemu_binary(arch)
    found[0].detail = f"{driver_name}: {binary}"
    if configured_accel != "auto":
        return found + [ok("accelerator", f"{configured_accel} (set in the instance's config)")]
    chosen = accel.detect_accel(arch)  # cached: the probe runs once per kernel and QEMU
    cached = "cached probe" if pathmod.accel_cache_file().exists() else "no probe needed"
    if chosen == "tcg" and os.path.exists("/dev/kvm"):
        return found + [ok("accelerator", f"tcg (emulation, slow): /dev/kvm did not pass the probe ({cached}); "
                                          f"delete {pathmod.accel_cache_file()} to probe again")]
    return found + [ok("accelerator", f"{chosen} ({cached})")]


def disk_space(dirs: list[Path]) -> list[Check]:
    out = []
    for d in dirs:
        probe = d
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        label = f"disk space ({d.name or d})"
        text = f"{free / 1024**3:.1f} GiB free for {d}"
        out.append(ok(label, text) if free >= MIN_FREE_BYTES else
                   fail(label, text, f"free some space on the disk holding {d} (toolbox wants {MIN_FREE_BYTES // 1024**3} GiB)"))
    return out


def modes(ipaths: pathmod.InstancePaths) -> list[Check]:
    """The instance directory private (0700), the login key 0600, the pinned host key present."""
    out = []
    # The instance directory holds the keys and the docker socket: only the user may enter.
    # Its parent may be readable (the image cache is public data) but never writable by others.
    for d, forbidden, want in ((pathmod.toolbox_home(), 0o022, "not writable by others"), (ipaths.root, 0o077, "0700")):
        if d.is_dir():
            mode = stat.S_IMODE(d.stat().st_mode)
            out.append(ok(f"mode {d}", f"{mode:04o}") if mode & forbidden == 0 else
                       fail(f"mode {d}", f"{mode:04o}, should be {want}", f"run: chmod go-w{'rx' if forbidden == 0o077 else ''} {d}"))
    if not ipaths.root.is_dir():
        return out
    for f, allowed in ((ipaths.ssh_key, (0o600,)), (ipaths.host_pubkey, (0o600, 0o644))):
        if not f.exists():
            out.append(fail(f.name, f"{f} is missing", f"recreate the instance: toolbox delete -n {ipaths.name} && toolbox init -n {ipaths.name}"))
            continue
        mode = stat.S_IMODE(f.stat().st_mode)
        out.append(ok(f.name, f"{mode:04o}") if mode in allowed else
                   fail(f.name, f"mode {mode:04o}", f"run: chmod {allowed[0]:o} {f}"))
    return out


def ssh_port(port: int, name: str) -> Check:
    """The forwarded SSH port answers with an SSH banner."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=SSH_TIMEOUT) as sock:
            banner = sock.recv(64)
    except OSError as exc:
        return fail("ssh", f"127.0.0.1:{port}: {exc.strerror or exc}", f"restart the VM: toolbox restart -n {name}")
    if not banner.startswith(b"SSH-"):
        return fail("ssh", f"127.0.0.1:{port} answers, but not with SSH", f"another program holds the port: toolbox restart -n {name}")
    return ok("ssh", f"127.0.0.1:{port} ({banner.decode('ascii', 'replace').strip()})")


def docker_socket(ipaths: pathmod.InstancePaths, name: str) -> Check:
    from toolbox.engine.client import EngineClient

    sock = ipaths.docker_socket
    try:
        answer = EngineClient(sock, name).ping(timeout=10.0)
    except ToolboxError as exc:
        return fail("docker socket", f"{sock}: {exc.message.split(': ', 1)[-1]}",
                    f"restart the host agent: toolbox up -n {name}")
    return ok("docker socket", f"{sock} answers /_ping ({answer})")


def forwards(ipaths: pathmod.InstancePaths, name: str) -> list[Check]:
    """What the running host agent reports: its SSH link, and each published port it
    could not forward to the host's localhost (a host port another program holds)."""
    from toolbox.hostagent import report

    doc = report.read(ipaths.hostagent_state)
    if not doc:
        return [skip("ports", "the host agent has not reported yet")]
    out = []
    if not (doc.get("ssh") or {}).get("connected"):
        error = (doc.get("ssh") or {}).get("error") or "SSH connection lost"
        out.append(fail("host agent", f"reconnecting to the guest ({error})", f"if it lasts, restart it: toolbox up -n {name}"))
    ports = doc.get("ports") or []
    for p in ports:
        for problem in p.get("problems") or []:
            port = p.get("port")
            out.append(fail(f"port {port}/{p.get('proto')}", f"not forwarded to the host: {problem}",
                            f"stop the host program on port {port} (see: lsof -i :{port}), "
                            f"or publish the container on another host port"))
    if not out:
        out.append(ok("ports", f"{len(ports)} published port(s) forwarded to the host's localhost"))
    return out


def clock(ipaths: pathmod.InstancePaths, cfg: object, name: str) -> Check:
    from toolbox.engine.client import EngineClient
    from toolbox.hostagent.clock import read_and_step

    client = EngineClient(ipaths.docker_socket, name)
    try:
        reading = read_and_step(lambda method, path, body: client.json(method, path, body=body))
        drift, how, stepped = reading.drift_ms, "the guest agent", reading.stepped
    except ValueError as exc:
        return fail("clock", str(exc), f"restart the VM: toolbox restart -n {name}")
    except EngineError as exc:
        if exc.status != 404:
            return fail("clock", exc.message, f"restart the VM: toolbox restart -n {name}")
        try:
            drift, how, stepped = ssh_drift_ms(ipaths, cfg), "ssh date", False
        except ToolboxError as err:
            return fail("clock", err.message, f"restart the VM: toolbox restart -n {name}")
    text = f"guest {drift:+.0f} ms from the host (via {how})"
    if stepped:
        return ok("clock", text + "; the agent set the guest clock")
    if abs(drift) > CLOCK_TOLERANCE_MS:
        return fail("clock", text, f"set it from the host's: toolbox restart -n {name}")
    return ok("clock", text)


def ssh_drift_ms(ipaths: pathmod.InstancePaths, cfg: object) -> float:
    from toolbox import guest, ssh

    client = guest.connect(ipaths, cfg)  # type: ignore[arg-type]
    try:
        before = time.time()
        code, out, err = ssh.run(client, "date +%s.%N", timeout=30)
        after = time.time()
    finally:
        client.close()
    if code != 0:
        raise ToolboxError(f"date in the guest failed: {err.strip()}")
    return (float(out.strip()) - (before + after) / 2) * 1000


def as_json(checks: list[Check]) -> str:
    return json.dumps({"ok": not any(c.failed for c in checks), "checks": [asdict(c) for c in checks]}, indent=2)


def render_lines(checks: list[Check]) -> Iterator[str]:
    """rich markup: a mark and the finding per check, the advice under each failure."""
    from rich.markup import escape

    marks: dict[str, Callable[[str], str]] = {
        "ok": lambda s: f"[green]✓[/] {s}", "fail": lambda s: f"[bold red]✗[/] {s}", "skip": lambda s: f"[dim]- {s}[/]",
    }
    for c in checks:
        yield marks[c.status](f"{escape(c.name)}: {escape(c.detail)}")
        if c.failed:
            yield f"    [yellow]→[/] {escape(c.advice)}"
