"""Test registry fixture: Debian's docker-registry on loopback, and images built in Python.

    with RegistryServer() as reg:                # 127.0.0.1:<free port>, temp storage
        publish_defaults(reg)                    # learn/tutorial:latest, busybox:latest
        img = make_image([busybox_layer(), files_layer({"etc/motd": b"hi\n"})])
        push(reg, "demo/app:1", img)             # or push_index(reg, "x:y", img) for an OCI index
        reg.host                                 # "127.0.0.1:PORT" (from a VM guest: 10.0.2.2:PORT)

The registry process is started by the fixture and stopped by its pid only. Pushes go
through the registry's HTTP API (monolithic blob uploads, then the manifest).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from toolbox.instance import free_port  # noqa: F401  (tests import it from here)

REGISTRY_BIN = "/usr/bin/docker-registry"
BUSYBOX = "/bin/busybox"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER_TYPES = {
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("docker", "none"): "application/vnd.docker.image.rootfs.diff.tar",
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", "none"): "application/vnd.oci.image.layer.v1.tar",
}
APPLETS = ["sh", "ash", "echo", "ls", "cat", "sleep", "true", "false", "env", "id", "hostname", "wget", "httpd",
           "nc", "ps", "top", "mkdir", "rm", "cp", "mv", "touch", "printf", "test", "[", "uname", "date", "head",
           "tail", "grep", "sed", "awk", "vi", "kill", "pwd", "whoami", "wc", "chmod", "ln", "sort", "tee", "yes"]
CREATED = "2026-01-01T00:00:00Z"



class RegistryServer:
    """docker-registry serving a temp directory on 127.0.0.1:<port>; a context manager."""

    def __init__(self, root: Path | None = None, port: int | None = None, htpasswd: tuple[str, str] | None = None) -> None:
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="registry-")
        self.root = Path(root or self._tmp.name)  # type: ignore[union-attr]
        self.port = port or free_port()
        self.htpasswd = htpasswd  # (user, password): the registry then asks for Basic auth
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (to tamper with it in tests)."""
        hexd = digest.removeprefix("sha256:")
        return self.root / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def start(self) -> RegistryServer:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
            + (f"auth:\n  htpasswd:\n    realm: toolbox-test\n    path: {self._write_htpasswd()}\n" if self.htpasswd else "")
        )
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/v2/", timeout=1, auth=self.htpasswd).status_code == 200:
                    (self.root / "registry.pid").write_text(str(self.proc.pid))
                    return self
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not answer within 15 s")

    def _write_htpasswd(self) -> Path:
        import bcrypt

        assert self.htpasswd is not None
        user, password = self.htpasswd
        path = self.root / "htpasswd"
        path.write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()}\n")
        return path

    def stop(self) -> None:
        """Stop the process this fixture started (by its pid) and wait for it."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Kill it at once (a registry going down mid-pull)."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def blob_requests(self) -> list[str]:
        """Paths of the blob GETs the registry served (from its access log)."""
        text = self.log_path.read_text(errors="replace")
        return [line.split('"GET ', 1)[1].split(" ", 1)[0] for line in text.splitlines()
                if '"GET /v2/' in line and "/blobs/" in line]

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp:
            self._tmp.cleanup()


class TokenAuthProxy:
    """Bearer-token auth in front of a RegistryServer, like Docker Hub's (for client tests).

    /v2/... answers 401 with `WWW-Authenticate: Bearer realm=".../token",service=...,scope=...`
    until the request carries the token for that scope; /token hands tokens out (checking
    Basic credentials when `basic` is set); blob GETs are redirected to another host name
    (localhost instead of 127.0.0.1), where any Authorization header counts as a leak.
    """

    SERVICE = "toolbox-test-registry"

    def __init__(self, upstream: RegistryServer, basic: tuple[str, str] | None = None) -> None:
        self.upstream = upstream
        self.basic = basic
        self.token_requests: list[dict[str, str]] = []
        self.leaked_auth: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                proxy._handle(self)

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(h.path)
        if url.path == "/token":
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            self.token_requests.append(query)
            if self.basic:
                import base64

                want = "Basic " + base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
                if h.headers.get("Authorization") != want:
                    return self._send(h, 401, b'{"details":"incorrect username or password"}')
            return self._send(h, 200, json.dumps({"token": "tok " + query.get("scope", ""), "expires_in": 300}).encode())
        if url.path.startswith("/storage/"):
            if h.headers.get("Authorization"):
                self.leaked_auth.append(h.path)
            return self._forward(h, url.path.removeprefix("/storage"))
        parts = url.path.split("/")
        repo = "/".join(parts[2:-2]) if len(parts) > 4 else ""
        scope = f"repository:{repo}:pull" if repo else ""
        auth = h.headers.get("Authorization", "")
        if url.path != "/v2/" and auth != f"Bearer tok {scope}" or (url.path == "/v2/" and not auth.startswith("Bearer tok")):
            challenge = f'Bearer realm="http://{self.host}/token",service="{self.SERVICE}"'
            if scope:
                challenge += f',scope="{scope}"'
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
            return self._send(h, 401, body, {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
        if "/blobs/" in url.path:
            return self._send(h, 307, b"", {"Location": f"http://localhost:{self.port}/storage{url.path}"})
        self._forward(h, url.path)

    def _forward(self, h: BaseHTTPRequestHandler, path: str) -> None:
        resp = requests.get(self.upstream.url + path, headers={"Accept": h.headers.get("Accept", "*/*")}, timeout=30)
        keep = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "docker-content-digest")}
        self._send(h, resp.status_code, resp.content, keep)

    def __enter__(self) -> TokenAuthProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class ThrottleProxy:
    """Forwards GETs to a RegistryServer at `rate` bytes/s, so a test can kill it mid-blob."""

    def __init__(self, upstream: RegistryServer, rate: int = 4 * 1024 * 1024) -> None:
        self.upstream = upstream
        self.rate = rate
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                proxy._forward(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        try:
            resp = requests.get(self.upstream.url + h.path, headers={"Accept": h.headers.get("Accept", "*/*")},
                                stream=True, timeout=30)
        except requests.RequestException:
            h.send_error(502)
            return
        h.send_response(resp.status_code)
        for k, v in resp.headers.items():
            if k.lower() in ("content-type", "docker-content-digest", "content-length", "www-authenticate"):
                h.send_header(k, v)
        h.end_headers()
        chunk = max(self.rate // 20, 1024)
        try:
            for data in resp.raw.stream(chunk, decode_content=False):
                h.wfile.write(data)
                time.sleep(len(data) / self.rate)
        except Exception:  # noqa: BLE001 - upstream died: cut the client off mid-body
            h.close_connection = True
            h.connection.close()

    def __enter__(self) -> ThrottleProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- building images ---------------------------------------------------------------------


@dataclass
class Entry:
    """One tar member. kind: file, dir, symlink, hardlink, whiteout (.wh.<name>), opaque."""

    name: str
    data: bytes = b""
    kind: str = "file"
    mode: int = 0o644
    target: str = ""
    uid: int = 0
    gid: int = 0


def tar_layer(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            name = e.name.strip("/")
            if e.kind == "whiteout":
                head, _, base = name.rpartition("/")
                name = (head + "/" if head else "") + ".wh." + base
            elif e.kind == "opaque":
                name = name + "/.wh..wh..opq"
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.mode = 1767225600, e.uid, e.gid, e.mode
            if e.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, e.mode if e.mode != 0o644 else 0o755
            elif e.kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, e.target, 0o777
            elif e.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e.target
            else:
                info.size = len(e.data)
            tf.addfile(info, io.BytesIO(e.data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def busybox_layer() -> bytes:
    """/bin/busybox (Debian's busybox-static) with applet links, /etc/passwd and /etc/group."""
    entries = [Entry("bin", kind="dir"), Entry("etc", kind="dir"), Entry("tmp", kind="dir", mode=0o1777),
               Entry("root", kind="dir", mode=0o700), Entry("bin/busybox", Path(BUSYBOX).read_bytes(), mode=0o755)]
    entries += [Entry(f"bin/{a}", kind="symlink", target="busybox") for a in APPLETS]
    entries += [Entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
                Entry("etc/group", b"root:x:0:\nnogroup:x:65534:\n")]
    return tar_layer(entries)


def files_layer(files: dict[str, bytes]) -> bytes:
    return tar_layer([Entry(name, data) for name, data in files.items()])


def whiteout_layers() -> list[bytes]:
    """Two layers over busybox: the second deletes /data/gone (whiteout) and makes /data/opaque
    opaque, so a container must see only /data/kept and /data/opaque/new."""
    base = tar_layer([Entry("data", kind="dir"), Entry("data/gone", b"gone\n"), Entry("data/kept", b"kept\n"),
                      Entry("data/opaque", kind="dir"), Entry("data/opaque/old", b"old\n")])
    top = tar_layer([Entry("data/gone", kind="whiteout"), Entry("data/opaque", kind="opaque"),
                     Entry("data/opaque/new", b"new\n")])
    return [base, top]


def bench_layers(count: int = 5, size: int = 8 * 1024 * 1024, seed: int = 1) -> list[bytes]:
    """`count` layers of about `size` bytes each, half random, half text (compresses ~2:1)."""
    import random

    rng = random.Random(seed)
    layers = []
    for i in range(count):
        noise = rng.randbytes(size // 2)
        text = b"".join(b"line %d of layer %d: the quick brown fox\n" % (n, i) for n in range(size // 2 // 40))
        files = {f"layer{i}/noise.bin": noise, f"layer{i}/text.txt": text[: size // 2]}
        files.update({f"layer{i}/small/{n}.txt": b"x" * n for n in range(200)})
        layers.append(files_layer(files))
    return layers


@dataclass
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclass
class BuiltImage:
    config: Blob
    layers: list[Blob]
    manifest: Blob
    diff_ids: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.config.digest

    @property
    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers]


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, stdout=subprocess.PIPE, check=True).stdout
    return data


def make_image(layers: list[bytes], *, compression: str = "gzip", oci: bool | None = None,
               cmd: list[str] | None = None, arch: str = "amd64", labels: dict[str, str] | None = None) -> BuiltImage:
    """An image from uncompressed layer tars: config (Cmd ["sh"], PATH) and a manifest."""
    oci = compression == "zstd" if oci is None else oci
    flavor = "oci" if oci else "docker"
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    blobs = [Blob(LAYER_TYPES[(flavor, compression)], compress(layer, compression)) for layer in layers]
    return assemble_image(blobs, diff_ids, oci=oci, cmd=cmd, arch=arch, labels=labels)


def assemble_image(blobs: list[Blob], diff_ids: list[str], *, oci: bool, cmd: list[str] | None = None,
                   arch: str = "amd64", labels: dict[str, str] | None = None) -> BuiltImage:
    """An image from layer blobs already compressed (with their diff_ids): config and manifest."""
    config = {
        "architecture": arch, "os": "linux", "created": CREATED,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": cmd or ["sh"], "Labels": labels or None},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": f"/bin/sh -c #(nop) ADD layer {i}"} for i in range(len(blobs))]
                   + [{"created": CREATED, "created_by": '/bin/sh -c #(nop)  CMD ["sh"]', "empty_layer": True}],
    }
    ctype = "application/vnd.oci.image.config.v1+json" if oci else "application/vnd.docker.container.image.v1+json"
    config_blob = Blob(ctype, json.dumps(config, sort_keys=True).encode())
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST if oci else MANIFEST_V2,
                "config": config_blob.descriptor(), "layers": [b.descriptor() for b in blobs]}
    mblob = Blob(OCI_MANIFEST if oci else MANIFEST_V2, json.dumps(manifest, indent=2).encode())
    return BuiltImage(config_blob, blobs, mblob, diff_ids)


def _put_blob(reg: RegistryServer, repo: str, blob: Blob) -> None:
    if requests.head(f"{reg.url}/v2/{repo}/blobs/{blob.digest}", timeout=10, auth=reg.htpasswd).status_code == 200:
        return
    start = requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=10, auth=reg.htpasswd)
    start.raise_for_status()
    location = start.headers["Location"]
    if location.startswith("/"):
        location = reg.url + location
    sep = "&" if "?" in location else "?"
    put = requests.put(f"{location}{sep}digest={blob.digest}", data=blob.data,
                       headers={"Content-Type": "application/octet-stream"}, timeout=60, auth=reg.htpasswd)
    put.raise_for_status()


def _put_manifest(reg: RegistryServer, repo: str, ref: str, blob: Blob) -> None:
    resp = requests.put(f"{reg.url}/v2/{repo}/manifests/{ref}", data=blob.data,
                        headers={"Content-Type": blob.media_type}, timeout=10, auth=reg.htpasswd)
    resp.raise_for_status()


def _split(name: str) -> tuple[str, str]:
    repo, _, tag = name.partition(":")
    if "/" not in repo:
        repo = "library/" + repo
    repo = repo.lstrip("/")  # a leading "/" means: the path exactly as given
    return repo, tag or "latest"


def push(reg: RegistryServer, name: str, image: BuiltImage) -> str:
    """Push blobs then the manifest as repo:tag; returns its digest.

    "busybox" means library/busybox (as Docker Hub names it); "/busybox" means busybox.
    """
    repo, tag = _split(name)
    for blob in image.blobs:
        _put_blob(reg, repo, blob)
    _put_manifest(reg, repo, tag, image.manifest)
    return image.manifest.digest


def push_index(reg: RegistryServer, name: str, *images: BuiltImage, docker_list: bool = False) -> str:
    """Push images as one manifest list / OCI index (platform from each config); returns its digest."""
    repo, tag = _split(name)
    entries = []
    for image in images:
        push(reg, f"/{repo}:{tag}", image)
        cfg = json.loads(image.config.data)
        entries.append(image.manifest.descriptor(platform={"architecture": cfg["architecture"], "os": cfg["os"]}))
    media = "application/vnd.docker.distribution.manifest.list.v2+json" if docker_list else OCI_INDEX
    index = Blob(media, json.dumps({"schemaVersion": 2, "mediaType": media, "manifests": entries}).encode())
    _put_manifest(reg, repo, tag, index)
    return index.digest


def publish_defaults(reg: RegistryServer) -> dict[str, BuiltImage]:
    """learn/tutorial:latest (busybox + /etc/motd, schema2, gzip), busybox:latest (an OCI index,
    amd64 + arm64; as library/busybox and busybox) and test/whiteouts:latest (OCI, zstd; see
    whiteout_layers)."""
    tutorial = make_image([busybox_layer(), files_layer({"etc/motd": b"Welcome to the tutorial\n"})],
                          labels={"org.opencontainers.image.description": "learn/tutorial"})
    push(reg, "learn/tutorial:latest", tutorial)
    busybox = make_image([busybox_layer()])
    other = make_image([files_layer({"not-this-arch": b"arm64\n"})], arch="arm64")
    push_index(reg, "busybox:latest", busybox, other)  # docker.io-style path, for a mirror
    push_index(reg, "/busybox:latest", busybox, other)  # 127.0.0.1:PORT/busybox
    whiteouts = make_image([busybox_layer(), *whiteout_layers()], compression="zstd")
    push(reg, "test/whiteouts:latest", whiteouts)
    return {"learn/tutorial:latest": tutorial, "busybox:latest": busybox, "test/whiteouts:latest": whiteouts}


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """A running registry with the default images published, shared by the session."""
    with RegistryServer() as reg:
        publish_defaults(reg)
        yield reg
