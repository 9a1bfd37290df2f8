"""Errors of the container engine; api/containers.py maps each to its HTTP status."""

from __future__ import annotations


class ContainerError(Exception):
    """Base of the container engine's errors."""


class NoSuchContainer(ContainerError):  # 404
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such container: {ref}")


class NoSuchExec(ContainerError):  # 404
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such exec instance: {ref}")


class Conflict(ContainerError):  # 409
    pass


class InvalidParameter(ContainerError):  # 400
    pass


class NotModified(ContainerError):  # 304: already started / already stopped
    pass
