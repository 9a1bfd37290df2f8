"""Errors of the image engine. They carry no HTTP status: api/images.py maps them."""

from __future__ import annotations


class ImageError(Exception):
    """Base of every error the image engine raises."""


class InvalidReference(ImageError):
    """A malformed image reference; the message is Docker's ("invalid reference format...")."""


class ImageNotFound(ImageError):
    """No image matches the reference or ID."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"No such image: {ref}")
        self.ref = ref


class ImageConflict(ImageError):
    """The operation would break an image in use (or needs force)."""


class RegistryError(ImageError):
    """A registry refused or failed a request; `not_found` marks unknown names/manifests."""

    def __init__(self, message: str, *, not_found: bool = False, status: int = 0) -> None:
        super().__init__(message)
        self.not_found = not_found
        self.status = status  # the registry's HTTP status, 0 when it never answered


class DigestMismatch(RegistryError):
    """Content did not hash to the digest it was announced with."""


class ArchiveError(ImageError):
    """A `docker save` archive could not be read."""
