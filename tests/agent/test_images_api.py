"""The images API driven by the real docker CLI (and the docker SDK) against an agent on the host.

The agent runs as a subprocess (`python -m toolbox_agent`) with its state and socket in a
temp dir; agent.json names the session registry as Docker Hub's mirror, so the seed
session's bare names (`docker pull learn/tutorial`, `docker search tutorial`) resolve there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from e2e.registry import RegistryServer, ThrottleProxy, TokenAuthProxy, busybox_layer, files_layer, make_image, push

REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/local/bin/docker"


class AgentProcess:
    def __init__(self, tmp: Path, settings: dict[str, object]) -> None:
        self.tmp = tmp
        self.socket = tmp / "docker.sock"
        (tmp / "agent.json").write_text(json.dumps(settings))
        self.env = {
            **os.environ,
            "TOOLBOX_AGENT_ROOT": str(tmp / "root"),
            "TOOLBOX_AGENT_SOCKET": str(self.socket),
            "TOOLBOX_AGENT_SETTINGS": str(tmp / "agent.json"),
            "PYTHONPATH": str(REPO / "guest-agent"),
        }
        self.log = open(tmp / "agent.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "toolbox_agent"], env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "agent.log").read_text()[-3000:])
            time.sleep(0.05)

    def docker(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ["PATH"], "HOME": str(self.tmp), "DOCKER_HOST": f"unix://{self.socket}"}
        res = subprocess.run([DOCKER, *args], env=env, input=input, capture_output=True, timeout=120)
        out = subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def agent(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    settings = {"registry_mirrors": [registry.url], "registry_mirror_fallback": False}
    running = AgentProcess(tmp_path_factory.mktemp("agent"), settings)
    yield running
    running.stop()


def test_pull_from_loopback_registry(agent: AgentProcess, registry: RegistryServer) -> None:
    out = agent.docker("pull", f"{registry.host}/learn/tutorial").stdout
    assert "latest: Pulling from learn/tutorial" in out
    assert "Pull complete" in out and "Digest: sha256:" in out
    assert f"Status: Downloaded newer image for {registry.host}/learn/tutorial:latest" in out
    again = agent.docker("pull", f"{registry.host}/learn/tutorial").stdout
    assert "Image is up to date" in again
    listing = agent.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    assert f"{registry.host}/learn/tutorial:latest" in listing
    info = json.loads(agent.docker("image", "inspect", f"{registry.host}/learn/tutorial").stdout)[0]
    assert info["Id"].startswith("sha256:") and info["Os"] == "linux" and info["Architecture"] == "amd64"
    assert len(info["RootFS"]["Layers"]) == 2 and info["Config"]["Cmd"] == ["sh"]
    assert info["RepoDigests"][0].startswith(f"{registry.host}/learn/tutorial@sha256:")
    assert agent.docker("inspect", "--format", "{{.Id}}", f"{registry.host}/learn/tutorial").stdout.strip() == info["Id"]


def test_seed_session_names(agent: AgentProcess) -> None:
    search = agent.docker("search", "tutorial").stdout
    assert search.splitlines()[0].split() == ["NAME", "DESCRIPTION", "STARS", "OFFICIAL"]
    assert "learn/tutorial" in search
    out = agent.docker("pull", "learn/tutorial").stdout
    assert "Status: Downloaded newer image for learn/tutorial:latest" in out
    assert out.strip().endswith("docker.io/learn/tutorial:latest")
    assert "learn/tutorial" in agent.docker("images").stdout


def test_tag_history_rmi(agent: AgentProcess) -> None:
    agent.docker("pull", "-q", "busybox")
    agent.docker("tag", "busybox", "mine/bb:v1")
    ids = agent.docker("images", "--format", "{{.Repository}}:{{.Tag}}={{.ID}}").stdout.split()
    by_name = dict(line.split("=") for line in ids)
    assert by_name["mine/bb:v1"] == by_name["busybox:latest"]
    history = agent.docker("history", "busybox").stdout.splitlines()
    assert history[0].split()[0] == "IMAGE" and len(history) == 3
    assert agent.docker("rmi", "mine/bb:v1").stdout.strip() == "Untagged: mine/bb:v1"
    image_id = by_name["busybox:latest"]
    agent.docker("tag", "busybox", "mine/bb:v2")
    conflict = agent.docker("rmi", image_id, check=False)
    assert conflict.returncode == 1 and "must be forced" in conflict.stderr
    removed = agent.docker("rmi", "-f", image_id).stdout
    assert "Untagged: busybox:latest" in removed and "Untagged: mine/bb:v2" in removed and "Deleted: sha256:" in removed
    assert "busybox" not in agent.docker("images").stdout


def test_save_load_roundtrip(agent: AgentProcess, tmp_path: Path) -> None:
    agent.docker("pull", "-q", "busybox")
    before = agent.docker("image", "inspect", "--format", "{{.Id}}", "busybox").stdout.strip()
    archive = tmp_path / "bb.tar"
    agent.docker("save", "-o", str(archive), "busybox", "learn/tutorial")
    agent.docker("rmi", "busybox", "learn/tutorial")
    out = agent.docker("load", "-i", str(archive)).stdout
    assert "Loaded image: busybox:latest" in out and "Loaded image: learn/tutorial:latest" in out
    assert agent.docker("image", "inspect", "--format", "{{.Id}}", "busybox").stdout.strip() == before
    piped = agent.docker("save", "busybox").stdout.encode(errors="surrogateescape")
    assert piped  # text mode mangles bytes; the pipe below uses a shell
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DOCKER_HOST": f"unix://{agent.socket}"}
    res = subprocess.run(f"{DOCKER} save busybox | {DOCKER} load", shell=True, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "Loaded image: busybox:latest" in res.stdout


def test_dangling_and_prune(agent: AgentProcess, registry: RegistryServer, tmp_path: Path) -> None:
    push(registry, "test/dangle:1", make_image([files_layer({"one": b"1"})]))
    agent.docker("pull", "-q", f"{registry.host}/test/dangle:1")
    push(registry, "test/dangle:1", make_image([files_layer({"two": b"2"})]))
    agent.docker("pull", "-q", f"{registry.host}/test/dangle:1")
    dangling = agent.docker("images", "-q", "-f", "dangling=true").stdout.split()
    assert len(dangling) == 1
    out = agent.docker("image", "prune", "-f").stdout
    assert f"deleted: sha256:{dangling[0]}" in out
    assert agent.docker("images", "-q", "-f", "dangling=true").stdout.split() == []
    filtered = agent.docker("images", "--format", "{{.Repository}}", "--filter", f"reference={registry.host}/test/*").stdout.split()
    assert filtered == [f"{registry.host}/test/dangle"]


def test_errors(agent: AgentProcess, registry: RegistryServer) -> None:
    missing = agent.docker("pull", f"{registry.host}/nosuch", check=False)
    assert missing.returncode == 1
    assert f"manifest for {registry.host}/nosuch:latest not found: manifest unknown" in missing.stderr
    assert "No such image: nosuch:latest" in agent.docker("image", "inspect", "nosuch:latest", check=False).stderr
    assert "No such image: nosuch" in agent.docker("rmi", "nosuch", check=False).stderr
    unknown = agent.docker("pull", "nosuch/image", check=False)  # the mirror only: Docker Hub is never asked
    assert "manifest for nosuch/image:latest not found: manifest unknown" in unknown.stderr
    bad = agent.docker("pull", "Bad::ref", check=False)
    assert bad.returncode != 0 and "invalid reference format" in bad.stderr
    client = docker.DockerClient(base_url=f"unix://{agent.socket}", version="1.44")
    resp = client.api._post(client.api._url("/images/create"), params={"fromImage": "bad::ref"})
    assert resp.status_code == 400 and resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {"message": "invalid reference format"}
    down = RegistryServer().start()
    host = down.host
    down.stop()
    refused = agent.docker("pull", f"{host}/learn/tutorial", check=False)
    assert refused.returncode == 1 and "connection refused" in refused.stderr.lower()
    assert agent.docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip() == "1.44"


def test_registry_down_mid_pull(agent: AgentProcess) -> None:
    with RegistryServer() as reg, ThrottleProxy(reg, rate=8 * 1024 * 1024) as proxy:
        big = files_layer({"big": os.urandom(24 * 1024 * 1024)})
        push(reg, "test/big:1", make_image([busybox_layer(), big], compression="none"))
        env = {"PATH": os.environ["PATH"], "HOME": str(agent.tmp), "DOCKER_HOST": f"unix://{agent.socket}"}
        proc = subprocess.Popen([DOCKER, "pull", f"{proxy.host}/test/big:1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Pulling fs layer" in line:
                time.sleep(0.5)  # the big layer is a few MB in
                reg.kill()
                break
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, out + err
        assert "error pulling blob" in err or "bytes, expected" in err, err
    images_root = agent.tmp / "root" / "images"
    assert os.listdir(images_root / "tmp") == []
    assert "test/big" not in agent.docker("images").stdout
    assert agent.docker("version", "--format", "{{.Server.Version}}").stdout.strip()  # still serving


def test_docker_sdk(agent: AgentProcess, registry: RegistryServer) -> None:
    client = docker.DockerClient(base_url=f"unix://{agent.socket}")
    image = client.images.pull(f"{registry.host}/learn/tutorial", tag="latest")
    assert f"{registry.host}/learn/tutorial:latest" in image.tags
    assert image.id in {i.id for i in client.images.list()}
    image.tag("sdk/tagged", "x")
    assert "sdk/tagged:x" in client.images.get(image.id).tags
    client.images.remove("sdk/tagged:x")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("sdk/tagged:x")


def test_pull_all_tags_and_platform(agent: AgentProcess, registry: RegistryServer) -> None:
    push(registry, "/test/many:a", make_image([files_layer({"a": b"a"})]))
    push(registry, "/test/many:b", make_image([files_layer({"b": b"b"})]))
    out = agent.docker("pull", "-a", f"{registry.host}/test/many").stdout
    assert out.count("Pulling from test/many") == 2
    tags = agent.docker("images", "--format", "{{.Tag}}", f"{registry.host}/test/many").stdout.split()
    assert sorted(tags) == ["a", "b"]
    arm = agent.docker("pull", "--platform", "linux/arm64", f"{registry.host}/busybox").stdout
    assert "Downloaded newer image" in arm
    arch = agent.docker("image", "inspect", "--format", "{{.Architecture}}", f"{registry.host}/busybox").stdout.strip()
    assert arch == "arm64"


def test_login_then_pull_with_credentials(agent: AgentProcess, registry: RegistryServer) -> None:
    with TokenAuthProxy(registry, basic=("alice", "s3cret")) as proxy:
        denied = agent.docker("pull", f"{proxy.host}/learn/tutorial", check=False)
        assert denied.returncode == 1 and "unauthorized" in denied.stderr
        wrong = agent.docker("login", "-u", "alice", "--password-stdin", proxy.host, input=b"nope\n", check=False)
        assert wrong.returncode == 1 and "unauthorized" in wrong.stderr
        ok = agent.docker("login", "-u", "alice", "--password-stdin", proxy.host, input=b"s3cret\n")
        assert "Login Succeeded" in ok.stdout
        out = agent.docker("pull", f"{proxy.host}/learn/tutorial").stdout
        assert f"Status: Downloaded newer image for {proxy.host}/learn/tutorial:latest" in out


def test_push_roundtrip(agent: AgentProcess, registry: RegistryServer) -> None:
    agent.docker("pull", "-q", f"{registry.host}/learn/tutorial")
    agent.docker("tag", f"{registry.host}/learn/tutorial", f"{registry.host}/pushed/copy:v1")
    out = agent.docker("push", f"{registry.host}/pushed/copy:v1").stdout
    assert f"The push refers to repository [{registry.host}/pushed/copy]" in out
    assert "v1: digest: sha256:" in out
    digest = out.split("v1: digest: ")[1].split()[0]
    agent.docker("rmi", f"{registry.host}/pushed/copy:v1")
    pulled = agent.docker("pull", f"{registry.host}/pushed/copy@{digest}").stdout
    assert f"Digest: {digest}" in pulled
    missing = agent.docker("push", f"{registry.host}/never/tagged:x", check=False)
    assert missing.returncode == 1 and "No such image" in missing.stderr
