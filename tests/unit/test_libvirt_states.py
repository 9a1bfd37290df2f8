"""libvirt's (state, reason) -> VMStatus, without libvirt-python."""

from __future__ import annotations

import pytest

from toolbox.drivers.base import VMState
from toolbox.drivers.libvirt import states as s
from toolbox.drivers.libvirt.states import map_state


@pytest.mark.parametrize(
    ("state", "reason", "saved", "expected", "reasons"),
    [
        (s.RUNNING, 1, False, VMState.RUNNING, ()),
        (s.BLOCKED, 0, False, VMState.RUNNING, ()),
        (s.SHUTDOWN, 1, False, VMState.RUNNING, ("shutting down",)),
        (s.PAUSED, 1, False, VMState.SUSPENDED, ("paused in memory: paused by the user",)),
        (s.PAUSED, 5, False, VMState.BROKEN, ("paused: stopped on a disk I/O error",)),
        (s.PAUSED, 11, False, VMState.RUNNING, ("briefly paused by libvirt: starting up",)),
        (s.PAUSED, 3, False, VMState.RUNNING, ("briefly paused by libvirt: being saved",)),
        (s.PMSUSPENDED, 0, False, VMState.SUSPENDED, ("the guest suspended itself to RAM",)),
        (s.SHUTOFF, 1, False, VMState.STOPPED, ()),
        (s.SHUTOFF, 2, False, VMState.STOPPED, ()),
        (s.SHUTOFF, 5, True, VMState.SUSPENDED, ("memory saved to disk (libvirt managed save)",)),
        (s.SHUTOFF, 0, True, VMState.SUSPENDED, ("memory saved to disk (libvirt managed save)",)),
        (s.SHUTOFF, 3, False, VMState.BROKEN, ("shut off: crashed",)),
        (s.SHUTOFF, 6, False, VMState.BROKEN, ("shut off: failed to start",)),
        (s.SHUTOFF, 8, False, VMState.STOPPED, ("the daemon was stopped while it ran",)),
        (s.CRASHED, 0, False, VMState.BROKEN, ("the guest crashed",)),
        (s.NOSTATE, 0, False, VMState.BROKEN, ("libvirt reports no state (state 0, reason 0)",)),
    ],
)
def test_map_state(state: int, reason: int, saved: bool, expected: VMState, reasons: tuple[str, ...]) -> None:
    status = map_state(state, reason, has_managed_save=saved)
    assert (status.state, status.reasons) == (expected, reasons)


def test_state_numbers_match_libvirt() -> None:
    libvirt = pytest.importorskip("libvirt")
    assert (s.NOSTATE, s.RUNNING, s.PAUSED, s.SHUTOFF, s.CRASHED, s.PMSUSPENDED) == (
        libvirt.VIR_DOMAIN_NOSTATE,
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_PAUSED,
        libvirt.VIR_DOMAIN_SHUTOFF,
        libvirt.VIR_DOMAIN_CRASHED,
        libvirt.VIR_DOMAIN_PMSUSPENDED,
    )
