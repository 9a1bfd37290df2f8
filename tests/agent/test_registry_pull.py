"""Pulling from Debian's docker-registry on loopback: digests, whiteouts, sharing, failures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.registry import (
    Entry,
    RegistryServer,
    ThrottleProxy,
    TokenAuthProxy,
    busybox_layer,
    files_layer,
    make_image,
    publish_defaults,
    push,
    push_index,
    tar_layer,
)

from toolbox_agent.images import DigestMismatch, ImageNotFound, ImageStore, RegistryError
from toolbox_agent.images.layers import OPAQUE_XATTR


def snapshot(root: Path) -> list[str]:
    """Every path under the store (what a failed pull must leave exactly as it was)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def pull(store: ImageStore, ref: str, messages: list[dict[str, Any]] | None = None) -> Any:
    sink = messages.append if messages is not None else None
    return asyncio.run(store.pull(ref, sink))


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


@pytest.fixture
def own_registry() -> Iterator[RegistryServer]:
    """A registry of the test's own, for tests that tamper with it or kill it."""
    with RegistryServer() as reg:
        yield reg


def test_pull_schema2(registry: RegistryServer, store: ImageStore) -> None:
    messages: list[dict[str, Any]] = []
    image = pull(store, f"{registry.host}/learn/tutorial", messages)
    assert image.repo_tags == [f"{registry.host}/learn/tutorial:latest"]
    manifest_digest = "sha256:" + hashlib.sha256(
        (Path(registry.root) / "data/docker/registry/v2/repositories/learn/tutorial/_manifests/tags/latest/current/link").read_bytes()
    ).hexdigest()
    assert len(image.repo_digests) == 1 and image.repo_digests[0].startswith(f"{registry.host}/learn/tutorial@sha256:")
    assert manifest_digest  # the tag's link file exists
    assert image.config["config"]["Cmd"] == ["sh"]
    assert [d.exists() for d in image.layer_dirs] == [True, True]
    assert (image.layer_dirs[0] / "bin/busybox").stat().st_mode & 0o111
    assert os.readlink(image.layer_dirs[0] / "bin/sh") == "busybox"
    assert (image.layer_dirs[1] / "etc/motd").read_text() == "Welcome to the tutorial\n"
    assert image.size > 1_000_000
    statuses = [m["status"] for m in messages]
    assert statuses[0] == "Pulling from learn/tutorial" and messages[0]["id"] == "latest"
    assert statuses.count("Pull complete") == 2 and "Downloading" in statuses
    assert statuses[-2].startswith("Digest: sha256:")
    assert statuses[-1] == f"Status: Downloaded newer image for {registry.host}/learn/tutorial:latest"
    for m in messages:
        if m["status"] == "Downloading":
            assert 0 < m["progressDetail"]["current"] <= m["progressDetail"]["total"]
    again: list[dict[str, Any]] = []
    assert pull(store, f"{registry.host}/learn/tutorial:latest", again).id == image.id
    assert again[-1]["status"] == f"Status: Image is up to date for {registry.host}/learn/tutorial:latest"
    assert os.listdir(store.root / "tmp") == []
    # a fresh store (an agent restart) sees the same image
    assert ImageStore(store.root).get(f"{registry.host}/learn/tutorial").id == image.id


def test_index_platform_and_shared_layers(registry: RegistryServer, store: ImageStore) -> None:
    tutorial = pull(store, f"{registry.host}/learn/tutorial")
    messages: list[dict[str, Any]] = []
    busybox = pull(store, f"{registry.host}/busybox", messages)
    assert busybox.config["architecture"] == "amd64"
    assert busybox.layer_dirs[0] == tutorial.layer_dirs[0]  # the busybox layer is stored once
    assert {"status": "Already exists", "progressDetail": {}, "id": busybox.layers[0].digest[7:19]} in messages
    index_digest = busybox.repo_digests[0].split("@")[1]
    assert store.get(f"{registry.host}/busybox@{index_digest}").id == busybox.id
    assert store.get(busybox.id[7:19]).id == busybox.id


def test_mirror_serves_docker_hub_names(registry: RegistryServer, tmp_path: Path) -> None:
    store = ImageStore(tmp_path, registry_mirrors=[registry.url], mirror_fallback=False)
    image = pull(store, "busybox")
    assert image.repo_tags == ["busybox:latest"]
    assert image.repo_digests[0].startswith("busybox@sha256:")
    assert store.get("docker.io/library/busybox:latest").id == image.id
    results = asyncio.run(store.search("tutorial"))
    assert results == [{"name": "learn/tutorial", "description": "", "star_count": 0, "is_official": False, "is_automated": False}]
    names = {r["name"] for r in asyncio.run(store.search(f"{registry.host}/busy"))}
    assert names == {f"{registry.host}/busybox", f"{registry.host}/library/busybox"}


def test_whiteouts_become_overlay_whiteouts(registry: RegistryServer, store: ImageStore) -> None:
    base = tar_layer([Entry("a", kind="dir"), Entry("a/x", b"x"), Entry("a/y", b"y"), Entry("b", b"b"),
                      Entry("c", kind="dir"), Entry("c/old", b"old"), Entry("h1", b"same"), Entry("h2", kind="hardlink", target="h1")])
    top = tar_layer([Entry("a", kind="dir"), Entry("a/x", kind="whiteout"), Entry("b", kind="whiteout"),
                     Entry("c", kind="dir"), Entry("c", kind="opaque"), Entry("c/new", b"new", mode=0o4755, uid=1000)])
    push(registry, "test/whiteouts:1", make_image([base, top], compression="zstd"))
    image = pull(store, f"{registry.host}/test/whiteouts:1")
    lower, upper = image.layer_dirs
    assert os.stat(lower / "h1").st_ino == os.stat(lower / "h2").st_ino
    for name in ("a/x", "b"):
        st = os.lstat(upper / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (upper / "a/.wh.x").exists() and not (upper / "c/.wh..wh..opq").exists()
    assert os.getxattr(upper / "c", OPAQUE_XATTR) == b"y"
    with pytest.raises(OSError):
        os.getxattr(upper / "a", OPAQUE_XATTR)
    st = os.stat(upper / "c/new")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_uid == 1000


def test_oci_uncompressed_and_docker_manifest_list(registry: RegistryServer, store: ImageStore) -> None:
    plain = make_image([busybox_layer(), files_layer({"plain": b"1"})], compression="none", oci=True)
    push(registry, "test/plain:1", plain)
    assert pull(store, f"{registry.host}/test/plain:1").id == plain.id
    listed = make_image([files_layer({"listed": b"2"})])
    push_index(registry, "/test/listed:1", listed, make_image([files_layer({"arm": b"3"})], arch="arm64"), docker_list=True)
    assert pull(store, f"{registry.host}/test/listed:1").id == listed.id


def test_concurrent_pulls_store_once(own_registry: RegistryServer, tmp_path: Path) -> None:
    layers = [files_layer({f"f{i}": os.urandom(300_000)}) for i in range(3)]
    image = make_image(layers)
    push(own_registry, "test/concurrent:1", image)
    store = ImageStore(tmp_path)

    async def both() -> list[Any]:
        ref = f"{own_registry.host}/test/concurrent:1"
        return list(await asyncio.gather(store.pull(ref), store.pull(ref), store.pull(ref)))

    results = asyncio.run(both())
    assert {r.id for r in results} == {image.id}
    fetched = own_registry.blob_requests()
    for blob in image.layers:
        assert sum(blob.digest in path for path in fetched) == 1
    assert len(list((tmp_path / "layers").glob("*.json"))) == 3


def test_corrupted_blob_is_refused(own_registry: RegistryServer, tmp_path: Path) -> None:
    image = make_image([busybox_layer(), files_layer({"x": b"x" * 1000})])
    push(own_registry, "test/corrupt:1", image)
    victim = own_registry.blob_path(image.layers[0].digest)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    store = ImageStore(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(DigestMismatch):
        pull(store, f"{own_registry.host}/test/corrupt:1")
    assert snapshot(tmp_path) == before
    with pytest.raises(ImageNotFound):
        store.get(f"{own_registry.host}/test/corrupt:1")


def test_diff_id_mismatch_is_refused(own_registry: RegistryServer, tmp_path: Path) -> None:
    good = make_image([files_layer({"a": b"a"})])
    liar = make_image([files_layer({"b": b"b"})])
    liar.layers = good.layers  # the config's diff_id no longer matches the layer
    liar.manifest.data = liar.manifest.data.replace(liar.layers[0].digest.encode(), good.layers[0].digest.encode())
    manifest = json.loads(liar.manifest.data)
    manifest["layers"] = [good.layers[0].descriptor()]
    liar.manifest.data = json.dumps(manifest).encode()
    push(own_registry, "test/liar:1", liar)
    store = ImageStore(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(DigestMismatch, match="diff_id"):
        pull(store, f"{own_registry.host}/test/liar:1")
    assert snapshot(tmp_path) == before


def test_registry_down_before_layers(own_registry: RegistryServer, tmp_path: Path) -> None:
    push(own_registry, "test/down:1", make_image([busybox_layer()]))
    store = ImageStore(tmp_path)
    before = snapshot(tmp_path)

    def kill_on_layers(msg: dict[str, Any]) -> None:
        if msg["status"] == "Pulling from test/down":
            own_registry.kill()

    with pytest.raises(RegistryError):
        asyncio.run(store.pull(f"{own_registry.host}/test/down:1", kill_on_layers))
    assert snapshot(tmp_path) == before


def test_registry_killed_mid_blob(own_registry: RegistryServer, tmp_path: Path) -> None:
    big = files_layer({"big": os.urandom(16 * 1024 * 1024)})
    push(own_registry, "test/big:1", make_image([busybox_layer(), big], compression="none"))
    store = ImageStore(tmp_path)
    before = snapshot(tmp_path)

    def kill_while_downloading(msg: dict[str, Any]) -> None:
        detail = msg.get("progressDetail") or {}
        if msg["status"] == "Downloading" and detail["total"] > 1_000_000 and detail["current"] > 2_000_000:
            own_registry.kill()

    with ThrottleProxy(own_registry, rate=8 * 1024 * 1024) as proxy:
        with pytest.raises(RegistryError, match="error pulling blob|bytes, expected"):
            asyncio.run(store.pull(f"{proxy.host}/test/big:1", kill_while_downloading))
    assert snapshot(tmp_path) == before


def test_unknown_image(registry: RegistryServer, store: ImageStore) -> None:
    with pytest.raises(RegistryError, match=f"manifest for {registry.host}/nosuch:latest not found: manifest unknown"):
        pull(store, f"{registry.host}/nosuch")


def test_defaults_published(registry: RegistryServer) -> None:
    assert publish_defaults  # learn/tutorial and busybox are in the session registry
    assert registry.blob_requests() is not None


def test_bearer_token_auth_and_redirects(registry: RegistryServer, tmp_path: Path) -> None:
    with TokenAuthProxy(registry) as proxy:
        store = ImageStore(tmp_path)
        image = pull(store, f"{proxy.host}/learn/tutorial")
        assert image.repo_tags == [f"{proxy.host}/learn/tutorial:latest"]
        scopes = [q.get("scope") for q in proxy.token_requests]
        assert scopes == ["repository:learn/tutorial:pull"]  # one token, cached for every request
        assert all(q.get("service") == TokenAuthProxy.SERVICE for q in proxy.token_requests)
        assert proxy.leaked_auth == []  # the redirect to another host carried no credentials


def test_basic_credentials_for_the_token(registry: RegistryServer, tmp_path: Path) -> None:
    with TokenAuthProxy(registry, basic=("alice", "s3cret")) as proxy:
        store = ImageStore(tmp_path)
        with pytest.raises(RegistryError, match="pull access denied"):
            pull(store, f"{proxy.host}/learn/tutorial")
        image = asyncio.run(store.pull(f"{proxy.host}/learn/tutorial", None, {"username": "alice", "password": "s3cret"}))
        assert image.config["config"]["Cmd"] == ["sh"]


def test_pull_by_digest(registry: RegistryServer, store: ImageStore) -> None:
    by_tag = pull(ImageStore(store.root.parent / "other"), f"{registry.host}/learn/tutorial")
    digest = by_tag.repo_digests[0].split("@")[1]
    messages: list[dict[str, Any]] = []
    image = pull(store, f"{registry.host}/learn/tutorial@{digest}", messages)
    assert image.id == by_tag.id and image.repo_tags == []
    assert image.repo_digests == [f"{registry.host}/learn/tutorial@{digest}"]
    assert messages[0] == {"status": "Pulling from learn/tutorial", "id": digest}
    assert store.list(dangling=True)[0].id == image.id
    assert store.remove(f"{registry.host}/learn/tutorial@{digest}") == [
        {"Untagged": f"{registry.host}/learn/tutorial@{digest}"}, {"Deleted": image.id}]
    with pytest.raises(RegistryError, match="not found: manifest unknown"):
        pull(store, f"{registry.host}/learn/tutorial@sha256:{'0' * 64}")


def test_overlay_mount_honours_whiteouts(registry: RegistryServer, store: ImageStore, tmp_path: Path) -> None:
    import subprocess

    base = tar_layer([Entry("a", kind="dir"), Entry("a/x", b"x"), Entry("a/y", b"y"), Entry("c", kind="dir"), Entry("c/old", b"o")])
    top = tar_layer([Entry("a/x", kind="whiteout"), Entry("c", kind="opaque"), Entry("c/new", b"n")])
    push(registry, "test/overlay:1", make_image([base, top]))
    image = pull(store, f"{registry.host}/test/overlay:1")
    merged, upper, work = (tmp_path / n for n in ("merged", "upper", "work"))
    for d in (merged, upper, work):
        d.mkdir()
    lower = ":".join(str(d) for d in reversed(image.layer_dirs))
    res = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"overlayfs unavailable here: {res.stderr.strip()}")
    try:
        assert sorted(os.listdir(merged / "a")) == ["y"]
        assert sorted(os.listdir(merged / "c")) == ["new"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_basic_auth_registry(tmp_path: Path) -> None:
    with RegistryServer(htpasswd=("bob", "hunter2")) as reg:
        push(reg, "private/app:1", make_image([files_layer({"p": b"private"})]))
        store = ImageStore(tmp_path)
        with pytest.raises(RegistryError, match="pull access denied"):
            pull(store, f"{reg.host}/private/app:1")
        image = asyncio.run(store.pull(f"{reg.host}/private/app:1", None, {"username": "bob", "password": "hunter2"}))
        assert image.repo_tags == [f"{reg.host}/private/app:1"]
        with pytest.raises(RegistryError, match="unauthorized"):
            asyncio.run(store.login(f"http://{reg.host}/", "bob", "wrong"))
        asyncio.run(store.login(reg.host, "bob", "hunter2"))


def test_published_whiteout_image(registry: RegistryServer, store: ImageStore) -> None:
    image = pull(store, f"{registry.host}/test/whiteouts")
    top = image.layer_dirs[-1]
    assert stat.S_ISCHR(os.lstat(top / "data/gone").st_mode)
    assert os.getxattr(top / "data/opaque", OPAQUE_XATTR) == b"y"
