"""`python3 -m toolbox_agent`: the guest agent (see app.py)."""

from __future__ import annotations

from toolbox_agent.lean import ssl_hidden

with ssl_hidden():  # see lean.py: ssl is loaded only for an HTTPS registry
    from toolbox_agent.app import main

if __name__ == "__main__":
    main()
