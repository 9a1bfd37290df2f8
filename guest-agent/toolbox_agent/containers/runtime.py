"""The OCI runtime (crun) behind one choke point: every call logs its argv."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("toolbox_agent.runtime")


class RuntimeError_(Exception):
    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv, self.returncode, self.stderr = argv, returncode, stderr
        super().__init__(stderr.strip() or f"{argv[0]} exited {returncode}")


@dataclass
class Runtime:
    binary: str = "crun"
    root: str = "/run/toolbox/crun"  # the runtime's state directory

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", self.root, *args]

    async def run(self, *args: str, check: bool = True, timeout: float = 60.0) -> tuple[int, str, str]:
        argv = self.argv(*args)
        log.debug("run: %s", " ".join(argv))
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        rc = proc.returncode if proc.returncode is not None else -1
        if check and rc != 0:
            raise RuntimeError_(argv, rc, err.decode(errors="replace"))
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    async def start(self, cid: str) -> None:
        await self.run("start", cid)

    async def kill(self, cid: str, sig: int) -> None:
        await self.run("kill", cid, str(sig))

    async def delete(self, cid: str) -> None:
        await self.run("delete", "--force", cid, check=False)

    async def state(self, cid: str) -> dict[str, Any] | None:
        rc, out, _ = await self.run("state", cid, check=False)
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    async def pause(self, cid: str) -> None:
        await self.run("pause", cid)

    async def resume(self, cid: str) -> None:
        await self.run("resume", cid)

    async def pids(self, cid: str) -> list[int]:
        _, out, _ = await self.run("ps", "--format", "json", cid)
        try:
            return [int(p) for p in json.loads(out)]
        except (ValueError, TypeError):
            return []


async def run_command(*argv: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Any other program (mount, umount, ps), logged the same way."""
    log.debug("run: %s", " ".join(argv))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
