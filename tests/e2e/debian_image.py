"""A Debian image whose apt installs from a repository the test serves on the host's loopback.

tests/images/build-debian (run by scripts/test, before pytest) fetches everything from
Debian's archive once and caches it: a minimal bookworm root as one zstd layer, and a flat
apt repository of iputils-ping and what it needs beyond that root. Tests never build it;
they take it from the cache:

    build = debian_build()                        # the cached result's directory
    repo = FileServer(build / "repo")             # 127.0.0.1:<port>, 10.0.2.2:<port> in the VM
    image = debian_image(build, repo.port)        # the root + sources.list and apt lists
    push(registry, "learn/tutorial:latest", image)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from registry import LAYER_TYPES, Blob, BuiltImage, Entry, assemble_image, compress, tar_layer

from toolbox_cli import REPO

BUILDER = REPO / "tests" / "images" / "build-debian"
GUEST = "10.0.2.2"  # the host's loopback, seen from the guest (QEMU user networking)


def debian_build() -> Path:
    """The builder's cached result; fails (skips outside CI) when it was never built."""
    out = subprocess.run([str(BUILDER), "--cached-only"], capture_output=True, text=True, timeout=60)
    if out.returncode == 0:
        return Path(out.stdout.strip())
    if os.environ.get("TOOLBOX_REQUIRE_E2E") == "1":
        pytest.fail(out.stderr.strip())
    pytest.skip(out.stderr.strip())


def lists_name(host: str, port: int, name: str) -> str:
    """apt's file name in /var/lib/apt/lists for `name` of the flat repository
    `deb http://HOST:PORT/ ./` (the URI without its scheme, '/' turned into '_')."""
    return f"{host}:{port}_._{name}"


def apt_layer(build: Path, port: int) -> bytes:
    """sources.list naming the loopback repository, and its index already in apt's lists,
    so that `apt-get install` works as typed, without `apt-get update` first."""
    repo = build / "repo"
    lists = "var/lib/apt/lists"
    entries = [Entry(d, kind="dir") for d in ("etc", "etc/apt", "var", "var/lib", "var/lib/apt", lists)]
    entries.append(Entry("etc/apt/sources.list", f"deb [trusted=yes] http://{GUEST}:{port}/ ./\n".encode()))
    for name in ("Packages", "Release"):
        entries.append(Entry(f"{lists}/{lists_name(GUEST, port, name)}", (repo / name).read_bytes()))
    return tar_layer(entries)


def debian_image(build: Path, port: int) -> BuiltImage:
    """The cached root (zstd, as built) plus the apt layer (gzip), as an OCI image."""
    root = Blob(LAYER_TYPES[("oci", "zstd")], (build / "root.tar.zst").read_bytes())
    top = apt_layer(build, port)
    top_blob = Blob(LAYER_TYPES[("oci", "gzip")], compress(top, "gzip"))
    diff_ids = [(build / "root.diffid").read_text().strip(), "sha256:" + hashlib.sha256(top).hexdigest()]
    return assemble_image([root, top_blob], diff_ids, oci=True, cmd=["bash"])
