"""The reliability suite's fixtures: the e2e suite's booted-VM fixtures, re-exported, and
the fault tally printed at the end of the run.

pytest scopes a conftest's fixtures to its directory, so tests/e2e/conftest.py's are not
seen here unless imported. Imported, they are a second registration: when tests/e2e and
tests/reliability run in one session, this suite boots its own instance (named "e2e", in
its own TOOLBOX_HOME) rather than sharing the e2e suite's. That is what these tests want
anyway: they kill its QEMU, race commands on it and edit its pinned key. Within this
directory every test shares that one instance and leaves it running.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # the e2e helpers import by name

from e2e.conftest import release_server, toolbox_vm  # noqa: E402, F401  (fixtures)
from tally import TALLY, tally  # noqa: E402, F401  (tally is a fixture)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY.rows:
        terminalreporter.section("reliability tally")
        terminalreporter.write_line(TALLY.render())
