"""`python3 -m toolbox_agent`: the guest agent (see app.py)."""

from __future__ import annotations

from toolbox_agent.app import main

if __name__ == "__main__":
    main()
