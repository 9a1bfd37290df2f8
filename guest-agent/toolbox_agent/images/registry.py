"""A small, blocking Registry v2 / OCI distribution client on http.client.

Blocking on purpose: the store runs each call in a worker thread (asyncio.to_thread), which
keeps this module plain and lets several layers download at once. Handles the ping, anonymous
and Bearer-token auth (WWW-Authenticate realm/service/scope, tokens cached per scope), Basic
auth when credentials are given, redirects to blob storage (credentials dropped on another
host), and insecure registries (HTTPS without verification, then plain HTTP, like Docker; the
HTTPS try is made without ssl when the server answers it with HTTP: tlsprobe.py).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from toolbox_agent.lean import sha256, ssl_hidden

from . import tlsprobe
from .errors import DigestMismatch, RegistryError

with ssl_hidden():  # no ssl until a registry speaks HTTPS (_HTTPSConnection, lean.py)
    import http.client

if TYPE_CHECKING:
    import ssl

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_ACCEPT = ", ".join([MANIFEST_V2, MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX])
INDEX_TYPES = (MANIFEST_LIST, OCI_INDEX)
IMAGE_MANIFEST_TYPES = (MANIFEST_V2, OCI_MANIFEST)
USER_AGENT = "toolbox-agent/0.1"
CHUNK = 256 * 1024
TIMEOUT = 60.0
MAX_MANIFEST = 4 * 1024 * 1024
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""


@dataclass(frozen=True)
class Endpoint:
    """Where a registry is reached: scheme, host[:port], and whether TLS is verified."""

    scheme: str
    netloc: str
    verify: bool = True


def is_loopback_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_insecure(host: str, insecure_registries: list[str]) -> bool:
    """Docker's rule: listed host[:port] or CIDR, and every loopback registry."""
    if is_loopback_host(host) or host in insecure_registries:
        return True
    name = host.rsplit(":", 1)[0].strip("[]")
    for entry in insecure_registries:
        if "/" in entry:
            try:
                if ipaddress.ip_address(name) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def sha256_digest(data: bytes) -> str:
    return "sha256:" + sha256(data).hexdigest()


def _error_text(status: int, body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code', '').lower().replace('_', ' ')}: {e.get('message', '')}" for e in errors)
    except (ValueError, AttributeError):
        return f"unexpected status {status}"


def _read(resp: http.client.HTTPResponse, digest: str, buf: memoryview) -> int:
    try:
        return resp.readinto(buf)
    except (OSError, http.client.HTTPException) as exc:
        raise RegistryError(f"error pulling blob {digest}: {exc or type(exc).__name__}") from exc


class _HTTPSConnection(http.client.HTTPConnection):
    """HTTPS by hand: the agent imports http.client without ssl (lean.py), so it has no
    HTTPSConnection; this one wraps the socket with the context on connect."""

    default_port = http.client.HTTPS_PORT

    def __init__(self, netloc: str, timeout: float, context: ssl.SSLContext | None) -> None:
        super().__init__(netloc, timeout=timeout)
        self._context = context

    def connect(self) -> None:
        super().connect()
        assert self._context is not None, "a probe's connection makes no TLS"
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)

    def refusal(self) -> str:
        """The HTTPS try without ssl (tlsprobe.py): why the server speaks no TLS, or ""."""
        super().connect()
        try:
            return tlsprobe.refusal(self.sock, self.host)
        finally:
            self.close()


class RegistryClient:
    """One client per store; safe to use from several threads at once."""

    def __init__(self, insecure_registries: list[str] | None = None) -> None:
        self.insecure_registries = list(insecure_registries or [])
        self._schemes: dict[str, Endpoint] = {}
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._challenges: dict[str, tuple[str, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._contexts: dict[bool, ssl.SSLContext] = {}

    # -- connection and auth -------------------------------------------------------------

    def endpoint(self, host: str) -> Endpoint:
        """Pick the scheme for host once (ping /v2/), then reuse it."""
        with self._lock:
            known = self._schemes.get(host)
        if known:
            return known
        candidates = [Endpoint("https", host)]
        if is_insecure(host, self.insecure_registries):
            candidates = [Endpoint("https", host, verify=False), Endpoint("http", host)]
        last: Exception | None = None
        for ep in candidates:
            try:
                self._ping(ep)
            except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
                last = exc
                continue
            with self._lock:
                self._schemes[host] = ep
            return ep
        raise RegistryError(f'Get "{candidates[-1].scheme}://{host}/v2/": {last}')

    def use_endpoint(self, host: str, ep: Endpoint) -> None:
        """Pin an endpoint (a mirror URL names its scheme)."""
        with self._lock:
            self._schemes[host] = ep

    def _ping(self, ep: Endpoint) -> None:
        if ep.scheme == "https" and not ep.verify and (no_tls := _HTTPSConnection(ep.netloc, TIMEOUT, None).refusal()):
            raise http.client.HTTPException(no_tls)
        status, headers, _ = self._roundtrip(ep, "GET", "/v2/", {})
        if status == 401:
            self._remember_challenge(ep.netloc, headers.get("www-authenticate", ""))
        elif status >= 500 or status == 404:
            raise http.client.HTTPException(f"registry ping answered {status}")

    def _connect(self, ep: Endpoint) -> http.client.HTTPConnection:
        if ep.scheme == "http":
            return http.client.HTTPConnection(ep.netloc, timeout=TIMEOUT)
        return _HTTPSConnection(ep.netloc, TIMEOUT, self._tls(ep.verify))

    def _tls(self, verify: bool) -> ssl.SSLContext:
        """One context per mode, made on first use (ssl costs memory an idle agent need not pay)."""
        import ssl

        with self._lock:
            ctx = self._contexts.get(verify)
            if ctx is None:
                if verify:
                    ctx = ssl.create_default_context()
                else:  # no CA store to load for a context that checks nothing (~2 MB kept)
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                self._contexts[verify] = ctx
            return ctx

    def _roundtrip(self, ep: Endpoint, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        conn = self._connect(ep)
        try:
            conn.request(method, path, headers={"User-Agent": USER_AGENT, **headers})
            resp = conn.getresponse()
            body = resp.read(MAX_MANIFEST)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        finally:
            conn.close()

    def _remember_challenge(self, host: str, header: str) -> None:
        scheme, _, rest = header.partition(" ")
        if scheme.lower() in ("bearer", "basic"):
            with self._lock:
                self._challenges[host] = (scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest)))

    def _auth_header(self, host: str, scope: str, creds: Credentials | None, fresh: bool = False) -> dict[str, str]:
        with self._lock:
            challenge = self._challenges.get(host)
            cached = self._tokens.get((host, scope))
        if challenge is None:
            return {}
        kind, params = challenge
        if kind == "basic":
            if not creds or not creds.username:
                return {}
            raw = f"{creds.username}:{creds.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        if cached and not fresh and cached[1] > time.monotonic():
            return {"Authorization": "Bearer " + cached[0]}
        token, ttl = self._fetch_token(params, scope, creds)
        with self._lock:
            self._tokens[(host, scope)] = (token, time.monotonic() + max(ttl - 10, 10))
        return {"Authorization": "Bearer " + token}

    def _fetch_token(self, params: dict[str, str], scope: str, creds: Credentials | None) -> tuple[str, int]:
        realm = urllib.parse.urlsplit(params.get("realm", ""))
        if realm.scheme not in ("http", "https") or not realm.netloc:
            raise RegistryError(f"bad token realm {params.get('realm')!r}")
        query = {"scope": scope} if scope else {}
        if params.get("service"):
            query["service"] = params["service"]
        headers: dict[str, str] = {}
        if creds and creds.username:
            raw = f"{creds.username}:{creds.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        path = (realm.path or "/") + "?" + (realm.query + "&" if realm.query else "") + urllib.parse.urlencode(query)
        ep = Endpoint(realm.scheme, realm.netloc, verify=not is_insecure(realm.netloc, self.insecure_registries))
        status, _, body = self._roundtrip(ep, "GET", path, headers)
        if status != 200:
            try:
                detail = str(json.loads(body).get("details") or "")
            except (ValueError, AttributeError):
                detail = ""
            detail = detail or _error_text(status, body)
            raise RegistryError(f"unauthorized: {detail}" if status in (401, 403) else f"token server answered {status}: {detail}",
                                not_found=status in (401, 403), status=status)
        data = json.loads(body)
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError("token server answered without a token")
        return token, int(data.get("expires_in") or 60)

    def open(
        self, host: str, path: str, scope: str, creds: Credentials | None = None, headers: dict[str, str] | None = None
    ) -> http.client.HTTPResponse:
        """GET path on host with auth and redirects; returns the open 2xx response."""
        ep = self.endpoint(host)
        for attempt in range(2):
            try:
                hdrs = {**(headers or {}), **self._auth_header(host, scope, creds, fresh=attempt > 0)}
                resp = self._get_following(ep, path, hdrs)
            except (OSError, http.client.HTTPException) as exc:
                raise RegistryError(f'Get "{ep.scheme}://{host}{path}": {exc or type(exc).__name__}') from exc
            if resp.status != 401 or attempt:
                break
            self._remember_challenge(host, resp.getheader("WWW-Authenticate", ""))
            resp.read()
        if resp.status >= 300:
            body = resp.read(MAX_MANIFEST)
            raise RegistryError(_error_text(resp.status, body), not_found=resp.status in (401, 403, 404), status=resp.status)
        return resp

    def _get_following(self, ep: Endpoint, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        for _ in range(6):
            conn = self._connect(ep)
            conn.request("GET", path, headers={"User-Agent": USER_AGENT, **headers})
            resp = conn.getresponse()
            if resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.getheader("Location", "")
            resp.read()
            conn.close()
            url = urllib.parse.urlsplit(urllib.parse.urljoin(f"{ep.scheme}://{ep.netloc}{path}", location))
            if url.netloc != ep.netloc:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                ep = Endpoint(url.scheme, url.netloc, verify=ep.verify or url.scheme == "https")
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        raise RegistryError("too many redirects")

    # -- distribution API ----------------------------------------------------------------

    def get_manifest(
        self, host: str, repo: str, reference: str, creds: Credentials | None = None
    ) -> tuple[str, bytes, str]:
        """(media type, raw body, digest); a digest reference is verified against the body."""
        resp = self.open(host, f"/v2/{repo}/manifests/{reference}", f"repository:{repo}:pull", creds, {"Accept": MANIFEST_ACCEPT})
        try:
            body = resp.read(MAX_MANIFEST + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f"error reading manifest {reference}: {exc}") from exc
        if len(body) > MAX_MANIFEST:
            raise RegistryError("manifest too large")
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"manifest digest {digest} does not match {reference}")
        media = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        if media not in INDEX_TYPES + IMAGE_MANIFEST_TYPES:
            media = json.loads(body).get("mediaType") or media
        return media, body, digest

    def fetch_blob(
        self,
        host: str,
        repo: str,
        digest: str,
        out: BinaryIO,
        size: int,
        creds: Credentials | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a blob into `out`, checking its size and digest; progress gets bytes so far."""
        algo, _, want = digest.partition(":")
        if algo != "sha256":
            raise RegistryError(f"unsupported digest algorithm {algo}")
        resp = self.open(host, f"/v2/{repo}/blobs/{digest}", f"repository:{repo}:pull", creds)
        h = sha256()
        buf = memoryview(bytearray(CHUNK))  # one buffer for the whole blob, not one per read
        done = 0
        try:
            while n := _read(resp, digest, buf):
                h.update(buf[:n])
                out.write(buf[:n])
                done += n
                if size and done > size:
                    break
                if progress:
                    progress(done)
        finally:
            resp.close()
        if size and done != size:
            raise RegistryError(f"blob {digest}: got {done} bytes, expected {size}")
        if h.hexdigest() != want:
            raise DigestMismatch(f"filesystem layer verification failed for digest {digest}")

    def send(
        self,
        method: str,
        host: str,
        path: str,
        scope: str,
        creds: Credentials | None = None,
        body: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request with auth (no redirects followed: push answers carry upload Locations).

        A file body is sent once, so the token is fetched before it (a cheap HEAD-less retry
        would have to rewind it): callers pass bytes or a seekable file.
        """
        ep = self.endpoint(host)
        for attempt in range(2):
            hdrs = {"User-Agent": USER_AGENT, **(headers or {}), **self._auth_header(host, scope, creds, fresh=attempt > 0)}
            if hasattr(body, "seek"):
                body.seek(0)  # type: ignore[union-attr]
            conn = self._connect(ep)
            try:
                conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read(MAX_MANIFEST)
                status, rheaders = resp.status, {k.lower(): v for k, v in resp.getheaders()}
            except (OSError, http.client.HTTPException) as exc:
                raise RegistryError(f'{method} "{ep.scheme}://{host}{path}": {exc or type(exc).__name__}') from exc
            finally:
                conn.close()
            if status != 401 or attempt:
                break
            self._remember_challenge(host, rheaders.get("www-authenticate", ""))
        if status >= 400 and not (method == "HEAD" and status == 404):
            raise RegistryError(_error_text(status, data), not_found=status in (401, 403, 404), status=status)
        return status, rheaders, data

    def login(self, host: str, creds: Credentials) -> None:
        """Check credentials the way `docker login` does; RegistryError(status=401) when refused."""
        ep = self.endpoint(host)
        with self._lock:
            challenge = self._challenges.get(host)
        if challenge is None:
            return  # the registry asks for no credentials
        kind, params = challenge
        if kind == "bearer":
            self._fetch_token(params, "", creds)
            return
        raw = f"{creds.username}:{creds.password}".encode()
        try:
            status, _, body = self._roundtrip(ep, "GET", "/v2/", {"Authorization": "Basic " + base64.b64encode(raw).decode()})
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f'Get "{ep.scheme}://{host}/v2/": {exc}') from exc
        if status in (401, 403):
            raise RegistryError(f"unauthorized: {_error_text(status, body)}", status=status)

    def tags(self, host: str, repo: str, creds: Credentials | None = None) -> list[str]:
        resp = self.open(host, f"/v2/{repo}/tags/list?n=1000", f"repository:{repo}:pull", creds)
        return list(json.loads(resp.read(MAX_MANIFEST)).get("tags") or [])

    def catalog(self, host: str, creds: Credentials | None = None) -> list[str]:
        resp = self.open(host, "/v2/_catalog?n=1000", "registry:catalog:*", creds)
        return list(json.loads(resp.read(MAX_MANIFEST)).get("repositories") or [])

    def search_v1(self, host: str, term: str, limit: int) -> list[dict[str, object]] | None:
        """The index's /v1/search; None when the registry has none."""
        ep = self.endpoint(host)
        query = urllib.parse.urlencode({"q": term, "n": limit})
        try:
            status, _, body = self._roundtrip(ep, "GET", f"/v1/search?{query}", {"Accept": "application/json"})
        except (OSError, http.client.HTTPException):
            return None
        if status != 200:
            return None
        try:
            return list(json.loads(body).get("results") or [])
        except (ValueError, AttributeError):
            return None
