"""The Vagrantfile (a Debian box in which a macOS developer runs `make -C vm-image`)
must stay valid: checked by Vagrant itself, offline, without a provider."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _validate(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=directory, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(directory), "VAGRANT_CHECKPOINT_DISABLE": "1"},
    )


@pytest.fixture
def vagrant() -> None:
    if shutil.which("vagrant") is None:
        pytest.fail("vagrant is not installed: run ./scripts/setup")


def test_vagrantfile_validates(vagrant: None, tmp_path: Path) -> None:
    shutil.copy(ROOT / "Vagrantfile", tmp_path / "Vagrantfile")
    result = _validate(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_a_broken_vagrantfile_is_caught(vagrant: None, tmp_path: Path) -> None:
    """The check above can fail: a config error is reported by the same command."""
    (tmp_path / "Vagrantfile").write_text('Vagrant.configure("2") do |c|\n  c.vm.no_such_option = 1\nend\n')
    assert _validate(tmp_path).returncode != 0
