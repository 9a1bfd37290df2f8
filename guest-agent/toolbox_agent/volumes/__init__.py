"""Named and anonymous volumes (driver "local"): directories on the data disk that outlive
the containers mounting them. No HTTP here: api/volumes.py serves them."""

from __future__ import annotations

from toolbox_agent.volumes.errors import InvalidVolume, NoSuchVolume, VolumeError, VolumeInUse
from toolbox_agent.volumes.store import ANONYMOUS_LABEL, Volume, VolumeStore

__all__ = ["ANONYMOUS_LABEL", "InvalidVolume", "NoSuchVolume", "Volume", "VolumeError", "VolumeInUse", "VolumeStore"]
