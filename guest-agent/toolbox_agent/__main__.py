"""`python3 -m toolbox_agent`: the guest agent (see app.py)."""

from __future__ import annotations

import os

# Started early in the boot, the agent imports at a low priority until init releases it
# (app.boot_gate): init's own steps and sshd's start come first on the two vCPUs, and the
# agent takes the CPU time they leave while they wait on disks and DHCP.
_gate = os.environ.get("TOOLBOX_AGENT_GATE")
if _gate and not os.path.exists(_gate):
    os.nice(10)

from toolbox_agent.lean import ssl_hidden  # noqa: E402

with ssl_hidden():  # see lean.py: ssl is loaded only for an HTTPS registry
    from toolbox_agent.app import main

if __name__ == "__main__":
    main()
