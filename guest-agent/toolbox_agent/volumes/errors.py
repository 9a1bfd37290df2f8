"""Errors of the volume store; api/volumes.py (and the container API) map each to its status."""

from __future__ import annotations


class VolumeError(Exception):
    """Base of the volume store's errors."""


class NoSuchVolume(VolumeError):  # 404
    def __init__(self, name: str) -> None:
        super().__init__(f"get {name}: no such volume")


class VolumeInUse(VolumeError):  # 409
    def __init__(self, name: str, users: list[str]) -> None:
        # Docker prints the users as Go prints a []string: "[id1 id2]"
        super().__init__(f"remove {name}: volume is in use - [{' '.join(users)}]")


class InvalidVolume(VolumeError):  # 400
    pass
