"""Docker image references: parse, validate, normalize (`busybox` -> docker.io/library/busybox:latest).

The grammar follows the distribution project's reference grammar (written here from its spec):
domain[:port]/path-components[:tag][@digest], with Docker's normalization of the default
registry and of official images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
DEFAULT_REGISTRY_HOST = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
NAME_MAX = 255


@dataclass(frozen=True)
class Reference:
    """A normalized reference. `tag` is None only when a digest alone names the image."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """Fully qualified name without tag/digest: docker.io/library/busybox."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self) -> str:
        """The short form Docker shows: busybox, learn/tutorial, 127.0.0.1:5000/x."""
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        return self.path.removeprefix(OFFICIAL_PREFIX)

    @property
    def registry_host(self) -> str:
        """host[:port] to contact for this repository."""
        return DEFAULT_REGISTRY_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def familiar(self) -> str:
        return self.familiar_repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalize; adds the `latest` tag when neither tag nor digest is given."""
    if not text or text != text.strip():
        raise InvalidReference("invalid reference format")
    name, digest = text, None
    if "@" in text:
        name, _, digest = text.partition("@")
        if not _DIGEST.match(digest):
            raise InvalidReference("invalid reference format")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReference("invalid reference format")
    if _HEX64.match(name):
        raise InvalidReference(
            f"invalid repository name ({name}), cannot specify 64-byte hexadecimal strings"
        )
    domain, path = _split_domain(name)
    if not _DOMAIN.match(domain):
        raise InvalidReference("invalid reference format")
    if not _PATH.match(path.lower()) or len(f"{domain}/{path}") > NAME_MAX:
        raise InvalidReference("invalid reference format")
    if path.lower() != path:
        raise InvalidReference(f"invalid reference format: repository name ({path}) must be lowercase")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def parse_repository(text: str) -> Reference:
    """A repository name alone (as in `docker tag`'s repo=); no tag or digest allowed."""
    ref = parse(text, default_tag=False)
    if ref.digest:
        raise InvalidReference("invalid reference format")
    return ref


def valid_tag(tag: str) -> bool:
    return bool(_TAG.match(tag))


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))
