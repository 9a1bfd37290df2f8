"""A loopback HTTP file server with HTTP Range and fault injection, for download tests."""

from __future__ import annotations

import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Faults:
    truncate_next: int = 0  # this many GETs of an .iso send half the body, then drop the connection
    corrupt: bool = False  # flip the last byte of every .iso served
    status: int | None = None  # answer every GET with this status (404, 500 ...)
    ignore_range: bool = False  # answer 200 with the whole file even when asked for a range
    ranges: list[str] = field(default_factory=list)  # the Range headers seen


class FileServer:
    """Serves files of `root` on 127.0.0.1 (never another address)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.faults = Faults()
        self.served: list[str] = []  # the paths answered with content, in order
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        f = self.faults
        rel = urllib.parse.unquote(req.path.split("?")[0]).lstrip("/")  # apt asks for %3a as %253a
        path = self.root / rel
        if f.status is not None or not path.is_file():
            req.send_error(f.status or 404)
            return
        data = path.read_bytes()
        if f.corrupt and path.suffix == ".iso":
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        rng = req.headers.get("Range")
        start = 0
        if rng:
            f.ranges.append(rng)
        if rng and not f.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                req.send_response(416)
                req.send_header("Content-Range", f"bytes */{len(data)}")
                req.send_header("Content-Length", "0")
                req.end_headers()
                return
            req.send_response(206)
            req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            req.send_response(200)
        body = data[start:]
        self.served.append(rel)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if f.truncate_next > 0 and path.suffix == ".iso":
            f.truncate_next -= 1
            req.wfile.write(body[: len(body) // 2])
            req.wfile.flush()
            req.close_connection = True
            return
        req.wfile.write(body)
