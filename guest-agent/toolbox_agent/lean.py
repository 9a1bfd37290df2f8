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


class _Sha256:
    """SHA256_Init/Update/Final of libcrypto through ctypes: OpenSSL's own speed (the
    builtin _sha256 is slower and holds the GIL, which made a pull ~1.3x slower under TCG),
    the GIL released during each call, and without `import hashlib`, whose _hashlib fetches
    every digest OpenSSL provides at import: 3.4 MB of libcrypto resident, against ~1.6 MB
    for these three functions (bench/README.md, rss helper)."""

    lib: Any = None  # the CDLL once loaded; False where there is no libcrypto.so.3
    ctypes: Any = None

    def __init__(self, data: bytes = b"") -> None:
        self._ctx = self.ctypes.create_string_buffer(_SHA256_CTX_SIZE)
        self.lib.SHA256_Init(self._ctx)
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes):
            view = memoryview(data)
            if view.readonly:
                data = view.tobytes()
            else:  # a slice of a reused bytearray: hashed where it lies
                self.lib.SHA256_Update(self._ctx, (self.ctypes.c_char * view.nbytes).from_buffer(view), view.nbytes)
                return
        self.lib.SHA256_Update(self._ctx, data, len(data))

    def hexdigest(self) -> str:
        ctx = self.ctypes.create_string_buffer(self._ctx.raw, _SHA256_CTX_SIZE)  # Final consumes its context
        out = self.ctypes.create_string_buffer(32)
        self.lib.SHA256_Final(out, ctx)
        return out.raw.hex()

    @classmethod
    def load(cls) -> bool:
        if cls.lib is None:
            import ctypes

            try:
                lib = ctypes.CDLL("libcrypto.so.3")
                for name in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
                    getattr(lib, name).restype = ctypes.c_int
                lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
                cls.lib, cls.ctypes = lib, ctypes
            except (OSError, AttributeError):
                cls.lib = False
        return bool(cls.lib)


_SHA256_CTX_SIZE = 128  # OpenSSL's SHA256_CTX is 112 bytes
_sha256: Any = None


def sha256(data: bytes = b"") -> Any:
    """A sha256 hash object (update, hexdigest): libcrypto's through ctypes (_Sha256), or
    hashlib's where there is no libcrypto.so.3."""
    global _sha256
    if _sha256 is None:
        if _Sha256.load():
            _sha256 = _Sha256
        else:
            import hashlib

            _sha256 = hashlib.sha256
    return _sha256(data)


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
