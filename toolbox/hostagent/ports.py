"""A published port on the host's loopback: listen on 127.0.0.1 and ::1 at the container's
host port and carry the traffic over the SSH link to 127.0.0.1:<port> in the guest.

TCP: each accepted connection becomes a `direct-tcpip` channel (what `ssh -L` opens),
bytes and half-closes passed on by `pump_pair`. UDP: the datagrams of every host client
travel framed on one hijacked stream per port to the guest agent, which sends them from
one socket per client and frames the replies back (guest-agent/toolbox_agent/api/udp.py
has the other side and the frame format).

One thread per port waits on its sockets (select, woken through a socketpair), so a port
stops listening the moment it is unpublished. An address that cannot be bound (the port is
taken on the host) is kept as a problem and tried again by `bind_missing`, never skipped.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import struct
import threading
import time
from typing import Any, Protocol

import paramiko

from toolbox.errors import SSHError
from toolbox.hostagent.forward import pump_pair
from toolbox.hostagent.guest_http import CHANNEL_ERRORS, GuestHTTP

log = logging.getLogger("toolbox.hostagent")
LOOPBACKS = (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6))
NO_IPV6 = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)  # a host without an IPv6 loopback
FRAME = struct.Struct("!HI")  # payload length, client id: as the guest agent's udp.py
MAX_DATAGRAM = 65535
UDP_IDLE = 120.0  # seconds after which a UDP client is forgotten (as a NAT would)
TICK = 5.0


class Link(Protocol):
    def open(self, guest_path: str) -> paramiko.Channel: ...
    def open_tcp(self, port: int, origin: tuple[str, int]) -> paramiko.Channel: ...


def where(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


class LoopbackForward:
    """The sockets of one published port and the thread that serves them."""

    proto = ""
    kind = socket.SOCK_STREAM

    def __init__(self, port: int, link: Link) -> None:
        self.port, self.link = port, link
        self.socks: dict[str, socket.socket] = {}
        self.problems: dict[str, str] = {}  # address -> why it is not listening
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"port-{port}-{self.proto}", daemon=True)

    def start(self) -> None:
        self.bind_missing()
        self._thread.start()

    def bind_missing(self) -> bool:
        """Bind the loopback addresses not bound yet; whether any new one was bound."""
        added = False
        for addr, family in LOOPBACKS:
            if addr in self.socks or self._closed.is_set():
                continue
            try:
                self.socks[addr] = self._bind(addr, family)
            except OSError as exc:
                if family == socket.AF_INET6 and exc.errno in NO_IPV6:
                    continue
                why = "already in use on the host" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
                if self.problems.get(addr) != why:
                    log.warning("cannot forward %s/%s: %s %s", self.port, self.proto, where(addr, self.port), why)
                self.problems[addr] = why
                continue
            if self.problems.pop(addr, None) is not None:
                log.info("%s/%s: %s is free now and forwarded", self.port, self.proto, where(addr, self.port))
            added = True
        if added:
            self._wake_w.send(b"x")
        return added

    def _bind(self, addr: str, family: int) -> socket.socket:
        sock = socket.socket(family, self.kind)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if self.kind == socket.SOCK_STREAM:
                # TIME_WAIT leftovers only; a live listener still makes bind fail. Not for
                # UDP, where it would let two programs share the port and hide a conflict.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr, self.port))
            if self.kind == socket.SOCK_STREAM:
                sock.listen(128)
        except OSError:
            sock.close()
            raise
        return sock

    def status(self) -> dict[str, Any]:
        return {"proto": self.proto, "port": self.port, "listening": sorted(self.socks),
                "problems": [f"{where(a, self.port)} {why}" for a, why in sorted(self.problems.items())]}

    def close(self) -> None:
        """Stop listening now: when this returns, the host port is free."""
        self._closed.set()
        self._wake_w.send(b"x")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
        self._on_close()

    def _loop(self) -> None:
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([self._wake_r, *self.socks.values()], [], [], TICK)
                for sock in ready:
                    if sock is self._wake_r:
                        self._wake_r.recv(64)
                    elif not self._closed.is_set():
                        self._ready(sock)
                self._tick()
        except (OSError, ValueError) as exc:  # a socket closed under us: only by close()
            if not self._closed.is_set():
                log.warning("forward %s/%s stopped: %s", self.port, self.proto, exc)
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def _ready(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _tick(self) -> None:
        pass

    def _on_close(self) -> None:
        pass


class TcpForward(LoopbackForward):
    proto = "tcp"
    kind = socket.SOCK_STREAM

    def _ready(self, sock: socket.socket) -> None:
        try:
            conn, peer = sock.accept()
        except OSError:
            return
        threading.Thread(target=self._carry, args=(conn, peer), daemon=True).start()

    def _carry(self, conn: socket.socket, peer: Any) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            chan = self.link.open_tcp(self.port, (str(peer[0]), int(peer[1])))
        except (paramiko.ChannelException, *CHANNEL_ERRORS) as exc:
            log.warning("port %d/tcp: the guest did not take the connection: %s", self.port, exc)
            conn.close()
            return
        pump_pair(conn, chan)


class UdpForward(LoopbackForward):
    proto = "udp"
    kind = socket.SOCK_DGRAM

    def __init__(self, port: int, link: Link, http: GuestHTTP) -> None:
        super().__init__(port, link)
        self.http = http
        self._stream: paramiko.Channel | None = None
        self._stream_lock = threading.Lock()
        self._ids: dict[tuple[int, Any], int] = {}  # (family, client address) -> client id
        self._clients: dict[int, list[Any]] = {}  # client id -> [socket, address, last used]
        self._next_id = 1

    def _ready(self, sock: socket.socket) -> None:
        try:
            data, addr = sock.recvfrom(MAX_DATAGRAM)
        except OSError:
            return
        key = (sock.family, addr)
        cid = self._ids.get(key)
        if cid is None:
            cid, self._next_id = self._next_id, (self._next_id % 0xFFFFFFFF) + 1
            self._ids[key] = cid
            self._clients[cid] = [sock, addr, 0.0]
        self._clients[cid][2] = time.monotonic()
        self._send(FRAME.pack(len(data), cid) + data)

    def _send(self, frame: bytes) -> None:
        stream = self._stream or self._open_stream()
        if stream is None:
            return  # dropped, as UDP may; the next datagram tries again
        try:
            stream.sendall(frame)
        except CHANNEL_ERRORS as exc:
            log.info("port %d/udp: the stream to the guest broke (%s); reopening on the next datagram", self.port, exc)
            self._drop(stream)

    def _open_stream(self) -> paramiko.Channel | None:
        try:
            chan, rest = self.http.hijack(f"/toolbox/v1/udp/{self.port}")
        except CHANNEL_ERRORS as exc:
            log.warning("port %d/udp: cannot open the stream to the guest agent: %s", self.port, exc)
            return None
        with self._stream_lock:
            self._stream = chan
        threading.Thread(target=self._replies, args=(chan, rest), daemon=True).start()
        return chan

    def _replies(self, chan: paramiko.Channel, buf: bytes) -> None:
        """Frames from the guest: each reply to the client its id names."""
        try:
            while True:
                while len(buf) >= FRAME.size:
                    length, cid = FRAME.unpack_from(buf)
                    if len(buf) < FRAME.size + length:
                        break
                    data, buf = buf[FRAME.size : FRAME.size + length], buf[FRAME.size + length :]
                    client = self._clients.get(cid)
                    if client is not None:
                        client[0].sendto(data, client[1])
                chunk = chan.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except (*CHANNEL_ERRORS, SSHError):
            pass
        self._drop(chan)

    def _drop(self, chan: paramiko.Channel) -> None:
        with self._stream_lock:
            if self._stream is chan:
                self._stream = None
        chan.close()

    def _tick(self) -> None:
        cutoff = time.monotonic() - UDP_IDLE
        for key, cid in list(self._ids.items()):
            if self._clients[cid][2] < cutoff:
                del self._ids[key], self._clients[cid]

    def _on_close(self) -> None:
        with self._stream_lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
