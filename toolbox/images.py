"""The guest image: resolve it, download it into the sha256-keyed cache, verify, extract.

Sources, in the order `init` looks at them: `--iso PATH` (a local file, hashed here),
`--iso-url URL` (the sha256 from `--sha256` or from a `SHA256SUMS` beside it), or a
release manifest (`manifest.json`, whose files sit beside it). URLs may be http(s)://,
file:// or plain paths.

    cache/<sha256>/toolbox.iso        verified before it gets this name
    cache/<sha256>/toolbox.iso.part   an unfinished download, resumed with HTTP Range
    cache/<sha256>/vmlinuz, initrd.img, cmdline.txt   read from the ISO (direct boot)

Nothing unverified ever gets a final name; a checksum mismatch or a full disk removes the
.part, so nothing half-made is kept. requests and pycdlib are imported only here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urljoin, urlparse

from toolbox.errors import ChecksumMismatch, DownloadError, UsageError
from toolbox.paths import cache_dir

CHUNK = 1 << 20
ATTEMPTS = 4  # connection lost mid-way: resume this many times before giving up
TIMEOUT = (10.0, 30.0)  # connect, read (seconds)
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ISO_NAME = "toolbox.iso"
BOOT_FILES = {"vmlinuz": "/boot/vmlinuz", "initrd.img": "/boot/initrd.img", "cmdline.txt": "/boot/cmdline.txt"}


class ProgressHook(Protocol):
    """How a download reports progress; the CLI supplies a rich progress bar."""

    def start(self, description: str, total: int | None, completed: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


class _NoProgress:
    def start(self, description: str, total: int | None, completed: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(frozen=True)
class ImageSource:
    """What the user asked for: exactly one of manifest_url, iso_url, iso_path."""

    manifest_url: str | None = None
    iso_url: str | None = None
    iso_path: Path | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class ResolvedImage:
    version: str
    sha256: str
    size: int | None
    url: str  # where the ISO is fetched from (http(s):// or file://)
    cmdline: str  # from the manifest; the ISO's /boot/cmdline.txt wins when present
    arch: str
    source: str  # what the user named, for `info`


@dataclass(frozen=True)
class CachedImage:
    resolved: ResolvedImage
    iso: Path
    kernel: Path | None
    initrd: Path | None
    cmdline: str


def to_url(location: str) -> str:
    """A URL for `location`: URLs stay as they are, plain paths become file:// URLs."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", location):
        return location
    return Path(location).expanduser().absolute().as_uri()


def _local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


# --- HTTP, with every failure turned into DownloadError with a hint -------------------


def _request(url: str, headers: dict[str, str] | None = None) -> Any:
    import requests

    scheme = urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(url, f"unsupported URL scheme {scheme!r}", hint="use http://, https://, file:// or a path")
    try:
        resp = requests.get(url, headers=headers or {}, stream=True, timeout=TIMEOUT)
    except requests.exceptions.InvalidURL as exc:
        raise DownloadError(url, f"not a valid URL ({exc})", hint="check the URL") from None
    except requests.exceptions.ConnectionError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else "could not connect"
        raise DownloadError(url, reason, hint="check the URL and your network, or use --iso PATH") from None
    except requests.exceptions.Timeout:
        raise DownloadError(url, "timed out", hint="check your network and run the command again") from None
    except requests.exceptions.RequestException as exc:
        raise DownloadError(url, str(exc)) from None
    if resp.status_code in (200, 206, 416):
        return resp
    resp.close()
    hint = "check the URL (is the version or file name right?)" if resp.status_code == 404 else "try again later"
    raise DownloadError(url, f"HTTP {resp.status_code} {resp.reason}", hint=hint)


def read_small(url: str, limit: int = 1 << 20) -> bytes:
    """A small document (manifest, SHA256SUMS) from an http(s)/file URL."""
    local = _local_path(url)
    if local is not None:
        try:
            return local.read_bytes()[:limit]
        except OSError as exc:
            raise DownloadError(url, exc.strerror or str(exc), hint="check the path") from None
    import requests

    resp = _request(url)
    try:
        if resp.status_code != 200:
            raise DownloadError(url, f"HTTP {resp.status_code}")
        return resp.content[:limit]
    except requests.exceptions.RequestException as exc:
        raise DownloadError(url, f"connection lost ({exc})", hint="run the command again") from None
    finally:
        resp.close()


# --- resolving ---------------------------------------------------------------------


def _parse_manifest(url: str, raw: bytes) -> ResolvedImage:
    try:
        doc = json.loads(raw)
        if doc.get("format") != 1:
            raise ValueError(f"format {doc.get('format')!r} is not 1")
        iso = doc["files"][ISO_NAME]
        sha = str(iso["sha256"]).lower()
        if not SHA256_RE.match(sha):
            raise ValueError("files.toolbox.iso.sha256 is not a sha256")
        size = int(iso["size"]) if "size" in iso else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DownloadError(url, f"not a toolbox release manifest ({exc})", hint="point at manifest.json") from None
    return ResolvedImage(
        version=str(doc.get("version", "unknown")),
        sha256=sha,
        size=size,
        url=urljoin(url, ISO_NAME),
        cmdline=str(doc.get("cmdline", "")),
        arch=str(doc.get("arch", "x86_64")),
        source=url,
    )


def _sha_from_sums(iso_url: str) -> str:
    sums_url = urljoin(iso_url, "SHA256SUMS")
    name = Path(urlparse(iso_url).path).name
    try:
        text = read_small(sums_url).decode("utf-8", "replace")
    except DownloadError as exc:
        raise DownloadError(
            iso_url, f"no sha256 to verify it against ({exc.reason} for SHA256SUMS beside it)",
            hint="pass --sha256 HEX",
        ) from None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == name and SHA256_RE.match(parts[0].lower()):
            return parts[0].lower()
    raise DownloadError(iso_url, f"SHA256SUMS beside it does not list {name}", hint="pass --sha256 HEX")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(source: ImageSource) -> ResolvedImage:
    """Find out which image (sha256, size, where) the source names; downloads nothing big."""
    given = [s for s in (source.manifest_url, source.iso_url, source.iso_path) if s]
    if len(given) != 1:
        raise UsageError("name one image source: a manifest URL, --iso-url or --iso")
    if source.sha256 is not None and not SHA256_RE.match(source.sha256.lower()):
        raise UsageError(f"--sha256 {source.sha256!r} is not 64 hex digits")
    if source.iso_path is not None:
        path = source.iso_path.expanduser().absolute()
        if not path.is_file():
            raise UsageError(f"--iso {path}: no such file")
        sha = sha256_file(path)
        if source.sha256 and source.sha256.lower() != sha:
            raise ChecksumMismatch(str(path), source.sha256.lower(), sha)
        return ResolvedImage("local", sha, path.stat().st_size, path.as_uri(), "", "x86_64", str(path))
    if source.iso_url is not None:
        url = to_url(source.iso_url)
        sha = source.sha256.lower() if source.sha256 else _sha_from_sums(url)
        return ResolvedImage("custom", sha, None, url, "", "x86_64", url)
    url = to_url(str(source.manifest_url))
    return _parse_manifest(url, read_small(url))


# --- downloading -------------------------------------------------------------------


class _Interrupted(Exception):
    """The transfer stopped part-way; the .part is kept so the next try resumes."""


def _open_remote(url: str, offset: int) -> tuple[Any, int]:
    """The response and the offset it starts at (0 when the server ignored Range)."""
    resp = _request(url, {"Range": f"bytes={offset}-"} if offset else None)
    if resp.status_code == 206:
        if resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            return resp, offset
        resp.close()
        resp = _request(url)  # a range we did not ask for: start again
    if resp.status_code == 416:
        resp.close()  # our .part is as long as the file, or longer (a changed file)
        return None, offset
    if resp.status_code != 200:
        resp.close()
        raise DownloadError(url, f"HTTP {resp.status_code}")
    return resp, 0


def _chunks_remote(resp: Any) -> Any:
    import requests

    try:
        yield from resp.iter_content(CHUNK)
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout) as exc:
        raise _Interrupted(str(exc)) from None
    finally:
        resp.close()


def _chunks_local(path: Path, offset: int) -> Any:
    with path.open("rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(CHUNK):
            yield chunk


def _fetch_into(url: str, part: Path, size: int | None, progress: ProgressHook) -> None:
    """Bring `part` up to the whole file, resuming from what it already holds."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        offset = 0
    if size is not None and offset == size:
        return
    local = _local_path(url)
    if local is not None:
        if not local.is_file():
            raise DownloadError(url, "no such file", hint="check the path")
        chunks, start = _chunks_local(local, offset), offset
        total = size or local.stat().st_size
    else:
        resp, start = _open_remote(url, offset)
        if resp is None:
            return  # 416: the sha256 check decides whether the .part is whole
        length = resp.headers.get("Content-Length")
        total = size or (start + int(length) if length and length.isdigit() else None)
        chunks = _chunks_remote(resp)
    progress.start(f"{Path(urlparse(url).path).name}", total, start)
    with part.open("ab" if start else "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            progress.advance(len(chunk))
    if size is not None and part.stat().st_size < size:
        raise _Interrupted(f"got {part.stat().st_size} of {size} bytes")


def download(url: str, dest: Path, sha256: str, size: int | None, progress: ProgressHook | None = None) -> None:
    """Fetch `url` to `dest` through `dest.part`, resuming, verified against sha256."""
    progress = progress or _NoProgress()
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        for attempt in range(ATTEMPTS):
            try:
                _fetch_into(url, part, size, progress)
                break
            except _Interrupted as exc:
                if attempt == ATTEMPTS - 1:
                    raise DownloadError(url, f"connection lost ({exc})", hint="run the command again: it resumes") from None
                time.sleep(0.5 * (attempt + 1))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            part.unlink(missing_ok=True)
            raise DownloadError(url, "no space left on device", hint=f"free space where {dest.parent} lives, then retry") from None
        raise
    finally:
        progress.finish()
    actual = sha256_file(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(url, sha256, actual)
    os.replace(part, dest)


# --- the cache ---------------------------------------------------------------------


def _extract_one(iso: Any, iso_file: str, target: Path) -> bool:
    """Copy one file out of the ISO, trying Rock Ridge, Joliet, then plain ISO9660 names."""
    from pycdlib.pycdlibexception import PyCdlibException

    plain = iso_file.upper() + ("" if "." in Path(iso_file).name else ".") + ";1"
    attempts: list[dict[str, str]] = []
    if iso.has_rock_ridge():
        attempts.append({"rr_path": iso_file})
    if iso.has_joliet():
        attempts.append({"joliet_path": iso_file})
    attempts.append({"iso_path": plain})
    tmp = target.with_name(target.name + ".tmp")
    for kwargs in attempts:
        try:
            iso.get_file_from_iso(str(tmp), **kwargs)
            os.replace(tmp, target)
            return True
        except PyCdlibException:
            tmp.unlink(missing_ok=True)
    return False


def extract_boot_files(iso_path: Path, entry: Path) -> dict[str, Path]:
    """vmlinuz, initrd.img, cmdline.txt from the ISO's /boot into the cache entry."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(iso_path))
    except Exception as exc:  # pycdlib raises several types for a non-ISO file
        raise UsageError(f"{iso_path} is not a readable ISO image ({exc})") from None
    found: dict[str, Path] = {}
    try:
        for name, iso_file in BOOT_FILES.items():
            if _extract_one(iso, iso_file, entry / name):
                found[name] = entry / name
    finally:
        iso.close()
    return found


def cached(sha256: str) -> Path | None:
    """The cached ISO for sha256, if it is there (it was verified before being named)."""
    iso = cache_dir() / sha256 / ISO_NAME
    return iso if iso.is_file() else None


def ensure_cached(resolved: ResolvedImage, progress: ProgressHook | None = None) -> CachedImage:
    """Download (or reuse) and verify the ISO, then extract its boot files."""
    entry = cache_dir() / resolved.sha256
    iso = entry / ISO_NAME
    try:
        if not iso.is_file():
            download(resolved.url, iso, resolved.sha256, resolved.size, progress)
        boot = {n: entry / n for n in BOOT_FILES if (entry / n).is_file()}
        if not boot:
            boot = extract_boot_files(iso, entry)
    except BaseException:
        if entry.is_dir() and not any(entry.iterdir()):
            entry.rmdir()  # a failure leaves no empty entry behind
        raise
    cmdline = boot["cmdline.txt"].read_text().strip() if "cmdline.txt" in boot else resolved.cmdline
    return CachedImage(resolved, iso, boot.get("vmlinuz"), boot.get("initrd.img"), cmdline)


# --- cache listing and pruning (`toolbox cache ls|prune`) ---------------------------

PARTIAL_GRACE_S = 3600.0  # an unfinished download younger than this may still be running


@dataclass(frozen=True)
class CacheEntry:
    sha256: str
    path: Path
    size: int  # bytes on disk: the ISO (or its .part) and the boot files read from it
    complete: bool  # the verified ISO is there; else an unfinished download
    mtime: float  # the newest file's


def cache_entries() -> list[CacheEntry]:
    """Every cache/<sha256>/ directory (nothing else in the cache is touched)."""
    root = cache_dir()
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or not SHA256_RE.match(entry.name):
            continue
        stats = [f.stat() for f in entry.iterdir() if f.is_file()]
        found.append(CacheEntry(entry.name, entry, sum(s.st_size for s in stats), (entry / ISO_NAME).is_file(),
                                max((s.st_mtime for s in stats), default=entry.stat().st_mtime)))
    return found


def prunable(entries: list[CacheEntry], in_use: set[str], now: float | None = None) -> list[CacheEntry]:
    """The entries no instance boots, minus unfinished downloads that may still be running."""
    now = time.time() if now is None else now
    return [e for e in entries if e.sha256 not in in_use and (e.complete or now - e.mtime > PARTIAL_GRACE_S)]


def remove_entry(entry: CacheEntry) -> None:
    import shutil

    shutil.rmtree(entry.path)
