"""Keep the idle agent small: what only a pull from an HTTPS registry needs is loaded then.

asyncio and http.client import ssl when they are imported, for TLS the agent never asks
of asyncio and only asks of http.client on a pull from an HTTPS registry; ssl brings
libssl and libcrypto, ~7 MB of an agent's ~25 MB RSS. So the agent's modules are imported
with ssl hidden (both take a missing ssl as "no TLS"), and images/registry.py imports ssl
and wraps its own connections when a registry speaks HTTPS.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


def random_id() -> str:
    """64 hex digits, as Docker's ids (not secrets.token_hex: secrets loads libcrypto
    through hmac, ~4 MB of RSS; os.urandom is the same source)."""
    return os.urandom(32).hex()


@contextlib.contextmanager
def ssl_hidden() -> Iterator[None]:
    """Imports made inside see no ssl module (unless ssl was loaded already)."""
    if "ssl" in sys.modules:
        yield
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # import ssl -> ImportError
    try:
        yield
    finally:
        if sys.modules.get("ssl", 0) is None:
            del sys.modules["ssl"]


_malloc_trim: Any = None


def trim_heap() -> None:
    """Give freed heap pages back to the kernel (glibc keeps them after a burst of work)."""
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes

        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)
