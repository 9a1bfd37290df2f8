"""The versions the agent reports."""

from __future__ import annotations

AGENT_VERSION = "0.1.0"
API_VERSION = "1.44"  # what `docker` 28 negotiates down to
MIN_API_VERSION = "1.24"
ENGINE_NAME = "toolbox"
