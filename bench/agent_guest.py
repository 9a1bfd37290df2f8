"""Runs inside the guest (python3, as root) for agent_ab.py: puts agent trees in place,
stops the image's supervised agent, starts a given tree's agent as init does, and reads
its RSS and CPU time. Prints one JSON line per command.

    python3 agent_guest.py fetch URL NAME       # URL: a tar.gz of guest-agent/ -> /var/tmp/agents/NAME
    python3 agent_guest.py takeover             # stop init's supervisor and its agent
    python3 agent_guest.py start NAME           # start NAME's agent; time /_ping, then a container list
    python3 agent_guest.py stat PID             # VmRSS and CPU seconds of PID
    python3 agent_guest.py stop PID

Only the standard library: it runs on the image's own Python.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request

AGENTS = "/var/tmp/agents"
SOCKET = "/run/toolbox/docker.sock"
PING = b"HEAD /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"
LIST = b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\n\r\n"
POLL_S = 0.01
START_TIMEOUT_S = 300.0


def fetch(url: str, name: str) -> dict[str, object]:
    data = urllib.request.urlopen(url, timeout=60).read()
    dest = os.path.join(AGENTS, name)
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        tf.extractall(dest)
    return {"name": name, "bytes": len(data)}


def _pids(match: object) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if match(argv):  # type: ignore[operator]
            out.append(int(pid))
    return out


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def stop(pid: int) -> dict[str, object]:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return {"stopped": pid}
    if not _gone(pid, 30):
        os.kill(pid, signal.SIGKILL)
        _gone(pid, 10)
    return {"stopped": pid}


def takeover() -> dict[str, object]:
    """SIGTERM to init's supervisor of the agent: it stops its agent and exits (supervise)."""
    sups = _pids(lambda a: any(x.endswith(b"/supervise") for x in a) and b"agent" in a)
    for pid in sups:
        stop(pid)
    agents = _pids(lambda a: os.path.basename(a[0]).startswith(b"python") and b"toolbox_agent" in a)
    for pid in agents:
        stop(pid)
    return {"supervisors": sups, "agents": agents}


def _answers(request: bytes, timeout: float | None = None) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        try:
            s.connect(SOCKET)
            s.sendall(request)
            return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False


def start(name: str) -> dict[str, object]:
    """The agent as init starts it (root, primary group toolbox), from AGENTS/NAME."""
    argv = ["/usr/bin/setpriv", "--regid=toolbox", "--clear-groups", "--",
            "env", f"PYTHONPATH={AGENTS}/{name}", "python3", "-m", "toolbox_agent"]
    with open(f"/var/tmp/agent-{name}.log", "ab") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    while not _answers(PING):
        if proc.poll() is not None or time.monotonic() - t0 > START_TIMEOUT_S:
            raise SystemExit(f"agent {name} did not answer /_ping (see /var/tmp/agent-{name}.log)")
        time.sleep(POLL_S)
    ready = time.monotonic() - t0
    at_ping = stat(proc.pid)
    # then the first request that needs the whole engine (an agent may answer /_ping before)
    if not _answers(LIST, START_TIMEOUT_S):
        raise SystemExit(f"agent {name} did not list containers (see /var/tmp/agent-{name}.log)")
    return {"pid": proc.pid, "ready_s": ready, "listed_s": time.monotonic() - t0, **at_ping}


def stat(pid: int) -> dict[str, object]:
    rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {"rss_kb": rss, "cpu_s": cpu}


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "fetch":
        out = fetch(args[0], args[1])
    elif cmd == "takeover":
        out = takeover()
    elif cmd == "start":
        out = start(args[0])
    elif cmd == "stat":
        out = stat(int(args[0]))
    elif cmd == "stop":
        out = stop(int(args[0]))
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
