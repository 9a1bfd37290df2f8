"""Pulling an image: manifest (list) -> platform -> config -> layers, with Docker's progress.

Layers download at most PARALLEL at a time, each into tmp/ while hashed, then move into
blobs/ once verified, then extract into tmp/ and move into layers/ once their diff_id
matches the config. Concurrent pulls share one download and one extraction per blob
(futures keyed by digest). Nothing is tagged until every piece is in place; on failure the
pull's temporaries are removed and what it added but no image uses is collected.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from typing import TYPE_CHECKING, Any

from . import reference as refs
from .errors import DigestMismatch, ImageError, RegistryError
from .layers import LayerInfo
from .model import LayerRecord, write_atomic
from .registry import IMAGE_MANIFEST_TYPES, INDEX_TYPES, Credentials, Endpoint, is_insecure, sha256_digest
from .store import Progress

if TYPE_CHECKING:
    from .model import Image
    from .store import ImageStore

PARALLEL = 3
PROGRESS_EVERY = 512 * 1024
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "armv6l": "arm",
         "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def guest_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) in OCI terms."""
    machine = os.uname().machine.lower()
    variant = {"armv7l": "v7", "armv6l": "v6", "aarch64": "v8"}.get(machine, "")
    return "linux", _ARCH.get(machine, machine), variant


def select_platform(index: dict[str, Any], want: tuple[str, str, str] | None = None) -> dict[str, Any]:
    os_name, arch, variant = want or guest_platform()
    candidates = []
    for desc in index.get("manifests") or []:
        plat = desc.get("platform") or {}
        if plat.get("os") == os_name and plat.get("architecture") == arch:
            exact = not variant or plat.get("variant", "") in ("", variant)
            candidates.append((0 if exact else 1, desc))
    if not candidates:
        raise RegistryError(f"no matching manifest for {os_name}/{arch} in the manifest list entries", not_found=True)
    best: dict[str, Any] = sorted(candidates, key=lambda c: c[0])[0][1]
    return best


def credentials(auth: dict[str, str] | None) -> Credentials | None:
    if not auth:
        return None
    return Credentials(auth.get("username", ""), auth.get("password", ""), auth.get("identitytoken", ""))


def mirror_hosts(store: ImageStore, ref: refs.Reference) -> list[str]:
    """Hosts to try for ref: the configured mirrors first for Docker Hub images."""
    hosts = []
    if ref.domain == refs.DEFAULT_DOMAIN:
        for url in store.registry_mirrors:
            scheme, _, rest = url.partition("://")
            netloc = rest.split("/")[0] if rest else scheme
            if rest:
                store.registry.use_endpoint(netloc, Endpoint(scheme, netloc, verify=not is_insecure(netloc, store.insecure_registries)))
            hosts.append(netloc)
        if hosts and not store.mirror_fallback:
            return hosts  # an offline setup: never reach past the mirrors to Docker Hub
    return hosts + [ref.registry_host]


def parse_platform(text: str | None) -> tuple[str, str, str] | None:
    """`linux/arm64`, `linux/arm/v7`, `arm64` -> (os, arch, variant); None for the guest's own."""
    if not text:
        return None
    parts = text.lower().split("/")
    if len(parts) == 1:
        parts = ["linux", *parts]
    return parts[0], _ARCH.get(parts[1], parts[1]), parts[2] if len(parts) > 2 else ""


async def pull(store: ImageStore, text: str, progress: Progress, auth: dict[str, str] | None,
               platform_text: str | None = None) -> Image:
    ref = refs.parse(text)
    creds = credentials(auth)
    want = parse_platform(platform_text)
    hosts = mirror_hosts(store, ref)
    last: Exception | None = None
    for i, host in enumerate(hosts):
        try:
            return await _pull_from(store, ref, host, creds, progress, want)
        except RegistryError as exc:
            last = exc
            if i == len(hosts) - 1 or isinstance(exc, DigestMismatch):
                break
    assert last is not None
    raise last


async def pull_all_tags(store: ImageStore, text: str, progress: Progress, auth: dict[str, str] | None) -> list[Image]:
    """`docker pull -a`: every tag of the repository, one after the other."""
    ref = refs.parse(text, default_tag=False)
    hosts = mirror_hosts(store, ref)
    tags: list[str] = []
    for host in hosts:
        try:
            tags = await asyncio.to_thread(store.registry.tags, host, ref.path, credentials(auth))
            break
        except RegistryError:
            if host == hosts[-1]:
                raise
    quiet = lambda msg: None if str(msg.get("status", "")).startswith("Status: ") else progress(msg)  # noqa: E731
    images = [await pull(store, str(ref.with_tag(tag)), quiet, auth) for tag in sorted(tags)]
    progress({"status": f"Status: Downloaded newer image for {ref.familiar_repository}"})
    return images


async def _manifest(store: ImageStore, ref: refs.Reference, host: str, creds: Credentials | None,
                    want: tuple[str, str, str] | None = None) -> tuple[dict[str, Any], str]:
    """The image manifest for this platform and the digest to record (the list's, if any)."""
    try:
        media, body, digest = await asyncio.to_thread(store.registry.get_manifest, host, ref.path, ref.reference, creds)
    except RegistryError as exc:
        if exc.status in (401, 403):
            raise RegistryError(
                f"pull access denied for {ref.familiar_repository}, repository does not exist or may require "
                f"'docker login': {exc}", not_found=True, status=exc.status) from exc
        if exc.status == 404:
            raise RegistryError(f"manifest for {ref.familiar()} not found: {exc}", not_found=True, status=404) from exc
        raise
    manifest = json.loads(body)
    if media in INDEX_TYPES or "manifests" in manifest:
        chosen = select_platform(manifest, want)
        media, body, _ = await asyncio.to_thread(store.registry.get_manifest, host, ref.path, chosen["digest"], creds)
        manifest = json.loads(body)
    if media not in IMAGE_MANIFEST_TYPES and "layers" not in manifest:
        raise RegistryError(f"unsupported manifest media type {media!r}")
    return manifest, digest


async def _pull_from(store: ImageStore, ref: refs.Reference, host: str, creds: Credentials | None, progress: Progress,
                     want: tuple[str, str, str] | None = None) -> Image:
    manifest, repo_digest = await _manifest(store, ref, host, creds, want)
    progress({"status": f"Pulling from {ref.path}", "id": ref.digest or ref.tag})
    config_digest = manifest["config"]["digest"]
    layers = manifest.get("layers") or []
    loop = asyncio.get_running_loop()
    store.pin(config_digest, *(d["digest"] for d in layers))
    pinned_diffs: list[str] = []
    try:
        config_bytes = await _fetch_small(store, ref, host, creds, config_digest)
        config = json.loads(config_bytes)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(layers):
            raise RegistryError("image config and manifest disagree on the number of layers")
        store.pin(*diff_ids)
        pinned_diffs = diff_ids
        existing = config_digest in store._meta and all(store.has_layer(d) for d in diff_ids)
        if not existing:
            sem = asyncio.Semaphore(PARALLEL)
            for desc, diff_id in zip(layers, diff_ids):
                status = "Already exists" if store.has_layer(diff_id) else "Pulling fs layer"
                progress({"status": status, "progressDetail": {}, "id": _short(desc["digest"])})
            jobs = [_layer(store, ref, host, creds, desc, diff_id, sem, progress, loop) for desc, diff_id in zip(layers, diff_ids)]
            results = await asyncio.gather(*jobs, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            write_atomic(store.blob_path(config_digest), config_bytes)
        records = [LayerRecord(d, desc["digest"], desc.get("mediaType", ""), int(desc.get("size", 0))) for desc, d in zip(layers, diff_ids)]
        image_id = store.commit_image(config_digest, config, records, f"{ref.repository}@{repo_digest}")
        if ref.tag:
            before = store._tags.get(str(ref))
            store.set_tag(str(ref), image_id)
        else:
            before = image_id
    except BaseException:
        store.unpin(config_digest, *(d["digest"] for d in layers), *pinned_diffs)
        store.gc()
        raise
    store.unpin(config_digest, *(d["digest"] for d in layers), *pinned_diffs)
    progress({"status": f"Digest: {repo_digest}"})
    fresh = not existing or before != image_id
    word = "Downloaded newer image for" if fresh else "Image is up to date for"
    progress({"status": f"Status: {word} {ref.familiar()}"})
    store.emit("pull", ref.familiar(), ref.familiar_repository)
    return store.get(image_id)


async def _fetch_small(store: ImageStore, ref: refs.Reference, host: str, creds: Credentials | None, digest: str) -> bytes:
    import io

    buf = io.BytesIO()
    await asyncio.to_thread(store.registry.fetch_blob, host, ref.path, digest, buf, 0, creds)
    data = buf.getvalue()
    if sha256_digest(data) != digest:
        raise DigestMismatch(f"config blob {digest} failed verification")
    return data


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


async def _shared(store: ImageStore, key: str, factory: Any) -> Any:
    """Run factory() once for key across concurrent pulls; others await the same result."""
    fut = store.inflight.get(key)
    if fut is None:
        fut = asyncio.ensure_future(factory())
        store.inflight[key] = fut
        fut.add_done_callback(lambda _f: store.inflight.pop(key, None))
    return await asyncio.shield(fut)


async def _layer(store: ImageStore, ref: refs.Reference, host: str, creds: Credentials | None, desc: dict[str, Any],
                 diff_id: str, sem: asyncio.Semaphore, progress: Progress, loop: asyncio.AbstractEventLoop) -> None:
    digest, size, lid = desc["digest"], int(desc.get("size", 0)), _short(desc["digest"])
    if store.has_layer(diff_id):
        return
    if not store.blob_path(digest).exists():
        async with sem:
            await _shared(store, "blob:" + digest, lambda: _download(store, ref, host, creds, digest, size, lid, progress, loop))
        progress({"status": "Verifying Checksum", "progressDetail": {}, "id": lid})
        progress({"status": "Download complete", "progressDetail": {}, "id": lid})
    progress({"status": "Extracting", "progressDetail": {"current": size, "total": size}, "id": lid})
    await _shared(store, "layer:" + diff_id, lambda: _extract(store, digest, diff_id))
    progress({"status": "Pull complete", "progressDetail": {}, "id": lid})


async def _download(store: ImageStore, ref: refs.Reference, host: str, creds: Credentials | None, digest: str,
                    size: int, lid: str, progress: Progress, loop: asyncio.AbstractEventLoop) -> None:
    if store.blob_path(digest).exists():
        return
    tmpdir = store.temp_path("blob-")
    last = [0, 0.0]

    def report(done: int) -> None:
        now = time.monotonic()
        if done - last[0] >= PROGRESS_EVERY or now - last[1] > 0.2 or done == size:
            last[0], last[1] = done, now
            loop.call_soon_threadsafe(progress, {"status": "Downloading", "progressDetail": {"current": done, "total": size}, "id": lid})

    def fetch() -> None:
        tmp = tmpdir / "data"
        with open(tmp, "wb") as out:
            store.registry.fetch_blob(host, ref.path, digest, out, size, creds, report)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, store.blob_path(digest))

    try:
        await asyncio.to_thread(fetch)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


async def _extract(store: ImageStore, digest: str, diff_id: str) -> None:
    if store.has_layer(diff_id):
        return
    tmpdir = store.temp_path("layer-")

    def work() -> LayerInfo:
        return store.install_layer(store.blob_path(digest), diff_id, tmpdir, f"layer {digest}")

    try:
        await asyncio.to_thread(work)
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(f"failed to register layer: {exc}") from exc
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
