"""The terminal end of a hijacked attach or exec stream.

Without a TTY the engine multiplexes stdout and stderr in frames (an 8-byte header:
stream, three zero bytes, big-endian length); with one, the bytes come raw. Our stdin
goes up the same socket and its end becomes a half-close (shutdown(SHUT_WR)), which the
host agent and the guest agent pass on as the end of the container's stdin.

With a TTY the local terminal is put in raw mode (every key, Ctrl-C included, goes to the
container's terminal) and restored whatever happens; SIGWINCH sends the new size.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

HEADER = struct.Struct(">BxxxL")
CHUNK = 65536


class FrameDecoder:
    """Feed bytes as they arrive; get (stream, payload) pairs for whole frames."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self._buf += data
        while len(self._buf) >= HEADER.size:
            stream, size = HEADER.unpack_from(self._buf)
            if len(self._buf) < HEADER.size + size:
                return
            payload = self._buf[HEADER.size:HEADER.size + size]
            self._buf = self._buf[HEADER.size + size:]
            yield stream, payload


def copy_output(chunks: Iterator[bytes], tty: bool, out: BinaryIO, err: BinaryIO) -> None:
    """Write a stream's bytes to out/err: raw with a TTY, demultiplexed without."""
    decoder = FrameDecoder()
    for data in chunks:
        if tty:
            _write(out, data)
            continue
        for stream, payload in decoder.feed(data):
            _write(err if stream == 2 else out, payload)


def _write(target: BinaryIO, data: bytes) -> None:
    target.write(data)
    target.flush()


def socket_chunks(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            data = sock.recv(CHUNK)
        except OSError:
            return
        if not data:
            return
        yield data


def read_stdin() -> bytes:
    """Whatever stdin has now (b"" at its end); a file descriptor when there is one."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        return sys.stdin.buffer.read1(CHUNK)  # type: ignore[union-attr]  (an in-memory stdin)
    return os.read(fd, CHUNK)


def pump_stdin(sock: socket.socket) -> threading.Thread:
    """Copy our stdin up the socket in a thread, then half-close the sending side."""

    def pump() -> None:
        try:
            while data := read_stdin():
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def stdin_is_tty() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, io.UnsupportedOperation, ValueError):
        return False


def terminal_size() -> tuple[int, int] | None:
    """(rows, cols) of our terminal, or None when stdout is not one."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except (AttributeError, io.UnsupportedOperation, ValueError, OSError):
        return None
    return size.lines, size.columns


@contextlib.contextmanager
def proxy_signals(send: Callable[[str], None]) -> Iterator[None]:
    """Pass SIGINT, SIGTERM and SIGHUP on to the container while attached without a TTY
    (docker's --sig-proxy): Ctrl-C then stops the container's program, which decides how
    to end, and its exit code is still ours. Only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(Exception):  # the container may be gone already
            send(signal.Signals(signum).name)

    saved = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def raw_terminal(on_resize: Callable[[int, int], None]) -> Iterator[None]:
    """Raw mode on stdin (when it is a terminal) and SIGWINCH → on_resize, both undone after."""
    import termios
    import tty

    fd = sys.stdin.fileno() if stdin_is_tty() else None
    saved = termios.tcgetattr(fd) if fd is not None else None
    old_handler = None

    def resized(_sig: int, _frame: object) -> None:
        size = terminal_size()
        if size:
            with contextlib.suppress(Exception):  # a resize that fails must not end the session
                on_resize(*size)

    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGWINCH, resized)
    try:
        if fd is not None:
            tty.setraw(fd)
        yield
    finally:
        if fd is not None and saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if old_handler is not None:
            signal.signal(signal.SIGWINCH, old_handler)
