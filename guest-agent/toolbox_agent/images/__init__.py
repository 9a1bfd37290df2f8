"""The agent's image side: references, registry client, image store (pull, save/load, search)."""

from __future__ import annotations

from .errors import ArchiveError, DigestMismatch, ImageConflict, ImageError, ImageNotFound, InvalidReference, RegistryError
from .model import Image, LayerRecord
from .store import ImageStore

__all__ = [
    "ArchiveError",
    "DigestMismatch",
    "Image",
    "ImageConflict",
    "ImageError",
    "ImageNotFound",
    "ImageStore",
    "InvalidReference",
    "LayerRecord",
    "RegistryError",
]
