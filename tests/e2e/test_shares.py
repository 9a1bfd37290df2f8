"""Folder sharing on the session's shared VM (QEMU under TCG): the stand-in home folder
is shared read-write at its own path by default, so `docker run -v "$PWD":/src` works in
a project under it; conftest adds a read-only share. Real docker CLI, real 9p."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import Toolbox
from docker_session import docker_env  # noqa: F401  (a fixture: the docker CLI's environment)
from registry import registry  # noqa: F401  (the session's registry fixture)

pytestmark = pytest.mark.e2e


def _sh(env: dict[str, str], cwd: Path, script: str) -> subprocess.CompletedProcess[str]:
    """A shell line as a user types it, in `cwd` on the host."""
    return subprocess.run(["sh", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _read_only_share(toolbox_vm: Toolbox) -> Path:
    import json

    mounts = json.loads(toolbox_vm.run("info", "--json", "-n", toolbox_vm.name).stdout)["mounts"]
    return Path(next(m["host"] for m in mounts if not m["writable"]))


def test_home_is_a_9p_share_at_its_own_path(toolbox_vm: Toolbox) -> None:
    home = str(toolbox_vm.user_home)
    line = toolbox_vm.ssh(f"grep ' {home} ' /proc/mounts").stdout
    assert " 9p rw," in line and ",mmap," in line, line  # cache=mmap shows as "mmap"
    assert "msize=512000" in line, line


def test_docker_run_v_pwd_both_ways(toolbox_vm: Toolbox, docker_env: dict[str, str]) -> None:  # noqa: F811
    project = toolbox_vm.user_home / "src" / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "from-host.txt").write_text("written on the host\n")
    out = _sh(docker_env, project, 'docker run --rm -v "$PWD":/src busybox sh -c '
              '"cat /src/from-host.txt && echo written in a container > /src/out.txt && mkdir /src/made && touch /src/made/f"')
    assert out.returncode == 0, out.stderr
    assert out.stdout == "written on the host\n"
    made = [project / "out.txt", project / "made", project / "made" / "f"]
    assert (project / "out.txt").read_text() == "written in a container\n"
    # Owned by the host user: QEMU (run by that user) creates them (security_model=none).
    assert [(p.stat().st_uid, p.stat().st_gid) for p in made] == [(os.getuid(), os.getgid())] * 3
    # The host's later changes show at once (no stale guest cache).
    (project / "from-host.txt").write_text("changed on the host\n")
    again = _sh(docker_env, project, 'docker run --rm -v "$PWD":/src busybox cat /src/from-host.txt')
    assert (again.returncode, again.stdout) == (0, "changed on the host\n"), again.stderr


def test_read_only_share_refuses_writes(toolbox_vm: Toolbox, docker_env: dict[str, str]) -> None:  # noqa: F811
    share = _read_only_share(toolbox_vm)
    out = _sh(docker_env, share, 'docker run --rm -v "$PWD":/ro busybox sh -c "cat /ro/hello && touch /ro/nope"')
    assert out.returncode != 0
    assert out.stdout == "read-only from the host\n"
    assert "Read-only file system" in out.stderr
    assert not (share / "nope").exists()
    guest = toolbox_vm.ssh(f"sudo touch {share}/nope-ssh", check=False)  # root: no permission to lack
    assert guest.returncode != 0 and "Read-only file system" in guest.stderr + guest.stdout


def test_save_refused_while_a_container_uses_a_share_then_save_and_resume(
    toolbox_vm: Toolbox, docker_env: dict[str, str],  # noqa: F811
) -> None:
    """QEMU cannot save a VM with a 9p share mounted: `save` unmounts the shares first,
    refuses (VM running, docker.sock served) while a container holds one, and after
    `resume` the shares are mounted again."""
    from docker_session import docker_cli

    name = "tb-share-busy"
    project = toolbox_vm.user_home / "src" / "busy"
    project.mkdir(parents=True, exist_ok=True)
    started = _sh(docker_env, project, f'docker run -d --name {name} -v "$PWD":/src busybox sleep 600')
    assert started.returncode == 0, started.stderr
    try:
        refused = toolbox_vm.run("save", "-n", toolbox_vm.name, check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "cannot save 'e2e'" in refused.stderr and "stop the containers" in refused.stderr, refused.stderr
        assert toolbox_vm.run("status", "-n", toolbox_vm.name).stdout.startswith("running")
        ps = docker_cli(docker_env, "ps", "--format", "{{.Names}}")
        assert ps.returncode == 0 and name in ps.stdout, ps.stderr
    finally:
        docker_cli(docker_env, "rm", "-f", name)
    toolbox_vm.run("save", "-n", toolbox_vm.name)
    toolbox_vm.run("resume", "-n", toolbox_vm.name)
    (project / "after").write_text("after the resume\n")
    out = _sh(docker_env, project, 'docker run --rm -v "$PWD":/src busybox cat /src/after')
    assert (out.returncode, out.stdout) == (0, "after the resume\n"), out.stderr
