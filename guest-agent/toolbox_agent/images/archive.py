"""`docker save` / `docker load` archives.

save writes the layout Docker 25+ writes: an OCI image layout (blobs/sha256/..., index.json,
oci-layout) plus the legacy manifest.json and repositories that every `docker load` reads.
Layers go out as plain tars whose digest is their diff_id. load reads manifest.json (Docker's
older per-layer-directory archives too), accepts compressed layers and compressed archives,
and checks each layer's diff_id against the config before anything is tagged.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import tarfile
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from toolbox_agent.lean import sha256

from . import reference as refs
from .errors import ArchiveError, ImageError
from .layers import CHUNK, LayerError, compression_of, hash_tar, open_uncompressed
from .model import LayerRecord, write_atomic
from .registry import sha256_digest

if TYPE_CHECKING:
    from .model import Image
    from .store import ImageStore

MTIME = 0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER = {"none": "application/vnd.docker.image.rootfs.diff.tar", "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


# -- save -------------------------------------------------------------------------------------


@dataclass
class _Saved:
    image: Image
    tags: list[refs.Reference]


def save(store: ImageStore, names: list[str]) -> AsyncIterator[bytes]:
    """Resolve names now (ImageNotFound before any byte is sent), then stream the tar."""
    picked: dict[str, _Saved] = {}
    for name in names:
        image = store.get(name)
        entry = picked.setdefault(image.id, _Saved(image, []))
        if not _names_id(name, image.id):
            ref = refs.parse(name)
            if ref.tag and ref not in entry.tags:
                entry.tags.append(ref)
    keys = [s.image.id for s in picked.values()]
    keys += [key for s in picked.values() for rec in s.image.layers for key in (rec.diff_id, rec.digest)]
    store.pin(*keys)
    for entry in picked.values():
        store.emit("save", entry.image.id)
    return _stream(store, list(picked.values()), keys)


def _names_id(name: str, image_id: str) -> bool:
    bare = name.removeprefix("sha256:")
    return all(c in "0123456789abcdef" for c in bare) and image_id.removeprefix("sha256:").startswith(bare)


async def _stream(store: ImageStore, saved: list[_Saved], pins: list[str]) -> AsyncIterator[bytes]:
    gen = _tar_chunks(store, saved)
    try:
        while True:
            chunk = await asyncio.to_thread(next, gen, None)
            if chunk is None:
                return
            yield chunk
    finally:
        gen.close()
        store.unpin(*pins)


def _header(name: str, size: int = 0, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, MTIME, 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _file(name: str, data: bytes) -> bytes:
    return _header(name, len(data)) + data + b"\0" * (-len(data) % 512)


def _tar_chunks(store: ImageStore, saved: list[_Saved]) -> Generator[bytes, None, None]:
    yield _header("blobs/", directory=True) + _header("blobs/sha256/", directory=True)
    written: set[str] = set()
    manifest_json: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for entry in saved:
        image = entry.image
        layer_descs: list[dict[str, Any]] = []
        for rec in image.layers:
            size = int(store.layer_info(rec.diff_id).get("tar_size") or 0) or hash_tar(store.blob_path(rec.digest)).tar_size
            layer_descs.append({"mediaType": OCI_LAYER, "digest": rec.diff_id, "size": size})
            if rec.diff_id in written:
                continue
            written.add(rec.diff_id)
            yield _header(f"blobs/sha256/{rec.diff_id.removeprefix('sha256:')}", size)
            sent = 0
            with open_uncompressed(store.blob_path(rec.digest)) as src:
                while chunk := src.read(CHUNK):
                    sent += len(chunk)
                    yield chunk
            if sent != size:
                raise ArchiveError(f"layer {rec.diff_id} changed size while saving")
            yield b"\0" * (-size % 512)
        config = store.blob_path(image.id).read_bytes()
        if image.id not in written:
            written.add(image.id)
            yield _file(f"blobs/sha256/{image.id.removeprefix('sha256:')}", config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": image.id, "size": len(config)},
                               "layers": layer_descs}).encode()
        mdigest = sha256_digest(manifest)
        if mdigest not in written:
            written.add(mdigest)
            yield _file(f"blobs/sha256/{mdigest.removeprefix('sha256:')}", manifest)
        desc: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": mdigest, "size": len(manifest)}
        for tag in entry.tags:
            ann = {"io.containerd.image.name": str(tag), "org.opencontainers.image.ref.name": tag.tag or "latest"}
            index.append({**desc, "annotations": ann})
        if not entry.tags:
            index.append(desc)
        manifest_json.append({"Config": f"blobs/sha256/{image.id.removeprefix('sha256:')}",
                              "RepoTags": [t.familiar() for t in entry.tags] or None,
                              "Layers": [f"blobs/sha256/{d['digest'].removeprefix('sha256:')}" for d in layer_descs]})
        top = image.layers[-1].diff_id.removeprefix("sha256:") if image.layers else ""
        for tag in entry.tags:
            repositories.setdefault(tag.familiar_repository, {})[tag.tag or "latest"] = top
    yield _file("index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}).encode())
    yield _file("manifest.json", json.dumps(manifest_json).encode())
    yield _file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    if repositories:
        yield _file("repositories", json.dumps(repositories).encode())
    yield b"\0" * 1024


# -- load -------------------------------------------------------------------------------------


@dataclass
class _Loaded:
    config_digest: str
    config: dict[str, Any]
    layers: list[LayerRecord]
    tags: list[str]


async def load(store: ImageStore, stream: BinaryIO | bytes) -> list[str]:
    """Ingest an archive; returns Docker's lines ("Loaded image: busybox:latest")."""
    tmpdir = store.temp_path("load-")
    pins: list[str] = []
    try:
        loaded = await asyncio.to_thread(_ingest, store, stream, tmpdir, pins)
        lines: list[str] = []
        for item in loaded:
            image_id = store.commit_image(item.config_digest, item.config, item.layers)
            for name in item.tags:
                ref = refs.parse(name)
                old = store._tags.get(str(ref))
                if old and old != image_id:
                    lines.append(f"The image {ref.familiar()} already exists, renaming the old one with ID {old} to empty string")
                store.set_tag(str(ref), image_id)
                lines.append(f"Loaded image: {ref.familiar()}")
            if not item.tags:
                lines.append(f"Loaded image ID: {image_id}")
            store.emit("load", image_id)
        return lines
    finally:
        store.unpin(*pins)
        shutil.rmtree(tmpdir, ignore_errors=True)
        store.gc()


def _open_archive(stream: BinaryIO | bytes, tmpdir: Path) -> tarfile.TarFile:
    if isinstance(stream, (bytes, bytearray, memoryview)):
        fileobj: IO[bytes] = io.BytesIO(bytes(stream))
    elif stream.seekable():
        fileobj = stream
    else:
        spool = open(tmpdir / "archive", "w+b")
        shutil.copyfileobj(stream, spool, CHUNK)
        spool.seek(0)
        fileobj = spool
    try:
        return tarfile.open(fileobj=fileobj, mode="r:*")
    except tarfile.TarError as exc:
        raise ArchiveError(f"invalid tar archive: {exc}") from exc


def _read(tf: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tf.getmember(name.lstrip("./") if name.startswith("./") else name)
        f = tf.extractfile(member)
    except KeyError as exc:
        raise ArchiveError(f"archive has no {name}") from exc
    if f is None:
        raise ArchiveError(f"{name} in the archive is not a file")
    return f.read()


def _ingest(store: ImageStore, stream: BinaryIO | bytes, tmpdir: Path, pins: list[str]) -> list[_Loaded]:
    with _open_archive(stream, tmpdir) as tf:
        try:
            names = set(tf.getnames())
            entries = json.loads(_read(tf, "manifest.json")) if "manifest.json" in names else _from_oci_index(tf)
        except ValueError as exc:
            raise ArchiveError(f"invalid archive metadata: {exc}") from exc
        if not isinstance(entries, list) or not entries:
            raise ArchiveError("manifest.json lists no images")
        out = []
        for entry in entries:
            config_bytes = _read(tf, entry["Config"])
            config_digest = sha256_digest(config_bytes)
            config = json.loads(config_bytes)
            diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
            if len(diff_ids) != len(entry.get("Layers") or []):
                raise ArchiveError("manifest.json and the image config disagree on the layers")
            store.pin(config_digest, *diff_ids)
            pins += [config_digest, *diff_ids]
            records = [_layer(store, tf, path, diff_id, tmpdir, pins) for path, diff_id in zip(entry["Layers"], diff_ids)]
            write_atomic(store.blob_path(config_digest), config_bytes)
            tags = [t for t in entry.get("RepoTags") or [] if t]
            for t in tags:
                refs.parse(t)  # InvalidReference before anything is tagged
            out.append(_Loaded(config_digest, config, records, tags))
        return out


def _blob_name(digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    return f"blobs/{algo}/{hexd}"


def _from_oci_index(tf: tarfile.TarFile) -> list[dict[str, Any]]:
    """A plain OCI image layout (index.json, no manifest.json) as manifest.json entries."""
    from .pull import select_platform

    index = json.loads(_read(tf, "index.json"))
    entries = []
    for desc in index.get("manifests") or []:
        manifest = json.loads(_read(tf, _blob_name(desc["digest"])))
        if "manifests" in manifest:  # a nested index: this platform's manifest
            manifest = json.loads(_read(tf, _blob_name(select_platform(manifest)["digest"])))
        ann = desc.get("annotations") or {}
        name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name") or ""
        try:
            tags = [refs.parse(name).familiar()] if name and refs.parse(name).tag else []
        except ImageError:
            tags = []
        entries.append({"Config": _blob_name(manifest["config"]["digest"]), "RepoTags": tags,
                        "Layers": [_blob_name(layer["digest"]) for layer in manifest.get("layers") or []]})
    return entries


def _layer(store: ImageStore, tf: tarfile.TarFile, path: str, diff_id: str, tmpdir: Path, pins: list[str]) -> LayerRecord:
    for rec in _known_layers(store):
        if rec.diff_id == diff_id and store.has_layer(diff_id) and store.blob_path(rec.digest).exists():
            store.pin(rec.digest)
            pins.append(rec.digest)
            return rec
    work = Path(os.path.join(tmpdir, diff_id.removeprefix("sha256:")))
    work.mkdir(exist_ok=True)
    blob = work / "blob"
    try:
        src = tf.extractfile(tf.getmember(path))
    except KeyError as exc:
        raise ArchiveError(f"archive has no layer {path}") from exc
    if src is None:
        raise ArchiveError(f"layer {path} is not a file")
    with open(blob, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    digest = _file_digest(blob)
    kind = compression_of(blob)
    if not store.has_layer(diff_id):
        try:
            store.install_layer(blob, diff_id, work, f"layer {path}")
        except LayerError as exc:
            raise ArchiveError(str(exc)) from exc
    store.pin(digest)
    pins.append(digest)
    os.replace(blob, store.blob_path(digest))
    return LayerRecord(diff_id, digest, DOCKER_LAYER[kind], os.path.getsize(store.blob_path(digest)))


def _known_layers(store: ImageStore) -> list[LayerRecord]:
    return [LayerRecord(**rec) for meta in list(store._meta.values()) for rec in meta["layers"]]


def _file_digest(path: Path) -> str:
    h = sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()

