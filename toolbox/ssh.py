"""SSH to the guest (paramiko): the instance key only, the pinned host key only.

No password is ever tried, no ssh-agent, no ~/.ssh keys: `connect` passes exactly one key
and turns off the rest. The guest's host key was made by `init` and handed to the guest on
its config drive, so it is known before the first connection: any other key is refused
(HostKeyMismatch) and there is no trust-on-first-use.

Also here: running commands, an interactive shell with a PTY that follows window resizes,
and `open_unix_socket`, a `direct-streamlocal@openssh.com` channel to a unix socket in the
guest (how the host reaches the guest agent's /run/toolbox/docker.sock).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import selectors
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN
from paramiko.message import Message

from toolbox.errors import GuestSocketRefused, GuestTimeout, HostKeyMismatch, SSHError

USER = "toolbox"
PROBE_TIMEOUT = 6.0  # seconds one banner probe waits: sshd forks and execs a child per
# connection, which takes seconds on a loaded TCG guest; a probe made before the guest's
# NIC was up stalls in QEMU's retransmits, but a later one (below) goes past it
PROBE_EVERY = 0.25  # seconds from a probe's end (refused, reset: sshd not there yet) to the next
PROBE_STAGGER = 1.0  # seconds before another probe joins those that still wait
MAX_PROBES = 3  # each probe sshd accepts costs the guest a fork and an exec: never a crowd
ALIVE_EVERY = 1.0  # seconds between wait_for_ssh's questions whether the VM still runs

# While a guest boots, every failed try makes paramiko log a traceback at ERROR level;
# those failures are expected and reported by us. `--debug` (a root handler) still shows them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def read_pubkey(path: Path) -> tuple[str, str]:
    """(key type, base64 blob) of an OpenSSH public key file."""
    try:
        parts = path.read_text().split()
    except OSError as exc:
        raise SSHError(f"cannot read the pinned host key {path}: {exc.strerror}") from None
    if len(parts) < 2:
        raise SSHError(f"{path} is not an OpenSSH public key")
    return parts[0], parts[1]


def fingerprint(key_type: str, blob_b64: str) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(base64.b64decode(blob_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Accept the one host key we pinned; refuse (HostKeyMismatch) anything else.

    The client is given no known_hosts at all, so paramiko asks this policy about every
    key it sees: the comparison here is the whole of host verification.
    """

    def __init__(self, pinned: Path) -> None:
        self.key_type, self.blob = read_pubkey(pinned)

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if key.get_name() == self.key_type and key.get_base64() == self.blob:
            return
        raise HostKeyMismatch(
            hostname, fingerprint(self.key_type, self.blob), fingerprint(key.get_name(), key.get_base64())
        )


def connect(
    host: str, port: int, key_path: Path, host_pubkey: Path, timeout: float = 10.0, user: str = USER,
    sock: socket.socket | None = None,
) -> paramiko.SSHClient:
    """An authenticated client; SSHError (or HostKeyMismatch) when that fails.

    `sock`: a TCP connection to (host, port) already made (wait_for_ssh's probe that saw
    the banner), used instead of a new one."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(PinnedHostKey(host_pubkey))
    try:
        pkey = paramiko.Ed25519Key.from_private_key_file(str(key_path))
        client.connect(
            host, port=port, username=user, pkey=pkey, timeout=timeout, banner_timeout=timeout,
            auth_timeout=timeout, allow_agent=False, look_for_keys=False, sock=sock,
        )
    except HostKeyMismatch:
        client.close()
        raise
    except paramiko.AuthenticationException as exc:
        client.close()
        raise SSHError(f"the guest at {host}:{port} refused the instance key ({exc})") from None
    except (OSError, EOFError, paramiko.SSHException) as exc:
        client.close()
        raise SSHError(f"cannot reach SSH at {host}:{port}: {exc or type(exc).__name__}") from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)  # notice a dead VM instead of hanging
    return client


def banner_seen(host: str, port: int, timeout: float) -> bool:
    """Whether an SSH server sends its "SSH-" banner on (host, port) within `timeout`."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


class _Probes:
    """Banner probes that overlap a little: a probe that ended (the guest refused it: its
    sshd is not there yet) is followed by the next after PROBE_EVERY; one that still waits
    gets a companion after PROBE_STAGGER, so a probe stalled in QEMU's retransmits (made
    before the guest's NIC was up) no longer hides for PROBE_TIMEOUT the banner a later
    one sees at once. Never more than MAX_PROBES: sshd forks and execs a child for each
    connection it accepts, slow under TCG, and a crowd of them delays its banner further.
    The banner is peeked (MSG_PEEK), not read: the winning connection is handed to
    paramiko as it is, sparing the guest's sshd a second connection (a fork and an exec,
    slow under TCG)."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.selector = selectors.DefaultSelector()
        self.opened: dict[socket.socket, float] = {}
        self.last_open = 0.0

    def poll(self, wait: float) -> socket.socket | None:
        """A connection whose peer sent "SSH-" within `wait` seconds, or None."""
        now = time.monotonic()
        since = now - self.last_open
        if (not self.opened and since >= PROBE_EVERY) or (len(self.opened) < MAX_PROBES and since >= PROBE_STAGGER):
            self._open(now)
        for key, _ in self.selector.select(timeout=min(wait, PROBE_EVERY)):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                head = sock.recv(4, socket.MSG_PEEK)
            except BlockingIOError:
                continue  # still connecting: writable, nothing to read yet
            except OSError:
                head = b""
            if head.startswith(b"SSH-"):
                self._drop(sock, close=False)
                sock.setblocking(True)
                return sock
            if len(head) < 4 and head and b"SSH-".startswith(head):
                continue  # a partial banner: the rest follows
            self._drop(sock)  # refused, reset or EOF: the guest's sshd is not there yet
        for sock, since in list(self.opened.items()):
            if time.monotonic() - since > PROBE_TIMEOUT:
                self._drop(sock)
        return None

    def _open(self, now: float) -> None:
        self.last_open = now
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
            sock.close()
            return
        self.opened[sock] = now
        self.selector.register(sock, selectors.EVENT_READ)

    def _drop(self, sock: socket.socket, close: bool = True) -> None:
        self.opened.pop(sock, None)
        self.selector.unregister(sock)
        if close:
            sock.close()

    def close(self) -> None:
        for sock in list(self.opened):
            self._drop(sock)
        self.selector.close()


def wait_for_ssh(
    host: str, port: int, key_path: Path, host_pubkey: Path, timeout: float,
    alive: Any = None, user: str = USER,
) -> paramiko.SSHClient:
    """Wait until `connect` works, or GuestTimeout after `timeout` seconds.

    While the guest boots, QEMU's user network accepts the TCP connection at once and
    then stalls or drops it, so a full paramiko connect could sit in its banner timeout
    long after sshd came up. Instead cheap raw probes (_Probes) wait for the banner, and
    only then does the real login, on the probe's connection, with generous time limits
    (key exchange is slow under TCG). A host key mismatch ends the wait at once.
    `alive()` (optional) is asked between tries, so a VM that died is reported now.
    """
    deadline = time.monotonic() + timeout
    last = "no SSH banner yet"
    probes = _Probes(host, port)
    asked = 0.0
    try:
        while time.monotonic() < deadline:
            sock = probes.poll(deadline - time.monotonic())
            if sock is not None:
                try:
                    left = max(1.0, deadline - time.monotonic())
                    return connect(host, port, key_path, host_pubkey, timeout=min(30.0, left), user=user, sock=sock)
                except HostKeyMismatch:
                    raise
                except SSHError as exc:
                    last = exc.message
            if alive is not None and time.monotonic() - asked >= ALIVE_EVERY:
                asked = time.monotonic()
                alive()
    finally:
        probes.close()
    raise GuestTimeout(f"SSH did not answer within {timeout:g} s ({last})", hint="see the console with: toolbox logs")


def run(client: paramiko.SSHClient, command: str, timeout: float | None = 60.0) -> tuple[int, str, str]:
    """Run `command` in the guest; (exit status, stdout, stderr)."""
    try:
        _, out, err = client.exec_command(command, timeout=timeout)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        return out.channel.recv_exit_status(), stdout, stderr
    except (socket.timeout, paramiko.SSHException, OSError) as exc:
        raise SSHError(f"running {command!r} in the guest failed: {exc or type(exc).__name__}") from None


def _pump_stdin(chan: paramiko.Channel) -> None:
    """Copy our stdin to the remote command until EOF, then send EOF."""
    try:
        fd = sys.stdin.fileno()
        while data := os.read(fd, 32768):
            chan.sendall(data)
    except (OSError, ValueError, paramiko.SSHException):
        pass
    finally:
        try:
            chan.shutdown_write()
        except (OSError, paramiko.SSHException):
            pass


def exec_command(client: paramiko.SSHClient, command: str) -> int:
    """Run `command` with our stdout/stderr (and stdin when piped); its exit status."""
    transport = client.get_transport()
    if transport is None:
        raise SSHError("the SSH connection is closed")
    chan = transport.open_session()
    chan.exec_command(command)
    if not _stdin_is_tty():
        threading.Thread(target=_pump_stdin, args=(chan,), daemon=True).start()
    out, err = sys.stdout.buffer, sys.stderr.buffer
    while not (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()):
        select.select([chan], [], [], 0.5)
        while chan.recv_ready():
            out.write(chan.recv(32768))
        while chan.recv_stderr_ready():
            err.write(chan.recv_stderr(32768))
        out.flush()
        err.flush()
    return chan.recv_exit_status()


def _stdin_is_tty() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (ValueError, OSError):
        return False


def _term_size() -> tuple[int, int]:
    size = os.get_terminal_size(sys.stdout.fileno()) if os.isatty(sys.stdout.fileno()) else os.terminal_size((80, 24))
    return size.columns, size.lines


def interactive_shell(client: paramiko.SSHClient) -> int:
    """A login shell with a PTY; raw terminal mode; follows window resizes (SIGWINCH)."""
    import termios
    import tty

    transport = client.get_transport()
    if transport is None:
        raise SSHError("the SSH connection is closed")
    cols, rows = _term_size()
    chan = transport.open_session()
    chan.get_pty(term=os.environ.get("TERM", "xterm-256color"), width=cols, height=rows)
    chan.invoke_shell()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None

    def on_resize(_sig: int, _frame: Any) -> None:
        chan.resize_pty(*_term_size())

    old_handler = signal.signal(signal.SIGWINCH, on_resize)
    try:
        if saved is not None:
            tty.setraw(fd)
        _shuttle(chan, fd)
    finally:
        signal.signal(signal.SIGWINCH, old_handler)
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return chan.recv_exit_status()


def _shuttle(chan: paramiko.Channel, fd: int) -> None:
    """Copy between the terminal and the channel until the remote shell ends."""
    stdin_open = True
    while True:
        try:
            ready, _, _ = select.select([chan, fd] if stdin_open else [chan], [], [])
        except InterruptedError:  # SIGWINCH arrived; select again
            continue
        if chan in ready:
            data = chan.recv(32768)
            if not data:
                return
            os.write(sys.stdout.fileno(), data)
        if fd in ready:
            data = os.read(fd, 4096)
            if data:
                chan.sendall(data)
            else:
                stdin_open = False
                chan.shutdown_write()


def open_unix_socket(transport: paramiko.Transport, path: str, timeout: float = 10.0) -> paramiko.Channel:
    """A channel to the unix socket `path` in the guest (OpenSSH's streamlocal forwarding).

    paramiko's open_channel only packs the extra fields of the tcpip channel types, so this
    builds the CHANNEL_OPEN itself: string socket path, string reserved, uint32 reserved
    (OpenSSH PROTOCOL, 2.4). The bookkeeping mirrors Transport.open_channel, under its
    lock, so paramiko's reader thread completes the open as for any other channel.
    """
    if not transport.is_active():
        raise SSHError("the SSH connection is closed")
    kind = "direct-streamlocal@openssh.com"
    t: Any = transport  # private members below; kept to this one function
    with t.lock:
        window = t._sanitize_window_size(None)
        max_packet = t._sanitize_packet_size(None)
        chanid = t._next_channel()
        msg = Message()
        msg.add_byte(cMSG_CHANNEL_OPEN)
        msg.add_string(kind)
        msg.add_int(chanid)
        msg.add_int(window)
        msg.add_int(max_packet)
        msg.add_string(path)
        msg.add_string("")
        msg.add_int(0)
        chan = paramiko.Channel(chanid)
        t._channels.put(chanid, chan)
        t.channel_events[chanid] = event = threading.Event()
        t.channels_seen[chanid] = True
        chan._set_transport(t)
        chan._set_window(window, max_packet)
    t._send_user_message(msg)
    if not event.wait(timeout) or not transport.is_active():
        raise SSHError(f"opening the guest socket {path} timed out")
    opened = t._channels.get(chanid)
    if opened is None:
        t.get_exception()  # clear the ChannelException paramiko saved for this refusal
        raise GuestSocketRefused(f"the guest refused a connection to {path} (is the agent running?)")
    return opened


def http_get_unix(transport: paramiko.Transport, path: str, url_path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """A minimal HTTP/1.0 GET over `open_unix_socket`: (status code, body)."""
    chan = open_unix_socket(transport, path, timeout)
    try:
        chan.settimeout(timeout)
        chan.sendall(f"GET {url_path} HTTP/1.0\r\nHost: toolbox\r\n\r\n".encode())
        data = b""
        while chunk := chan.recv(65536):
            data += chunk
    except (socket.timeout, OSError, paramiko.SSHException) as exc:
        raise SSHError(f"GET {url_path} on {path} failed: {exc or type(exc).__name__}") from None
    finally:
        chan.close()
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise SSHError(f"GET {url_path} on {path}: not an HTTP answer") from None
    return status, body


def ssh_config_block(host_alias: str, port: int, key_path: Path, known_hosts: Path) -> str:
    """A Host block for ~/.ssh/config, so plain `ssh`, scp and rsync reach the guest."""
    return (
        f"Host {host_alias}\n"
        f"  HostName 127.0.0.1\n"
        f"  Port {port}\n"
        f"  User {USER}\n"
        f"  IdentityFile {key_path}\n"
        f"  IdentitiesOnly yes\n"
        f"  PasswordAuthentication no\n"
        f"  UserKnownHostsFile {known_hosts}\n"
        f"  StrictHostKeyChecking yes\n"
        f"  HostKeyAlias {host_alias}\n"
    )


def known_hosts_line(host_alias: str, host_pubkey: Path) -> str:
    key_type, blob = read_pubkey(host_pubkey)
    return f"{host_alias} {key_type} {blob}\n"
