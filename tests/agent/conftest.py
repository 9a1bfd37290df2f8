"""Host-side tests of the guest agent: make `toolbox_agent` and the shared e2e fixtures importable."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for p in (REPO / "guest-agent", REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from e2e.registry import registry  # noqa: E402,F401  (the session-wide registry fixture)
