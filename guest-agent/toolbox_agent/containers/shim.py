"""The per-container monitor: `python3 -m toolbox_agent.containers.shim DIR SOCK ID RUNTIME ROOT [--tty] [--stdin]`.

Started by the agent in its own session (and forked once more, so init adopts it): a
container and its logs outlive an agent restart. It makes itself a child subreaper, runs
`RUNTIME create` with the container's stdio on pipes (or receives the pty master over
--console-socket with a TTY), reports "ok PID" or "error MESSAGE" on its stdout and closes
it, then, in one `selectors` loop (no asyncio: the monitor must start fast):
- copies output to DIR/container-json.log (json-file lines) and to every client of SOCK
  (kept short, under the run dir: unix socket paths hold 108 bytes), as frames (frames.py);
  takes stdin, stdin-close and resize frames from them;
- the agent runs `RUNTIME start ID` itself once it is connected;
- when the container's process exits: writes DIR/exit.json, `RUNTIME delete`s the
  container, sends the exit frame to its clients, and ends.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from toolbox_agent.containers import console, frames
from toolbox_agent.containers.logs import encode_entry, rfc3339_nano, split_lines

PR_SET_CHILD_SUBREAPER = 36
FLUSH_PARTIAL = 16 * 1024
DRAIN_AFTER_EXIT = 3.0


def _subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except OSError:
        pass


def _report(line: str) -> None:
    os.write(1, (line.replace("\n", " ").strip() + "\n").encode())
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _drain(fd: int, timeout: float = 2.0) -> bytes:
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return out
        chunk = os.read(fd, 65536)
        if not chunk:
            return out
        out += chunk


class Client:
    """One connection to the monitor's socket: frames in, frames out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def frames_in(self, data: bytes) -> list[tuple[int, bytes]]:
        self.inbuf += data
        out = []
        size = frames.SHIM_HEADER.size
        while len(self.inbuf) >= size:
            kind, length = frames.SHIM_HEADER.unpack_from(self.inbuf)
            if len(self.inbuf) < size + length:
                break
            out.append((kind, self.inbuf[size : size + length]))
            self.inbuf = self.inbuf[size + length :]
        return out


class Shim:
    def __init__(self, cdir: Path, sock: Path, cid: str, runtime: str, root: str, tty: bool, stdin: bool) -> None:
        self.dir, self.sock, self.id, self.tty, self.stdin = cdir, sock, cid, tty, stdin
        self.runtime = [runtime, "--root", root]
        self.log = open(cdir / "container-json.log", "ab", buffering=0)  # noqa: SIM115
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self.stdin_fd: int | None = None
        self.master: int | None = None
        self.outputs: dict[int, int] = {}  # fd -> frame kind
        self.clients: dict[int, Client] = {}
        self.sel = selectors.DefaultSelector()

    def create(self) -> int:
        """Run `runtime create`; the container's pid, or raise RuntimeError with the reason."""
        pid_file = self.dir / "pid"
        argv = [*self.runtime, "create", "--bundle", str(self.dir / "bundle"), "--pid-file", str(pid_file)]
        if self.tty:
            console_sock = str(self.sock.with_suffix(".console"))
            listener = console.console_listener(console_sock)
            proc = subprocess.run([*argv, "--console-socket", console_sock, self.id],
                                  stdin=subprocess.DEVNULL, capture_output=True, check=False)  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError((proc.stderr or proc.stdout).decode(errors="replace"))
            self.master = console.receive_master(listener, 10.0)
            listener.close()
            os.unlink(console_sock)
            self.outputs = {self.master: frames.K_STDOUT}
        else:
            if self.stdin:
                stdin_r, self.stdin_fd = os.pipe()
            else:
                stdin_r = os.open(os.devnull, os.O_RDONLY)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            proc2 = subprocess.Popen([*argv, self.id], stdin=stdin_r, stdout=out_w, stderr=err_w)
            for fd in (stdin_r, out_w, err_w):
                os.close(fd)
            if proc2.wait() != 0:
                raise RuntimeError((_drain(err_r) + _drain(out_r, 0.1)).decode(errors="replace"))
            self.outputs = {out_r: frames.K_STDOUT, err_r: frames.K_STDERR}
        return int(pid_file.read_text().strip())

    def serve(self, pid: int) -> None:
        for fd in self.outputs:
            self.sel.register(fd, selectors.EVENT_READ, "output")
        if self.sock.exists():
            self.sock.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.sock))
        listener.listen(16)
        self.sel.register(listener, selectors.EVENT_READ, "listener")
        exit_r, exit_w = os.pipe()
        status: list[int] = []

        def waiter() -> None:
            status.append(_wait_pid(pid))
            os.write(exit_w, b"x")

        threading.Thread(target=waiter, daemon=True).start()
        self.sel.register(exit_r, selectors.EVENT_READ, "exit")
        deadline: float | None = None
        import time

        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if deadline is not None and (not self.outputs or timeout == 0.0):
                break
            for key, _ in self.sel.select(timeout):
                what = key.data
                if what == "output":
                    self._readable(key.fd)
                elif what == "listener":
                    conn, _ = listener.accept()
                    self.clients[conn.fileno()] = Client(conn)
                    self.sel.register(conn, selectors.EVENT_READ, "client")
                elif what == "client":
                    self._client_readable(key.fd)
                elif what == "exit":
                    self.sel.unregister(exit_r)
                    deadline = time.monotonic() + DRAIN_AFTER_EXIT
        self._finish(status[0] if status else 255, listener)

    def _finish(self, code: int, listener: socket.socket) -> None:
        for stream in ("stdout", "stderr"):
            if self.partial[stream]:
                self.log.write(encode_entry(stream, self.partial[stream]))
        doc = {"exit_code": code, "finished_at": rfc3339_nano()}
        tmp = self.dir / "exit.json.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.rename(self.dir / "exit.json")
        listener.close()
        self.sock.unlink(missing_ok=True)
        frame = frames.shim_frame(frames.K_EXIT, json.dumps(doc).encode())
        for client in list(self.clients.values()):
            client.send(frame)
            client.sock.close()
        # after telling the agent: nobody waits on this
        subprocess.run([*self.runtime, "delete", "--force", self.id], capture_output=True, check=False)

    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except OSError as exc:  # EIO: the pty's other side is gone
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self.sel.unregister(fd)
            self.outputs.pop(fd, None)
            return
        kind = self.outputs[fd]
        self._log(kind, data)
        frame = frames.shim_frame(kind, data)
        for key, client in list(self.clients.items()):
            if not client.send(frame):
                self._drop(key)

    def _drop(self, key: int) -> None:
        client = self.clients.pop(key, None)
        if client is not None:
            try:
                self.sel.unregister(client.sock)
            except (KeyError, ValueError):
                pass
            client.sock.close()

    def _log(self, kind: int, data: bytes) -> None:
        stream = "stdout" if kind == frames.K_STDOUT else "stderr"
        lines, rest = split_lines(self.partial[stream] + data)
        if len(rest) > FLUSH_PARTIAL:
            lines.append(rest)
            rest = b""
        self.partial[stream] = rest
        if lines:
            self.log.write(b"".join(encode_entry(stream, line) for line in lines))

    def _client_readable(self, key: int) -> None:
        client = self.clients[key]
        try:
            data = client.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(key)
            return
        for kind, payload in client.frames_in(data):
            self._command(kind, payload)

    def _command(self, kind: int, data: bytes) -> None:
        target = self.master if self.tty else self.stdin_fd
        if kind == frames.K_STDIN and target is not None:
            try:
                os.write(target, data)  # small writes; a blocking pipe is acceptable here
            except OSError:
                pass
        elif kind == frames.K_STDIN_CLOSE and not self.tty and self.stdin_fd is not None:
            os.close(self.stdin_fd)
            self.stdin_fd = None
        elif kind == frames.K_RESIZE and self.master is not None:
            size = json.loads(data)
            console.set_size(self.master, int(size.get("h", 0)), int(size.get("w", 0)))


def _wait_pid(pid: int) -> int:
    try:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code
    except ChildProcessError:  # not our child (no subreaper): poll, the code is lost
        import time

        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return 255
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    cdir, sock, cid, runtime, root = Path(argv[0]), Path(argv[1]), argv[2], argv[3], argv[4]
    if os.fork() > 0:  # the agent waits for this parent only; init adopts the monitor
        os._exit(0)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _subreaper()
    shim = Shim(cdir, sock, cid, runtime, root, "--tty" in argv, "--stdin" in argv)
    try:
        pid = shim.create()
    except (RuntimeError, OSError, ValueError) as exc:
        _report(f"error {exc}")
        return 1
    _report(f"ok {pid}")
    shim.serve(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
