"""Instructions the guest agent spends per `docker ps`, counted by callgrind (issue 4's ps figure).

Under TCG the guest's CPU figures swing 2x with the host's load; an instruction count does
not. This runs a guest-agent tree on the host under `valgrind --tool=callgrind` with the
guest's Python (Debian bookworm's /usr/bin/python3, 3.11) and an h11 directory (the guest's
own, copied out of the image, or any), sends `docker ps`'s bytes (one connection: HEAD
/_ping, GET /v1.44/containers/json, close) 20 times, zeroes the counters, sends them CYCLES
times more and prints the user-space instructions (Ir) per cycle. Trees: the working tree,
or `--rev REV` (git archive of guest-agent/ at REV).

    .venv/bin/python bench/agent_ir.py --h11 /path/with/h11 [--rev main] [--cycles 50]

Not part of run.py (no VM, no ratio): a tool for comparing request-path changes.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import re
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PING = b"HEAD /_ping HTTP/1.1\r\nHost: api.moby.localhost\r\nUser-Agent: Docker-Client/28.2.2 (linux)\r\n\r\n"
LIST = b"GET /v1.44/containers/json HTTP/1.1\r\nHost: api.moby.localhost\r\nUser-Agent: Docker-Client/28.2.2 (linux)\r\n\r\n"


def _answer(s: socket.socket, head_only: bool) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            raise SystemExit("the agent closed the connection")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0 if head_only else int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        rest += s.recv(65536)


def ps_cycle(path: str) -> None:
    """What `docker ps` sends, on one new connection."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(PING)
        _answer(s, True)
        s.sendall(LIST)
        _answer(s, False)


def _tree(rev: str | None, into: Path) -> Path:
    if rev is None:
        return REPO / "guest-agent"
    raw = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "guest-agent/toolbox_agent"],
                         check=True, capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(raw)).extractall(into)
    return into / "guest-agent"


def measure(tree: Path, h11_dir: str, cycles: int, work: Path) -> float:
    sock = work / "d.sock"
    env = dict(os.environ, TOOLBOX_AGENT_ROOT=str(work / "root"), TOOLBOX_AGENT_SOCKET=str(sock),
               TOOLBOX_AGENT_SETTINGS="/nonexistent", PYTHONPATH=f"{tree}:{h11_dir}")
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.%p", "/usr/bin/python3", "-m", "toolbox_agent"]
    with open(work / "agent.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent did not start (see {work}/agent.log)")
            time.sleep(0.5)
        for _ in range(20):
            ps_cycle(str(sock))
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        for _ in range(cycles):
            ps_cycle(str(sock))
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        dump = max(glob.glob(f"{work}/cg.{proc.pid}.*"), key=os.path.getmtime)
        total = int(re.search(r"^(?:summary|totals): (\d+)", Path(dump).read_text(), re.M).group(1))  # type: ignore[union-attr]
        return total / cycles
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h11", required=True, help="a directory holding the h11 package to use")
    parser.add_argument("--rev", help="a git revision's guest-agent/ instead of the working tree")
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tbir-") as tmp:
        work = Path(tmp)
        tree = _tree(args.rev, work / "tree")
        print(f"{args.rev or 'working tree'}: {measure(tree, args.h11, args.cycles, work):,.0f} instructions per docker ps")


if __name__ == "__main__":
    main()
