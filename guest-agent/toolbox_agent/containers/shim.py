"""The per-container monitor: `python3 -m toolbox_agent.containers.shim DIR SOCK ID RUNTIME ROOT [--tty] [--stdin]`.

Started by the agent in its own session, so a container and its logs outlive an agent
restart. It makes itself a child subreaper, runs `RUNTIME create` with the container's
stdio on pipes (or receives the pty master over --console-socket with a TTY), reports
"ok PID" or "error MESSAGE" on its stdout and closes it, then:
- copies output to DIR/container-json.log (json-file lines) and to every client of
  SOCK (kept short, under the run dir: unix socket paths are limited to 108 bytes) (frames, see frames.py), takes stdin and resize frames from them;
- the agent runs `RUNTIME start ID` itself once it is connected;
- when the container's process exits: writes DIR/exit.json, `RUNTIME delete`s the
  container, sends the exit frame to its clients, and ends.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

from toolbox_agent.containers import console, frames
from toolbox_agent.containers.logs import encode_entry, rfc3339_nano, split_lines

PR_SET_CHILD_SUBREAPER = 36
FLUSH_PARTIAL = 16 * 1024


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


class Shim:
    def __init__(self, cdir: Path, sock: Path, cid: str, runtime: str, root: str, tty: bool, stdin: bool) -> None:
        self.dir, self.sock, self.id, self.tty, self.stdin = cdir, sock, cid, tty, stdin
        self.runtime = [runtime, "--root", root]
        self.clients: set[asyncio.StreamWriter] = set()
        self.log = open(cdir / "container-json.log", "ab", buffering=0)  # noqa: SIM115
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self.stdin_fd: int | None = None
        self.master: int | None = None
        self.outputs: dict[int, int] = {}  # fd -> frame kind
        self.open_outputs = 0

    def create(self) -> int:
        """Run `runtime create`; the container's pid, or raise RuntimeError with the reason."""
        pid_file = self.dir / "pid"
        argv = [*self.runtime, "create", "--bundle", str(self.dir / "bundle"), "--pid-file", str(pid_file)]
        if self.tty:
            console_sock = str(self.sock.with_suffix(".console"))
            listener = console.console_listener(console_sock)
            proc = subprocess.run([*argv, "--console-socket", console_sock, self.id],
                                  stdin=subprocess.DEVNULL, capture_output=True, check=False)
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

    async def serve(self, pid: int) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        self.open_outputs = len(self.outputs)
        for fd in self.outputs:
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._readable, fd, done)
        sock = self.sock
        if sock.exists():
            sock.unlink()
        server = await asyncio.start_unix_server(self._client, str(sock))
        status = await loop.run_in_executor(None, _wait_pid, pid)
        try:
            await asyncio.wait_for(done.wait(), 3.0)
        except asyncio.TimeoutError:
            pass
        for stream in ("stdout", "stderr"):
            if self.partial[stream]:
                self.log.write(encode_entry(stream, self.partial[stream]))
        doc = {"exit_code": status, "finished_at": rfc3339_nano()}
        tmp = self.dir / "exit.json.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.rename(self.dir / "exit.json")
        subprocess.run([*self.runtime, "delete", "--force", self.id], capture_output=True, check=False)
        server.close()
        for writer in list(self.clients):
            try:
                writer.write(frames.shim_frame(frames.K_EXIT, json.dumps(doc).encode()))
                await writer.drain()
                writer.close()
            except (ConnectionError, RuntimeError):
                pass
        if sock.exists():
            sock.unlink()

    def _readable(self, fd: int, done: asyncio.Event) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the pty's other side is gone
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            self.open_outputs -= 1
            if self.open_outputs <= 0:
                done.set()
            return
        kind = self.outputs[fd]
        self._log(kind, data)
        frame = frames.shim_frame(kind, data)
        for writer in list(self.clients):
            try:
                writer.write(frame)
            except (ConnectionError, RuntimeError):
                self.clients.discard(writer)

    def _log(self, kind: int, data: bytes) -> None:
        stream = "stdout" if kind == frames.K_STDOUT else "stderr"
        lines, rest = split_lines(self.partial[stream] + data)
        if len(rest) > FLUSH_PARTIAL:
            lines.append(rest)
            rest = b""
        self.partial[stream] = rest
        if lines:
            self.log.write(b"".join(encode_entry(stream, line) for line in lines))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        try:
            while True:
                frame = await frames.read_shim_frame(reader)
                if frame is None:
                    return
                self._command(*frame)
        finally:
            self.clients.discard(writer)

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
    asyncio.run(shim.serve(pid))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
