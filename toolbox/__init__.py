"""toolbox: Linux containers on a Mac, through a small Linux VM looked after from the host."""

from __future__ import annotations

__version__ = "0.1.0"
