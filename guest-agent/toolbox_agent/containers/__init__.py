"""Containers: the engine (crun + overlayfs + a monitor per container), no HTTP here."""

from __future__ import annotations

from toolbox_agent.containers.engine import ContainerEngine

__all__ = ["ContainerEngine"]
