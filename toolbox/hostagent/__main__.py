"""`python -m toolbox.hostagent`: the host agent process of one running instance."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.hostagent.clock import ClockKeeper, interval_from_env
from toolbox.hostagent.forward import Forwarder, SSHLink
from toolbox.hostagent.guest_http import GuestHTTP
from toolbox.hostagent.portwatch import PortTable, PortWatcher
from toolbox.hostagent.report import Report
from toolbox.errors import GuestTimeout, SSHError
from toolbox.ssh import connect, wait_for_ssh

if TYPE_CHECKING:
    import paramiko

GUEST_SOCKET = "/run/toolbox/docker.sock"
WATCH_EVERY = 5.0  # seconds between the watchdog's checks
VM_GONE = 30.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolbox-hostagent")
    p.add_argument("--socket", required=True, type=Path, help="the host socket to serve (DOCKER_HOST)")
    p.add_argument("--ssh-port", required=True, type=int)
    p.add_argument("--key", required=True, type=Path, help="the instance's private key")
    p.add_argument("--host-key", required=True, type=Path, help="the guest's pinned host public key")
    p.add_argument("--guest-socket", default=GUEST_SOCKET)
    p.add_argument("--pid-file", type=Path, help="ours; when it names another process (or none), we exit")
    p.add_argument("--state-file", type=Path, help="where to report the link, the ports and the clock")
    p.add_argument("--clock-interval", type=float, default=interval_from_env(),
                   help="seconds between periodic clock syncs (default: $TOOLBOX_CLOCK_INTERVAL or 60)")
    p.add_argument("--boot-timeout", type=float, default=0.0,
                   help="the VM is booting: the first login waits up to this long for its sshd")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("toolbox.hostagent")

    link = SSHLink(_connector(args))
    forwarder = Forwarder(args.socket, args.guest_socket, link)
    forwarder.listen()
    stopping = threading.Event()
    report = Report(args.state_file)
    http = GuestHTTP(link, args.guest_socket)
    table = PortTable(link, http, report)
    clock = ClockKeeper(http, report, stopping, args.clock_interval)
    watcher = PortWatcher(link, http, table, report, stopping, on_connect=lambda: clock.request("connected"))

    def on_signal(_sig: int, _frame: object) -> None:
        stopping.set()
        forwarder.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("serving %s -> guest %s over SSH port %d", args.socket, args.guest_socket, args.ssh_port)
    for target in (watcher.run, clock.run):
        threading.Thread(target=target, daemon=True).start()
    threading.Thread(target=_watchdog, args=(args, forwarder, stopping, report), daemon=True).start()
    forwarder.serve_forever()
    table.close()
    report.remove()
    log.info("stopped")
    return 0


def _connector(args: argparse.Namespace) -> Callable[[], paramiko.SSHClient]:
    """How the link logs in. Started with the VM (`toolbox up` starts us while the guest
    boots, so our start-up and login overlap the boot), the first login waits for sshd
    the way `toolbox up` does (banner probes; a plain connect would stall in QEMU's user
    network); every later one is a plain connect."""
    booting = [args.boot_timeout]

    def login() -> paramiko.SSHClient:
        wait, booting[0] = booting[0], 0.0
        if wait <= 0:
            return connect("127.0.0.1", args.ssh_port, args.key, args.host_key, timeout=10.0)
        try:
            return wait_for_ssh("127.0.0.1", args.ssh_port, args.key, args.host_key, wait)
        except GuestTimeout as exc:
            raise SSHError(exc.message) from None
    return login


def _watchdog(args: argparse.Namespace, forwarder: Forwarder, stopping: threading.Event, report: Report) -> None:
    """Exit when we are no longer wanted: the pid file names another process, the socket
    was removed, or the VM is gone (its SSH port refuses connections for VM_GONE seconds)."""
    log = logging.getLogger("toolbox.hostagent")
    refused_since: float | None = None
    while not stopping.wait(WATCH_EVERY):
        reason = ""
        replaced = args.pid_file is not None and _pid_in(args.pid_file) != os.getpid()
        if replaced:
            reason = f"{args.pid_file} no longer names this process"
        elif not args.socket.exists():
            reason = f"{args.socket} was removed"
        elif _port_refuses(args.ssh_port):
            refused_since = refused_since or time.monotonic()
            if time.monotonic() - refused_since > VM_GONE:
                reason = f"nothing listens on SSH port {args.ssh_port} (the VM is gone)"
        else:
            refused_since = None
        if reason:
            log.info("exiting: %s", reason)
            stopping.set()
            if replaced:
                forwarder.link.close()  # the socket may be a newer host agent's now: leave it
            else:
                forwarder.stop()
                report.remove()
            os._exit(0)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _port_refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
