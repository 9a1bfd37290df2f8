from __future__ import annotations

from toolbox.cli import main

main()
