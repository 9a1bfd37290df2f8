"""ImageStore bookkeeping: tags, rmi semantics with images in use, gc, restart and crash leftovers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from e2e.registry import RegistryServer

from toolbox_agent.images import ArchiveError, ImageConflict, ImageNotFound, ImageStore, InvalidReference


def pulled(registry: RegistryServer, root: Path, *names: str) -> ImageStore:
    store = ImageStore(root)
    for name in names:
        asyncio.run(store.pull(f"{registry.host}/{name}"))
    return store


def test_tag_and_lookup(registry: RegistryServer, tmp_path: Path) -> None:
    store = pulled(registry, tmp_path, "busybox")
    image = store.get(f"{registry.host}/busybox")
    store.tag(image.id, "mine/bb", "v1")
    store.tag(f"{registry.host}/busybox:latest", "mine/other")
    assert store.get("mine/bb:v1").id == store.get("docker.io/mine/other:latest").id == image.id
    assert sorted(store.get(image.id).repo_tags) == sorted([f"{registry.host}/busybox:latest", "mine/bb:v1", "mine/other:latest"])
    with pytest.raises(InvalidReference):
        store.tag(image.id, "mine/BB")
    with pytest.raises(ImageNotFound, match="No such image: nothere:latest"):
        store.get("nothere:latest")
    assert [im.id for im in store.list(reference=["mine/*"])] == [image.id]
    assert store.list(dangling=True) == []


def test_remove_in_use(registry: RegistryServer, tmp_path: Path) -> None:
    store = pulled(registry, tmp_path, "busybox")
    image = store.get(f"{registry.host}/busybox")
    store.in_use = lambda image_id: "c0ffee" * 10 if image_id == image.id else None
    with pytest.raises(ImageConflict, match="container c0ffeec0ffee is using its referenced image"):
        store.remove(f"{registry.host}/busybox")
    with pytest.raises(ImageConflict, match="must be forced"):
        store.remove(image.id)
    records = store.remove(image.id, force=True)
    assert {"Untagged": f"{registry.host}/busybox:latest"} in records
    assert not any("Deleted" in r for r in records)  # the container still needs its layers
    assert all(d.is_dir() for d in store.get(image.id).layer_dirs)
    store.in_use = lambda image_id: False
    records = store.remove(image.id)
    assert records == [{"Deleted": image.id}]
    assert not any((tmp_path / "layers").iterdir()) and not any((tmp_path / "blobs/sha256").iterdir())


def test_remove_keeps_shared_layers(registry: RegistryServer, tmp_path: Path) -> None:
    store = pulled(registry, tmp_path, "busybox", "learn/tutorial")
    tutorial = store.get(f"{registry.host}/learn/tutorial")
    store.tag(tutorial.id, "second")
    assert store.remove(f"{registry.host}/learn/tutorial") == [
        {"Untagged": f"{registry.host}/learn/tutorial:latest"},
        {"Untagged": f"{registry.host}/learn/tutorial@{tutorial.repo_digests[0].split('@')[1]}"},
    ]
    with pytest.raises(ImageConflict, match="referenced in multiple repositories"):
        store.tag(tutorial.id, "third") or store.remove(tutorial.id)
    records = store.remove(tutorial.id, force=True)
    assert records[-1] == {"Deleted": tutorial.id}
    busybox = store.get(f"{registry.host}/busybox")
    assert all(d.is_dir() for d in busybox.layer_dirs)
    assert not tutorial.layer_dirs[1].exists()


def test_restart_and_crash_leftovers(registry: RegistryServer, tmp_path: Path) -> None:
    store = pulled(registry, tmp_path, "learn/tutorial")
    image_id = store.get(f"{registry.host}/learn/tutorial").id
    (tmp_path / "tmp" / "blob-x").mkdir()
    (tmp_path / "layers" / ("ab" * 32)).mkdir()
    (tmp_path / "blobs/sha256" / ("cd" * 32)).write_bytes(b"orphan")
    again = ImageStore(tmp_path)
    assert again.get(f"{registry.host}/learn/tutorial:latest").id == image_id
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not (tmp_path / "layers" / ("ab" * 32)).exists()
    assert not (tmp_path / "blobs/sha256" / ("cd" * 32)).exists()


def test_prune(registry: RegistryServer, tmp_path: Path) -> None:
    store = pulled(registry, tmp_path, "busybox", "learn/tutorial")
    tutorial = store.get(f"{registry.host}/learn/tutorial")
    store.remove(f"{registry.host}/learn/tutorial", force=True)  # nothing uses it: deleted outright
    assert store.prune() == ([], 0)
    busybox = store.get(f"{registry.host}/busybox")
    records, freed = store.prune(all_images=True)
    assert freed == busybox.size  # each layer counted once
    assert [r for r in records if "Deleted" in r] and store.list() == []
    assert tutorial.id not in {im.id for im in store.list()}


def test_events(registry: RegistryServer, tmp_path: Path) -> None:
    seen: list[tuple[str, str, str, dict[str, str]]] = []

    class Bus:
        def publish(self, type_: str, action: str, id_: str, attributes: dict[str, str] | None = None) -> None:
            seen.append((type_, action, id_, attributes or {}))

    store = ImageStore(tmp_path)
    store.events = Bus()
    image = asyncio.run(store.pull(f"{registry.host}/busybox"))
    store.tag(image.id, "ev/x")
    store.remove("ev/x")
    store.remove(image.id)
    actions = [(a, i) for _, a, i, _ in seen]
    assert actions == [("pull", f"{registry.host}/busybox:latest"), ("tag", image.id), ("untag", image.id),
                       ("untag", image.id), ("delete", image.id)]


def test_save_load_and_oci_layout(registry: RegistryServer, tmp_path: Path) -> None:
    import io
    import json
    import tarfile

    store = pulled(registry, tmp_path / "a", "learn/tutorial")
    image = store.get(f"{registry.host}/learn/tutorial")

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in store.save([f"{registry.host}/learn/tutorial"])])

    archive = asyncio.run(collect())
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest[0]["RepoTags"] == [f"{registry.host}/learn/tutorial:latest"]
        assert manifest[0]["Layers"] == [f"blobs/sha256/{rec.diff_id[7:]}" for rec in image.layers]
    other = ImageStore(tmp_path / "b")
    assert asyncio.run(other.load(archive)) == [f"Loaded image: {registry.host}/learn/tutorial:latest"]
    assert other.get(f"{registry.host}/learn/tutorial").id == image.id
    # the same archive without manifest.json: a plain OCI layout, named by its index annotations
    stripped = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=stripped, mode="w") as dst:
        for member in src:
            if member.name not in ("manifest.json", "repositories"):
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    third = ImageStore(tmp_path / "c")
    assert asyncio.run(third.load(stripped.getvalue())) == [f"Loaded image: {registry.host}/learn/tutorial:latest"]
    assert [d.name for d in third.get(image.id).layer_dirs] == [rec.diff_id[7:] for rec in image.layers]
    with pytest.raises(ArchiveError):
        asyncio.run(third.load(b"not a tar"))
