"""Errors of the network engine, each with the HTTP status Docker gives it."""

from __future__ import annotations


class NetworkError(Exception):
    status = 500


class NetworkNotFound(NetworkError):
    status = 404

    def __init__(self, ref: str) -> None:
        super().__init__(f"network {ref} not found")


class PluginNotFound(NetworkError):
    status = 404


class InvalidNetworkParameter(NetworkError):
    status = 400


class NetworkForbidden(NetworkError):
    status = 403


class NetworkConflict(NetworkError):
    status = 409


class PortAllocated(NetworkError):
    """Docker answers 500 with the endpoint named; the CLI prints it as is."""

    status = 500
