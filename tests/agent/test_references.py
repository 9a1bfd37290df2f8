"""Image references: Docker's parsing and normalization."""

from __future__ import annotations

import pytest

from toolbox_agent.images import InvalidReference
from toolbox_agent.images.reference import parse, parse_repository


@pytest.mark.parametrize(
    ("text", "full", "familiar", "host"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest", "registry-1.docker.io"),
        ("learn/tutorial", "docker.io/learn/tutorial:latest", "learn/tutorial:latest", "registry-1.docker.io"),
        ("docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36", "registry-1.docker.io"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest", "registry-1.docker.io"),
        ("127.0.0.1:5000/learn/tutorial", "127.0.0.1:5000/learn/tutorial:latest", "127.0.0.1:5000/learn/tutorial:latest", "127.0.0.1:5000"),
        ("localhost/x", "localhost/x:latest", "localhost/x:latest", "localhost"),
        ("quay.io/a/b/c:v1.2-rc_3", "quay.io/a/b/c:v1.2-rc_3", "quay.io/a/b/c:v1.2-rc_3", "quay.io"),
        ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io"),
        ("host:5000/r:t@sha256:" + "b" * 64, "host:5000/r:t@sha256:" + "b" * 64, "host:5000/r:t@sha256:" + "b" * 64, "host:5000"),
        ("a__b_c-d---e/f.g", "docker.io/a__b_c-d---e/f.g:latest", "a__b_c-d---e/f.g:latest", "registry-1.docker.io"),
    ],
)
def test_parse_normalizes(text: str, full: str, familiar: str, host: str) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert ref.registry_host == host


def test_parts() -> None:
    ref = parse("127.0.0.1:5000/learn/tutorial:v2")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("127.0.0.1:5000", "learn/tutorial", "v2", None)
    assert ref.reference == "v2"
    digest = "sha256:" + "c" * 64
    assert parse(f"busybox@{digest}").reference == digest
    assert parse(f"busybox@{digest}").tag is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid reference format"),
        ("Bad::ref", "invalid reference format"),
        ("busybox:", "invalid reference format"),
        ("busybox:-bad", "invalid reference format"),
        ("a//b", "invalid reference format"),
        ("-a/b", "invalid reference format"),
        ("busybox@sha256:short", "invalid reference format"),
        (" busybox", "invalid reference format"),
        ("UPPER", "invalid reference format: repository name (library/UPPER) must be lowercase"),
        ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
        ("x/" + "y" * 260, "invalid reference format"),
    ],
)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


def test_repository_only() -> None:
    assert str(parse_repository("mine/bb")) == "docker.io/mine/bb"
    with pytest.raises(InvalidReference):
        parse_repository("x@sha256:" + "d" * 64)
