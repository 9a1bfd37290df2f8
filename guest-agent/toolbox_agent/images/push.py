"""`docker push`: blobs the registry lacks (monolithic uploads), then the manifest.

Layers go up as they are stored: compressed as pulled, or as the plain tar a `docker load`
brought. The manifest is Docker schema2, or OCI when any layer has an OCI media type.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import TYPE_CHECKING, Any

from . import reference as refs
from .errors import ImageNotFound, RegistryError
from .pull import credentials
from .registry import MANIFEST_V2, OCI_MANIFEST, Credentials, sha256_digest

if TYPE_CHECKING:
    from .store import ImageStore, Progress

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


async def push(store: ImageStore, text: str, progress: Progress, auth: dict[str, str] | None) -> str:
    """Push one tag; returns the manifest digest (also recorded as a repo digest)."""
    ref = refs.parse(text)
    try:
        image = store.get(str(ref))
    except ImageNotFound:
        raise ImageNotFound(ref.familiar()) from None  # Docker: "No such image: x:tag"
    creds = credentials(auth)
    host, scope = ref.registry_host, f"repository:{ref.path}:pull,push"
    progress({"status": f"The push refers to repository [{ref.repository}]"})
    layers = list(reversed(image.layers))
    for rec in layers:
        progress({"status": "Preparing", "progressDetail": {}, "id": rec.digest[7:19]})
    for rec in layers:
        lid = rec.digest[7:19]
        if await _exists(store, host, ref.path, rec.digest, scope, creds):
            progress({"status": "Layer already exists", "progressDetail": {}, "id": lid})
            continue
        progress({"status": "Pushing", "progressDetail": {"current": 0, "total": rec.size}, "id": lid})
        await _upload(store, host, ref.path, rec.digest, scope, creds)
        progress({"status": "Pushed", "progressDetail": {}, "id": lid})
    if not await _exists(store, host, ref.path, image.id, scope, creds):
        await _upload(store, host, ref.path, image.id, scope, creds)
    manifest = _manifest(store, image.id, image.layers)
    media = json.loads(manifest)["mediaType"]
    await asyncio.to_thread(store.registry.send, "PUT", host, f"/v2/{ref.path}/manifests/{ref.tag or ref.reference}", scope,
                            creds, manifest, {"Content-Type": media})
    digest = sha256_digest(manifest)
    progress({"status": f"{ref.tag}: digest: {digest} size: {len(manifest)}"})
    store.commit_image(image.id, image.config, image.layers, f"{ref.repository}@{digest}")
    store.emit("push", ref.familiar(), ref.familiar_repository)
    return digest


def _manifest(store: ImageStore, config_digest: str, layers: list[Any]) -> bytes:
    oci = any(rec.media_type.startswith("application/vnd.oci") for rec in layers)
    config_size = store.blob_path(config_digest).stat().st_size
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else MANIFEST_V2,
        "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": rec.media_type or "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": rec.digest, "size": store.blob_path(rec.digest).stat().st_size} for rec in layers],
    }
    return json.dumps(doc, indent=3).encode()


async def _exists(store: ImageStore, host: str, repo: str, digest: str, scope: str, creds: Credentials | None) -> bool:
    status, _, _ = await asyncio.to_thread(store.registry.send, "HEAD", host, f"/v2/{repo}/blobs/{digest}", scope, creds)
    return status == 200


async def _upload(store: ImageStore, host: str, repo: str, digest: str, scope: str, creds: Credentials | None) -> None:
    status, headers, _ = await asyncio.to_thread(store.registry.send, "POST", host, f"/v2/{repo}/blobs/uploads/", scope, creds, b"")
    location = headers.get("location", "")
    if status != 202 or not location:
        raise RegistryError(f"registry refused to start an upload ({status})")
    url = urllib.parse.urlsplit(location)
    query = (url.query + "&" if url.query else "") + urllib.parse.urlencode({"digest": digest})
    path = f"{url.path}?{query}"
    size = store.blob_path(digest).stat().st_size

    def put() -> None:
        with open(store.blob_path(digest), "rb") as body:
            store.registry.send("PUT", host, path, scope, creds, body,
                                {"Content-Type": "application/octet-stream", "Content-Length": str(size)})

    await asyncio.to_thread(put)
