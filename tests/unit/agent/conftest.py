from __future__ import annotations
import sys
from pathlib import Path as _P

sys.path.insert(0, str(_P(__file__).parent))

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_harness import AgentThread


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentThread]:
    with AgentThread(tmp_path) as running:
        yield running
