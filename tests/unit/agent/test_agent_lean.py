"""The agent starts without ssl and libcrypto (lean.py) and still pulls over HTTPS.

Each check runs the agent's imports in a fresh interpreter, as `python3 -m toolbox_agent`
does in the VM, since this test process has ssl loaded long ago.
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

AGENT_SRC = Path(__file__).resolve().parents[3] / "guest-agent"

# The agent's start-up (its modules imported and every part built, as app.serve does),
# then which of ssl/libcrypto's modules are loaded (and whether the pull and search
# modules bring ssl), then one HTTPS round trip to the registry in argv[1] through the
# image store's registry client.
CHILD = """
import json, sys
from toolbox_agent.lean import ssl_hidden, trim_heap
with ssl_hidden():
    from toolbox_agent import app
    from toolbox_agent.settings import load_settings
    app.build_agent(load_settings())
idle = sorted(m for m in ("ssl", "_ssl", "_hashlib", "hashlib") if sys.modules.get(m) is not None)
trim_heap()
from toolbox_agent.images import pull, search  # what a pull and a search import
from toolbox_agent.images.registry import RegistryClient
idle += sorted(m for m in ("ssl", "_ssl") if sys.modules.get(m) is not None)
ep = RegistryClient([sys.argv[1]]).endpoint(sys.argv[1])
print(json.dumps({"idle": idle, "scheme": ep.scheme, "verify": ep.verify, "ssl_after": "ssl" in sys.modules}))
"""


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _V2(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.paths.append(self.path)
        body = b"{}" if self.path == "/v2/" else b'{"errors": []}'
        self.send_response(200 if self.path == "/v2/" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def _serve(server: http.server.ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _V2.paths = []
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[str]:
    """A registry's /v2/ over HTTPS (self-signed) on 127.0.0.1; yields host:port."""
    cert, key = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _V2)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    yield from _serve(server)


@pytest.fixture
def http_registry() -> Iterator[str]:
    """A registry's /v2/ over plain HTTP on 127.0.0.1; yields host:port."""
    yield from _serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _V2))


def _child(tmp_path: Path, registry: str) -> dict[str, object]:
    """CHILD's answer, and which of OpenSSL's modules it had loaded at the end."""
    env = {**os.environ, "PYTHONPATH": str(AGENT_SRC), "TOOLBOX_AGENT_ROOT": str(tmp_path / "root"),
           "TOOLBOX_AGENT_SOCKET": str(tmp_path / "docker.sock"), "TOOLBOX_AGENT_SETTINGS": str(tmp_path / "none.json")}
    child = CHILD + "print(json.dumps(sorted(m for m in ('_hashlib', '_ssl') if m in sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", child, registry], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    return {**json.loads(lines[-2]), "openssl": json.loads(lines[-1])}


def test_idle_agent_has_no_ssl_or_libcrypto_yet_reaches_an_https_registry(tmp_path: Path, tls_registry: str) -> None:
    got = _child(tmp_path, tls_registry)
    assert got["idle"] == [], f"loaded at start: {got['idle']}"
    # an insecure registry is tried over HTTPS first (unverified): it answered there
    assert (got["scheme"], got["verify"], got["ssl_after"]) == ("https", False, True)
    assert _V2.paths == ["/v2/"]


def test_insecure_http_registry_is_reached_without_ssl(tmp_path: Path, http_registry: str) -> None:
    """The HTTPS try comes first (a ClientHello, which http.server refuses with an error page),
    then HTTP; the try is made by hand (tlsprobe.py), so no OpenSSL is loaded for it."""
    got = _child(tmp_path, http_registry)
    assert (got["scheme"], got["verify"], got["ssl_after"], got["openssl"]) == ("http", True, False, [])
    assert _V2.paths == ["/v2/"]  # the ClientHello reached the server, no handler


def test_client_hello_is_a_tls_record_an_http_server_answers() -> None:
    import agent_harness  # noqa: F401  (puts guest-agent on sys.path)
    from toolbox_agent.images import tlsprobe

    hello = tlsprobe.client_hello("registry.test")
    assert hello[:3] == b"\x16\x03\x01" and int.from_bytes(hello[3:5], "big") == len(hello) - 5
    assert hello[5] == 1 and b"registry.test" in hello  # a ClientHello, with SNI for a name
    assert b"\n" in hello  # an HTTP server's request line ends: it answers at once
    assert b"127.0.0.1" not in tlsprobe.client_hello("127.0.0.1")  # no SNI for an address


@pytest.mark.parametrize(("answer", "refusal"), [
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "http: server gave HTTP response to HTTPS client"),
    (b"<!DOCTYPE HTML>", "tls: first record does not look like a TLS handshake"),
    (b"\x15\x03\x03\x00\x02\x02\x28", ""),  # a TLS alert: the real handshake decides
    (b"\x16\x03\x03\x00\x7a\x02", ""),  # a ServerHello
    (b"", ""),  # closed without a word
])
def test_refusal_reads_the_servers_first_bytes(answer: bytes, refusal: str) -> None:
    import socket

    import agent_harness  # noqa: F401  (puts guest-agent on sys.path)
    from toolbox_agent.images import tlsprobe

    ours, server = socket.socketpair()
    with ours, server:
        server.sendall(answer)
        server.shutdown(socket.SHUT_WR)
        assert tlsprobe.refusal(ours, "registry.test") == refusal
        assert server.recv(1) == b"\x16"  # it sent its ClientHello first


def test_sha256_is_hashlibs_without_hashlib() -> None:
    """lean.sha256 gives hashlib's digests, from bytes and from views of a reused buffer,
    and a fresh interpreter hashing with it never loads _hashlib (~1.8 MB more libcrypto)."""
    import hashlib

    import agent_harness  # noqa: F401  (puts guest-agent on sys.path)
    from toolbox_agent.lean import sha256

    data = os.urandom(300_000)
    buf = memoryview(bytearray(data))
    h = sha256(b"abc")
    h.update(memoryview(b"def" * 1000)[:30])
    h.update(buf[:100_000])
    h.update(buf[100_000:])
    h.update(bytearray(b"xyz"))
    assert h.hexdigest() == h.hexdigest() == hashlib.sha256(b"abc" + b"def" * 10 + data + b"xyz").hexdigest()
    assert sha256().hexdigest() == hashlib.sha256().hexdigest()
    child = ("import sys; from toolbox_agent.lean import sha256; d = sha256(b'x').hexdigest(); "
             "print(d, sorted(m for m in ('_hashlib', 'hashlib', '_ssl') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", child], env={**os.environ, "PYTHONPATH": str(AGENT_SRC)},
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split(" ", 1) == [hashlib.sha256(b"x").hexdigest(), "[]\n"], proc.stderr


def test_unverified_tls_context_loads_no_ca_store() -> None:
    """An insecure registry's HTTPS try checks no certificate: its context must not load the
    system's CA store (~2 MB the agent kept after every pull from such a registry)."""
    import agent_harness  # noqa: F401  (puts guest-agent on sys.path)
    from toolbox_agent.images.registry import RegistryClient

    client = RegistryClient()
    assert client._tls(False).cert_store_stats()["x509_ca"] == 0
    assert client._tls(True).cert_store_stats()["x509_ca"] > 0  # a verified one still has them
