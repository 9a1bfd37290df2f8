"""ImageStore: images on disk, content-addressed and crash-safe.

Layout under root (`<agent root>/images`):
  blobs/sha256/<hex>        verified blobs: configs, manifests, layer blobs as pulled
  layers/<hex>/             a layer extracted once, keyed by its diff_id's hex: overlay
                            diffs do not depend on their parents, so images share them
  layers/<hex>.json         {diff_id, tar_size, size}, written before the dir is renamed in
  meta/<hex>.json           one image (hex of its config digest = its ID)
  repositories.json         {"tags": {"docker.io/library/busybox:latest": "sha256:..."}}
  tmp/                      downloads and extractions in progress; emptied at start

Every file appears by rename, so a crash leaves either the old state or the new one, plus
at worst unreferenced blobs/layers that the next garbage collection removes. Metadata is
changed only on the event loop thread, so no lock is needed around it.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import reference as refs
from .errors import DigestMismatch, ImageConflict, ImageNotFound, InvalidReference
from .layers import LayerInfo, extract_layer
from .model import Image, LayerRecord, with_suppress_unlink, write_atomic

if TYPE_CHECKING:
    from .registry import RegistryClient

Progress = Callable[[dict[str, Any]], None]
InUse = Callable[[str], "bool | str | None"]


class ImageStore:
    """All image state. Async methods run on the agent's event loop."""

    def __init__(
        self,
        root: Path,
        *,
        insecure_registries: list[str] | None = None,
        registry_mirrors: list[str] | None = None,
        mirror_fallback: bool = True,
        in_use: InUse | None = None,
    ) -> None:
        """root: `<agent root>/images`. insecure_registries: host[:port] or CIDRs reached over
        plain HTTP (loopback always is). registry_mirrors: URLs tried first for Docker Hub
        images (and searched instead of the Hub's index); mirror_fallback=False never goes
        past them to Docker Hub. in_use(image_id): truthy (or a container ID) while a
        container uses the image."""
        self.root = Path(root)
        self.insecure_registries = list(insecure_registries or [])
        self.registry_mirrors = list(registry_mirrors or [])
        self.mirror_fallback = mirror_fallback
        self.in_use: InUse = in_use or (lambda image_id: False)
        self.events: Any = None  # the agent's EventBus (publish(type, action, id, attrs)), set by the app
        self._registry: RegistryClient | None = None
        for sub in ("blobs/sha256", "layers", "meta", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        (self.root / "tmp").mkdir()
        self._meta: dict[str, dict[str, Any]] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._tags: dict[str, str] = {}
        self._layer_infos: dict[str, dict[str, Any]] = {}
        self.pinned: dict[str, int] = {}  # blobs/layers in use by pulls, loads and saves in flight
        self._pin_lock = threading.Lock()  # loads pin from their worker thread
        self.inflight: dict[str, Any] = {}  # key -> asyncio.Future shared by concurrent pulls
        self._load_metadata()
        self.gc()  # what a crash left half-way (blobs, layers no image references)

    @classmethod
    def from_settings(cls, settings: Any) -> ImageStore:
        """Build from the agent's Settings: images_dir, insecure_registries, registry_mirrors.

        The containers engine sets `store.in_use` afterwards (a callable image_id -> bool, or
        the ID of a container using it).
        """
        raw = getattr(settings, "raw", {}) or {}
        mirrors = raw.get("registry_mirrors") or raw.get("registry-mirrors") or []
        return cls(
            settings.images_dir,
            insecure_registries=list(settings.insecure_registries),
            registry_mirrors=[str(m) for m in mirrors] if isinstance(mirrors, list) else [],
            mirror_fallback=raw.get("registry_mirror_fallback", True) is not False,
        )

    @property
    def registry(self) -> RegistryClient:
        """The registry client, made on first use (http.client weighs on an idle agent)."""
        if self._registry is None:
            from .registry import RegistryClient

            self._registry = RegistryClient(self.insecure_registries)
        return self._registry

    def emit(self, action: str, actor: str, name: str = "") -> None:
        """An image event for `docker events` (pull, tag, untag, delete, load, save)."""
        if self.events is not None:
            self.events.publish("image", action, actor, {"name": name} if name else {})

    # -- paths and raw content -------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def layer_dir(self, diff_id: str) -> Path:
        return self.root / "layers" / diff_id.removeprefix("sha256:")

    def layer_info(self, diff_id: str) -> dict[str, Any]:
        """{diff_id, tar_size, size} of an extracted layer (sidecars never change: cached)."""
        info = self._layer_infos.get(diff_id)
        if info is not None:
            return info
        path = self.root / "layers" / (diff_id.removeprefix("sha256:") + ".json")
        try:
            info = dict(json.loads(path.read_bytes()))
        except (OSError, ValueError):
            return {"diff_id": diff_id, "tar_size": 0, "size": 0}
        self._layer_infos[diff_id] = info
        return info

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_dir(diff_id).is_dir()

    def install_layer(self, blob: Path, diff_id: str, work: Path, source: str) -> LayerInfo:
        """Extract a layer blob under `work`, check its diff_id, then move it into place.

        The sidecar is written before the rename, so a layer directory never exists
        without it; a concurrent install of the same layer that wins the rename is fine.
        """
        root = work / "root"
        root.mkdir()
        info = extract_layer(blob, root)
        if info.diff_id != diff_id:
            raise DigestMismatch(f"{source}: diff_id {info.diff_id} does not match config's {diff_id}")
        sidecar = {"diff_id": diff_id, "tar_size": info.tar_size, "size": info.size}
        write_atomic(self.root / "layers" / (diff_id.removeprefix("sha256:") + ".json"), json.dumps(sidecar).encode())
        try:
            os.rename(root, self.layer_dir(diff_id))
        except OSError:
            if not self.has_layer(diff_id):
                raise
        return info

    def temp_path(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix=prefix))

    def pin(self, *keys: str) -> None:
        with self._pin_lock:
            for k in keys:
                self.pinned[k] = self.pinned.get(k, 0) + 1

    def unpin(self, *keys: str) -> None:
        with self._pin_lock:
            self._unpin(keys)

    def _unpin(self, keys: tuple[str, ...]) -> None:
        for k in keys:
            n = self.pinned.get(k, 0) - 1
            if n <= 0:
                self.pinned.pop(k, None)
            else:
                self.pinned[k] = n

    # -- metadata ---------------------------------------------------------------------------

    def _load_metadata(self) -> None:
        for path in (self.root / "meta").glob("*.json"):
            try:
                meta = json.loads(path.read_bytes())
                config = json.loads(self.blob_path(meta["id"]).read_bytes())
            except (OSError, ValueError, KeyError):
                continue  # a record whose config is gone is no image; gc will drop it
            self._meta[meta["id"]] = meta
            self._configs[meta["id"]] = config
        try:
            tags = json.loads((self.root / "repositories.json").read_bytes()).get("tags", {})
        except (OSError, ValueError):
            tags = {}
        self._tags = {name: iid for name, iid in tags.items() if iid in self._meta}

    def _save_tags(self) -> None:
        data = json.dumps({"tags": self._tags}, indent=1, sort_keys=True).encode()
        write_atomic(self.root / "repositories.json", data)

    def _save_meta(self, meta: dict[str, Any]) -> None:
        write_atomic(self.root / "meta" / (meta["id"].removeprefix("sha256:") + ".json"), json.dumps(meta).encode())

    def commit_image(
        self, config_digest: str, config: dict[str, Any], layers: list[LayerRecord], repo_digest: str | None = None
    ) -> str:
        """Record an image whose blobs and layers are all in place; returns its ID."""
        meta = self._meta.get(config_digest) or {
            "id": config_digest,
            "layers": [vars(layer) for layer in layers],
            "repo_digests": [],
            "stored_at": time.time(),
        }
        if repo_digest and repo_digest not in meta["repo_digests"]:
            meta["repo_digests"].append(repo_digest)
        self._save_meta(meta)
        self._meta[config_digest] = meta
        self._configs[config_digest] = config
        return config_digest

    def set_tag(self, name: str, image_id: str) -> None:
        """Point a fully qualified tag at an image (moving it off any other)."""
        self._tags[name] = image_id
        self._meta[image_id]["stored_at"] = time.time()
        self._save_meta(self._meta[image_id])
        self._save_tags()

    # -- lookups -----------------------------------------------------------------------------

    def _image(self, image_id: str) -> Image:
        meta = self._meta[image_id]
        layers = [LayerRecord(**rec) for rec in meta["layers"]]
        names = sorted(n for n, i in self._tags.items() if i == image_id)
        return Image(
            id=image_id,
            config=self._configs[image_id],
            layers=layers,
            layer_dirs=[self.layer_dir(rec.diff_id) for rec in layers],
            repo_tags=[refs.parse(n).familiar() for n in names],
            repo_digests=[refs.parse(d).familiar() for d in meta["repo_digests"]],
            size=sum(int(self.layer_info(rec.diff_id).get("size", 0)) for rec in layers),
            stored_at=float(meta.get("stored_at", 0)),
            names=names,
        )

    def resolve(self, ref_or_id: str) -> str:
        """Image ID for a reference, a full ID, or an unambiguous ID prefix."""
        text = ref_or_id.removeprefix("sha256:") if ref_or_id.startswith("sha256:") else ref_or_id
        if text and len(text) <= 64 and all(c in "0123456789abcdef" for c in text):
            hits = [i for i in self._meta if i.removeprefix("sha256:").startswith(text)]
            if len(hits) == 1 and (len(text) == 64 or ref_or_id.startswith("sha256:") or not self._named(ref_or_id)):
                return hits[0]
        try:
            found = self._named(ref_or_id)
        except InvalidReference:
            found = None
        if found:
            return found
        try:  # Docker names what it could not find in its familiar form, tag included
            shown = refs.parse(ref_or_id).familiar() if not text.startswith("sha256:") else ref_or_id
        except InvalidReference:
            shown = ref_or_id
        raise ImageNotFound(shown)

    def _named(self, text: str) -> str | None:
        if text.startswith("sha256:"):
            return None
        ref = refs.parse(text)
        if ref.digest:
            want = f"{ref.repository}@{ref.digest}"
            for iid, meta in self._meta.items():
                if want in meta["repo_digests"]:
                    return iid
            return None
        return self._tags.get(str(ref))

    def get(self, ref_or_id: str) -> Image:
        """The image for a reference or ID; raises ImageNotFound."""
        return self._image(self.resolve(ref_or_id))

    def list(self, *, dangling: bool | None = None, reference: builtins.list[str] | None = None) -> builtins.list[Image]:
        images = [self._image(i) for i in self._meta]
        if dangling is not None:
            images = [im for im in images if (not im.repo_tags) == dangling]
        if reference:
            images = [im for im in images if any(_matches(im, pattern) for pattern in reference)]
        return sorted(images, key=lambda im: im.created, reverse=True)

    # -- tag, remove, prune -----------------------------------------------------------------

    def tag(self, source: str, repo: str, tag: str = "") -> None:
        image_id = self.resolve(source)
        target = refs.parse_repository(repo)
        if tag:
            if not refs.valid_tag(tag):
                raise InvalidReference("invalid tag format")
            target = target.with_tag(tag)
        elif target.tag is None:
            target = target.with_tag(refs.DEFAULT_TAG)
        self.set_tag(str(target), image_id)
        self.emit("tag", image_id, target.familiar())

    def remove(self, ref_or_id: str, *, force: bool = False, prune: bool = True) -> builtins.list[dict[str, str]]:
        """Docker's rmi: untag a reference, delete the image when nothing names it any more."""
        image_id = self.resolve(ref_or_id)
        image = self._image(image_id)
        user = self.in_use(image_id)
        by_name = not _is_id_like(ref_or_id, image_id)
        records: builtins.list[dict[str, str]] = []
        if by_name:
            ref = refs.parse(ref_or_id)
            if not user or force or not self._single_reference(image_id):
                records += self._untag(image_id, ref)
                if self._still_named(image_id):
                    return records
            else:
                cid = user if isinstance(user, str) else "(a container)"
                raise ImageConflict(
                    f'conflict: unable to remove repository reference "{ref_or_id}" (must force) - '
                    f"container {cid[:12]} is using its referenced image {image.short_id}"
                )
        elif len(image.names) > 1 and not force:
            raise ImageConflict(
                f"conflict: unable to delete {image.short_id} (must be forced) - "
                "image is referenced in multiple repositories"
            )
        if user:
            if not force:
                cid = f"container {user[:12]}" if isinstance(user, str) else "a container"
                raise ImageConflict(
                    f"conflict: unable to delete {image.short_id} (must be forced) - image is being used by {cid}"
                )
            return records + self._untag_all(image_id)  # the container keeps the layers
        records += self._untag_all(image_id)
        self._delete(image_id)
        records.append({"Deleted": image_id})
        if prune:
            self.gc()
        return records

    def _single_reference(self, image_id: str) -> bool:
        """Docker's rule: every reference in one repository, and at most one of them a tag."""
        names = [n for n, i in self._tags.items() if i == image_id]
        repos = {refs.parse(n).repository for n in names}
        repos |= {d.split("@")[0] for d in self._meta[image_id]["repo_digests"]}
        return len(names) <= 1 and len(repos) == 1

    def _still_named(self, image_id: str) -> bool:
        return any(i == image_id for i in self._tags.values())

    def _untag(self, image_id: str, ref: refs.Reference) -> builtins.list[dict[str, str]]:
        meta = self._meta[image_id]
        if ref.digest:
            full = f"{ref.repository}@{ref.digest}"
            if full in meta["repo_digests"]:
                meta["repo_digests"].remove(full)
                self._save_meta(meta)
                return [{"Untagged": ref.familiar()}]
            return []
        if self._tags.get(str(ref)) == image_id:
            del self._tags[str(ref)]
            self._save_tags()
            self.emit("untag", image_id, ref.familiar())
            out = [{"Untagged": ref.familiar()}]
            if not any(refs.parse(n).repository == ref.repository for n in self._tags if self._tags[n] == image_id):
                out += self._drop_digests(image_id, ref.repository)
            return out
        return []

    def _drop_digests(self, image_id: str, repository: str) -> builtins.list[dict[str, str]]:
        meta = self._meta[image_id]
        gone = [d for d in meta["repo_digests"] if d.startswith(repository + "@")]
        meta["repo_digests"] = [d for d in meta["repo_digests"] if d not in gone]
        self._save_meta(meta)
        return [{"Untagged": refs.parse(d).familiar()} for d in gone]

    def _untag_all(self, image_id: str) -> builtins.list[dict[str, str]]:
        out: builtins.list[dict[str, str]] = []
        for name in [n for n, i in self._tags.items() if i == image_id]:
            out += self._untag(image_id, refs.parse(name))
        meta = self._meta[image_id]
        out += [{"Untagged": refs.parse(d).familiar()} for d in meta["repo_digests"]]
        meta["repo_digests"] = []
        self._save_meta(meta)
        return out

    def _delete(self, image_id: str) -> None:
        self.emit("delete", image_id)
        del self._meta[image_id]
        self._configs.pop(image_id, None)
        with_suppress_unlink(self.root / "meta" / (image_id.removeprefix("sha256:") + ".json"))

    def prune(self, *, all_images: bool = False) -> tuple[builtins.list[dict[str, str]], int]:
        """Remove dangling images (all unused ones with all_images); returns records, bytes freed."""
        records: builtins.list[dict[str, str]] = []
        for image in self.list():
            if self.in_use(image.id) or (image.repo_tags and not all_images):
                continue
            records += self._untag_all(image.id)
            self._delete(image.id)
            records.append({"Deleted": image.id})
        return records, self.gc()

    def gc(self) -> int:
        """Delete blobs and layers no image references and no pull or load holds; returns the
        bytes of layer content freed (what `docker image prune` reports)."""
        freed = 0
        with self._pin_lock:
            keep = set(self.pinned)
        for meta in self._meta.values():
            keep.add(meta["id"])
            keep.update(meta.get("manifests", []))
            for rec in meta["layers"]:
                keep.update((rec["diff_id"], rec["digest"]))
        for path in (self.root / "blobs" / "sha256").iterdir():
            if "sha256:" + path.name not in keep:
                with_suppress_unlink(path)
        doomed = [p for p in (self.root / "layers").iterdir() if "sha256:" + p.name.removesuffix(".json") not in keep]
        for path in doomed:  # sizes first: a sidecar may go before its directory
            if path.suffix != ".json":
                freed += int(self.layer_info("sha256:" + path.name).get("size", 0))
        for path in doomed:
            self._layer_infos.pop("sha256:" + path.name.removesuffix(".json"), None)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with_suppress_unlink(path)
        return freed

    # -- pull, save, load, search (in their own modules) ------------------------------------

    async def pull(
        self, ref: str, progress: Progress | None = None, auth: dict[str, str] | None = None, platform: str | None = None
    ) -> Image:
        """Pull ref (default tag latest); progress gets Docker's JSON progress messages.

        auth: {"username", "password"} (as in X-Registry-Auth); platform: "linux/arm64".
        Raises RegistryError (not_found for unknown names), DigestMismatch, InvalidReference.
        """
        from .pull import pull

        return await pull(self, ref, progress or (lambda msg: None), auth, platform)

    async def pull_all_tags(self, repo: str, progress: Progress | None = None, auth: dict[str, str] | None = None) -> builtins.list[Image]:
        from .pull import pull_all_tags

        return await pull_all_tags(self, repo, progress or (lambda msg: None), auth)

    async def push(self, ref: str, progress: Progress | None = None, auth: dict[str, str] | None = None) -> str:
        """Push a local tag to its registry; returns the manifest digest."""
        from .push import push

        return await push(self, ref, progress or (lambda msg: None), auth)

    def save(self, names: builtins.list[str]) -> AsyncIterator[bytes]:
        from .archive import save

        return save(self, names)

    async def load(self, stream: BinaryIO | bytes) -> builtins.list[str]:
        """Load a docker-archive; returns the lines Docker prints ("Loaded image: x:y")."""
        from .archive import load

        return await load(self, stream)

    async def login(self, server: str, username: str, password: str) -> None:
        """`docker login`: check the credentials against the registry (nothing is stored here)."""
        from .pull import credentials
        from .search import registry_host_of

        creds = credentials({"username": username, "password": password})
        assert creds is not None
        await asyncio.to_thread(self.registry.login, registry_host_of(server), creds)

    async def search(self, term: str, limit: int = 25, auth: dict[str, str] | None = None) -> builtins.list[dict[str, Any]]:
        from .search import search

        return await search(self, term, limit, auth)


def _is_id_like(text: str, image_id: str) -> bool:
    bare = text.removeprefix("sha256:")
    return image_id.removeprefix("sha256:").startswith(bare) and all(c in "0123456789abcdef" for c in bare)


def _matches(image: Image, pattern: str) -> bool:
    import fnmatch

    for name in image.repo_tags:
        repo = name.rsplit(":", 1)[0]
        if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(repo, pattern):
            return True
    return False
