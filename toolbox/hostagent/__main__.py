"""`python -m toolbox.hostagent`: the host agent process of one running instance."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from toolbox.hostagent.forward import Forwarder, SSHLink
from toolbox.ssh import connect

GUEST_SOCKET = "/run/toolbox/docker.sock"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolbox-hostagent")
    p.add_argument("--socket", required=True, type=Path, help="the host socket to serve (DOCKER_HOST)")
    p.add_argument("--ssh-port", required=True, type=int)
    p.add_argument("--key", required=True, type=Path, help="the instance's private key")
    p.add_argument("--host-key", required=True, type=Path, help="the guest's pinned host public key")
    p.add_argument("--guest-socket", default=GUEST_SOCKET)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("toolbox.hostagent")

    link = SSHLink(lambda: connect("127.0.0.1", args.ssh_port, args.key, args.host_key, timeout=10.0))
    forwarder = Forwarder(args.socket, args.guest_socket, link)
    forwarder.listen()
    stopping = threading.Event()

    def on_signal(_sig: int, _frame: object) -> None:
        stopping.set()
        forwarder.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        link.transport()  # connect now, so the first docker command is fast
    except Exception as exc:  # noqa: BLE001 - it connects again on demand
        log.warning("first SSH connection failed (will retry per connection): %s", exc)
    log.info("serving %s -> guest %s over SSH port %d", args.socket, args.guest_socket, args.ssh_port)
    forwarder.serve_forever()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
