#!/usr/bin/env python3
"""A stand-in for crun on the test host (crun cannot run on its hybrid cgroup layout).

It implements the subcommands the agent uses, running the container's process directly
on the host without namespaces, so the agent's plumbing (monitor, logs, attach, exec,
signals, exit codes) is tested for real. Not a security boundary; tests only.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import sys
import termios


def _send_master(path: str, master: int) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    socket.send_fds(s, [b"x"], [master])
    s.close()


def _become_tty(slave: int) -> None:
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def _exec(process: dict) -> None:
    env = dict(e.split("=", 1) for e in process.get("env", []) if "=" in e)
    cwd = process.get("cwd") or "/"
    try:
        os.chdir(cwd if os.path.isdir(cwd) else "/")
        os.execvpe(process["args"][0], process["args"], env)
    except OSError as exc:
        os.write(2, f"exec: {process['args'][0]}: {exc}\n".encode())
        os._exit(127)


def _state_dir(root: str, cid: str) -> str:
    return os.path.join(root, cid)


def create(root: str, args: list[str]) -> int:
    opts, cid = _opts(args)
    config = json.load(open(os.path.join(opts["--bundle"], "config.json")))
    process = config["process"]
    sdir = _state_dir(root, cid)
    os.makedirs(sdir, exist_ok=True)
    fifo = os.path.join(sdir, "start")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    exe = process["args"][0]
    path = next((e.split("=", 1)[1] for e in process.get("env", []) if e.startswith("PATH=")), "/usr/bin:/bin")
    if "/" not in exe and not shutil.which(exe, path=path):
        sys.stderr.write(f"executable file `{exe}` not found in $PATH: No such file or directory\n")
        return 1
    master = slave = -1
    if process.get("terminal"):
        master, slave = os.openpty()
    pid = os.fork()
    if pid == 0:
        if slave >= 0:
            os.close(master)
            _become_tty(slave)
        fd = os.open(fifo, os.O_RDONLY)
        os.read(fd, 1)
        os.close(fd)
        _exec(process)
    if master >= 0:
        os.close(slave)
        _send_master(opts["--console-socket"], master)
    with open(opts["--pid-file"], "w") as fh:
        fh.write(str(pid))
    json.dump({"pid": pid}, open(os.path.join(sdir, "state.json"), "w"))
    return 0


def _pid(root: str, cid: str) -> int:
    return int(json.load(open(os.path.join(_state_dir(root, cid), "state.json")))["pid"])


def execute(root: str, args: list[str]) -> int:
    opts, cid = _opts(args)
    process = json.load(open(opts["--process"]))
    master = slave = -1
    if "--tty" in opts:
        master, slave = os.openpty()
    pid = os.fork()
    if pid == 0:
        if slave >= 0:
            os.close(master)
            _become_tty(slave)
        _exec(process)
    if master >= 0:
        os.close(slave)
        _send_master(opts["--console-socket"], master)
        os.close(master)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _opts(args: list[str]) -> tuple[dict[str, str], str]:
    opts: dict[str, str] = {}
    rest = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--tty", "-t", "--force", "-f", "--detach", "-d"):
            opts[{"-t": "--tty", "-f": "--force", "-d": "--detach"}.get(a, a)] = ""
        elif a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            opts[k] = v
        elif a.startswith("--"):
            opts[a] = args[i + 1]
            i += 1
        else:
            rest.append(a)
        i += 1
    return opts, rest[0] if rest else ""


def main(argv: list[str]) -> int:
    root = "/run/fake-crun"
    if argv[:1] == ["--root"]:
        root, argv = argv[1], argv[2:]
    cmd, args = argv[0], argv[1:]
    if cmd == "create":
        return create(root, args)
    if cmd == "exec":
        return execute(root, args)
    _, cid = _opts(args if cmd != "kill" else args[:1])
    sdir = _state_dir(root, cid)
    if not os.path.isdir(sdir):
        sys.stderr.write(f"container `{cid}` does not exist\n")
        return 1
    if cmd == "start":
        fd = os.open(os.path.join(sdir, "start"), os.O_WRONLY)
        os.write(fd, b"x")
        os.close(fd)
    elif cmd == "kill":
        os.kill(_pid(root, cid), int(args[1]) if len(args) > 1 else 15)
    elif cmd in ("pause", "resume"):
        os.kill(_pid(root, cid), signal.SIGSTOP if cmd == "pause" else signal.SIGCONT)
    elif cmd == "delete":
        shutil.rmtree(sdir, ignore_errors=True)
    elif cmd == "state":
        print(json.dumps({"id": cid, "pid": _pid(root, cid), "status": "running"}))
    elif cmd == "ps":
        print(json.dumps([_pid(root, cid)]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
