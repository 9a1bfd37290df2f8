"""Receiving a pty master from the OCI runtime over its --console-socket (SCM_RIGHTS),
and the few tty operations the engine needs."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios


def console_listener(path: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    return sock


def receive_master(listener: socket.socket, timeout: float = 30.0) -> int:
    """Accept the runtime's connection and take the pty master fd it sends."""
    listener.settimeout(timeout)
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(timeout)
        _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
    if not fds:
        raise OSError("the runtime sent no terminal")
    return fds[0]


def set_size(fd: int, rows: int, cols: int) -> None:
    if rows > 0 and cols > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
