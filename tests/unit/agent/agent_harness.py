"""An agent in a thread of the test process, with a fake image store and fake_crun.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "guest-agent"))

from toolbox_agent.app import Agent, build_agent, start  # noqa: E402
from toolbox_agent.settings import Settings  # noqa: E402

FAKE_CRUN = str(Path(__file__).with_name("fake_crun.py"))


class ImageNotFound(Exception):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such image: {ref}")


@dataclass
class FakeImage:
    id: str
    config: dict[str, Any]
    layer_dirs: list[Path]
    repo_tags: list[str] = field(default_factory=list)


class FakeImages:
    def __init__(self, layer: Path) -> None:
        layer.mkdir(parents=True, exist_ok=True)
        (layer / "etc").mkdir(exist_ok=True)
        (layer / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        (layer / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        cfg = {"config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "IMAGE_VAR=1"], "WorkingDir": "/"}}
        self.images = {"fake:latest": FakeImage("sha256:" + "ab" * 32, cfg, [layer], ["fake:latest"])}

    def get(self, ref: str) -> FakeImage:
        key = ref if ":" in ref else ref + ":latest"
        for name, img in self.images.items():
            if key == name or ref == img.id or (len(ref) >= 4 and img.id[7:].startswith(ref)):
                return img
        raise ImageNotFound(key)

    def list(self) -> list[FakeImage]:
        return list(self.images.values())


class AgentThread:
    def __init__(self, tmp: Path) -> None:
        self.short = Path(tempfile.mkdtemp(prefix="tba", dir="/tmp"))  # unix socket paths stay short
        self.settings = Settings(root=tmp / "root", socket=self.short / "docker.sock", run_dir=self.short / "run", runtime=FAKE_CRUN)
        self.settings.root.mkdir(parents=True, exist_ok=True)
        self.images = FakeImages(tmp / "layer")
        self.loop = asyncio.new_event_loop()
        self.agent: Agent | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"unix://{self.settings.socket}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def boot() -> None:
            self.agent = build_agent(self.settings, self.images)
            self.server = await start(self.agent)
            self._ready.set()

        self.loop.run_until_complete(boot())
        self.loop.run_forever()

    def __enter__(self) -> AgentThread:
        self._thread.start()
        assert self._ready.wait(10), "agent did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        async def down() -> None:
            self.server.close()
            if self.agent is not None and self.agent.containers is not None:
                for cid in list(self.agent.containers.containers):
                    try:
                        await self.agent.containers.remove(cid, force=True)
                    except Exception:  # noqa: BLE001
                        pass
            await asyncio.sleep(0.1)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(down(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        shutil.rmtree(self.short, ignore_errors=True)

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.url, "DOCKER_CONFIG": str(self.settings.root.parent / "docker-config")}
