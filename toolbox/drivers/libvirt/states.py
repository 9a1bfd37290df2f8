"""Pure: libvirt's (state, reason) pair -> toolbox's VMStatus.

The numbers are libvirt's stable ABI (virDomainState and its reason enums), written
out here so the mapping is testable without libvirt-python installed.
"""

from __future__ import annotations

from toolbox.drivers.base import VMState, VMStatus

# virDomainState
NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)

_SHUTOFF_REASONS = {
    0: "unknown",
    1: "shut down by the guest",
    2: "destroyed (powered off)",
    3: "crashed",
    4: "migrated away",
    5: "saved",
    6: "failed to start",
    7: "restored from a snapshot",
    8: "the daemon was stopped while it ran",
}
# virDomainShutoffReason values that mean something went wrong.
_SHUTOFF_BROKEN = {3, 6}

_PAUSED_REASONS = {
    0: "unknown",
    1: "paused by the user",
    2: "migrating",
    3: "being saved",
    4: "core dump in progress",
    5: "stopped on a disk I/O error",
    6: "stopped by the watchdog",
    7: "restored from a snapshot",
    8: "shutting down",
    9: "snapshot in progress",
    10: "the guest crashed",
    11: "starting up",
    12: "post-copy migration",
    13: "post-copy migration failed",
}
# Paused because the VM cannot go on, not because someone asked.
_PAUSED_BROKEN = {5, 6, 10, 13}
# Paused for a moment by libvirt itself while it does something; the VM is on its way.
_PAUSED_TRANSIENT = {2, 3, 4, 8, 9, 11, 12}
PAUSED_USER = 1


def map_state(state: int, reason: int, *, has_managed_save: bool) -> VMStatus:
    """VMStatus for a domain in libvirt's `state` with `reason`.

    A shut-off domain with a managed-save image is SUSPENDED: its memory is on disk and
    the next start restores it.
    """
    if state in (RUNNING, BLOCKED):
        return VMStatus(VMState.RUNNING)
    if state == SHUTDOWN:
        return VMStatus(VMState.RUNNING, ("shutting down",))
    if state == PAUSED:
        why = _PAUSED_REASONS.get(reason, f"reason {reason}")
        if reason in _PAUSED_BROKEN:
            return VMStatus(VMState.BROKEN, (f"paused: {why}",))
        if reason in _PAUSED_TRANSIENT:
            return VMStatus(VMState.RUNNING, (f"briefly paused by libvirt: {why}",))
        return VMStatus(VMState.SUSPENDED, (f"paused in memory: {why}",))
    if state == PMSUSPENDED:
        return VMStatus(VMState.SUSPENDED, ("the guest suspended itself to RAM",))
    if state == SHUTOFF:
        if has_managed_save:
            return VMStatus(VMState.SUSPENDED, ("memory saved to disk (libvirt managed save)",))
        why = _SHUTOFF_REASONS.get(reason, f"reason {reason}")
        if reason in _SHUTOFF_BROKEN:
            return VMStatus(VMState.BROKEN, (f"shut off: {why}",))
        return VMStatus(VMState.STOPPED, (why,) if reason not in (0, 1, 2) else ())
    if state == CRASHED:
        return VMStatus(VMState.BROKEN, ("the guest crashed",))
    return VMStatus(VMState.BROKEN, (f"libvirt reports no state (state {state}, reason {reason})",))
