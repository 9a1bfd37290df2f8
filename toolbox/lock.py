"""One lock per instance, so concurrent up/down/delete never interleave their changes.

An flock on the instance's `lock` file: the kernel drops it when the holder dies, so a
killed toolbox never leaves a stale lock behind (unlike a pid-in-a-file lock).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from toolbox.errors import InstanceLocked

DEFAULT_TIMEOUT = 10.0


@contextmanager
def instance_lock(
    name: str, lock_path: Path, timeout: float | None = None, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold the instance's lock for the block; InstanceLocked after `timeout` seconds.

    `on_wait` is called once if another command holds the lock, so the CLI can say why
    nothing seems to happen."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + (DEFAULT_TIMEOUT if timeout is None else timeout)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise InstanceLocked(name) from None
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
