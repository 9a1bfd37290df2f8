"""The whole life of an instance with `--driver libvirt`, through the real CLI, against
a libvirtd the session starts (domain type qemu, i.e. TCG) and the real guest image:
init, up, ssh, docker through shellinit, down, up with the data intact, delete leaving
no domain, volume or file. Also times `toolbox up` to ready with libvirt and with the
QEMU driver on the same image in the same run (printed; see the report/README figures).

Runs in order; each test uses the state the previous one left (boots are costly).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Toolbox, toolbox_env
from e2e.libvirt_fixtures import libvirt_uri  # noqa: F401 (a fixture)
from helpers_http import FileServer

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]

MARKER = "/var/lib/toolbox/e2e-libvirt-marker"
TIMINGS: dict[str, float] = {}


def _domains(uri: str) -> set[str]:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def lv(
    release_server: FileServer, tmp_path_factory: pytest.TempPathFactory, libvirt_uri: str  # noqa: F811
) -> Iterator[Toolbox]:
    # A short home: QEMU's and the host agent's unix sockets must fit in 104 bytes.
    home = tmp_path_factory.mktemp("tblv")
    env = {**toolbox_env(home), "TOOLBOX_LIBVIRT_URI": libvirt_uri}
    tb = Toolbox(name=f"lv{os.getpid() % 100000}", home=home, server_url=release_server.url, env=env)
    try:
        yield tb
    finally:
        tb.run("delete", "-f", "-n", tb.name, check=False)
        assert f"toolbox-{tb.name}" not in _domains(libvirt_uri), "delete left the domain defined"


def _up(tb: Toolbox) -> float:
    started = time.monotonic()
    tb.run("up", "-n", tb.name)
    return time.monotonic() - started


def test_init_defines_the_domain(lv: Toolbox, libvirt_uri: str) -> None:  # noqa: F811
    lv.run("init", "-n", lv.name, "--driver", "libvirt", "--memory", "1G",
           "--manifest-url", f"{lv.server_url}/v1/manifest.json")  # fmt: skip
    assert f"toolbox-{lv.name}" in _domains(libvirt_uri)
    assert (lv.instance_dir / "disk.qcow2").is_file()
    assert lv.run("status", "-n", lv.name).stdout.startswith("stopped")


def test_up_and_ssh(lv: Toolbox) -> None:
    TIMINGS["libvirt"] = _up(lv)
    print(f"\ntoolbox up to ready, libvirt driver: {TIMINGS['libvirt']:.1f} s")
    assert lv.ssh("uname -s").stdout.strip() == "Linux"
    assert lv.run("status", "-n", lv.name).stdout.strip() == "running"
    # The home folder (toolbox_env's stand-in) is shared by default, through libvirt's
    # <filesystem accessmode="squash">: a file root writes in the guest is the host user's.
    home = lv.user_home
    assert f" {home} 9p rw," in lv.ssh("cat /proc/mounts").stdout
    lv.ssh(f"echo through libvirt | sudo tee {home}/from-libvirt-guest >/dev/null")
    written = home / "from-libvirt-guest"
    assert written.read_text() == "through libvirt\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (os.getuid(), os.getgid())


def test_docker_through_shellinit(lv: Toolbox) -> None:
    exports = lv.run("shellinit", "-n", lv.name, "--shell", "bash").stdout
    env = dict(lv.env)
    for line in exports.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'\"")
    assert env.get("DOCKER_HOST") == lv.docker_host
    proc = subprocess.run(["docker", "version", "--format", "{{.Server.Os}}"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "linux"


def test_down_and_up_keep_the_data(lv: Toolbox) -> None:
    lv.ssh(f"echo kept | sudo tee {MARKER} >/dev/null && sync")
    lv.run("down", "-n", lv.name)
    assert lv.run("status", "-n", lv.name).stdout.startswith("stopped")
    assert "reboot: Power down" in (lv.instance_dir / "serial.log").read_text(errors="replace")
    _up(lv)
    got = lv.ssh(f"cat {MARKER}", check=False)
    serial = (lv.instance_dir / "serial.log").read_text(errors="replace")
    assert got.stdout.strip() == "kept", f"the data disk lost the marker ({got.stderr.strip()}); serial:\n{serial[-3000:]}"


def test_delete_leaves_no_domain_volume_or_file(lv: Toolbox, libvirt_uri: str) -> None:  # noqa: F811
    lv.run("delete", "-f", "-n", lv.name)
    assert f"toolbox-{lv.name}" not in _domains(libvirt_uri)
    assert not lv.instance_dir.exists()
    assert not Path(f"/var/log/libvirt/qemu/toolbox-{lv.name}.log").exists()


def test_up_time_with_the_qemu_driver_for_comparison(release_server: FileServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same image, same host, same run: `toolbox up` to ready with the QEMU driver."""
    home = tmp_path_factory.mktemp("tbqc")
    tb = Toolbox(name="qc", home=home, server_url=release_server.url, env=toolbox_env(home))
    tb.run("init", "-n", tb.name, "--driver", "qemu", "--memory", "1G",
           "--manifest-url", f"{release_server.url}/v1/manifest.json")  # fmt: skip
    try:
        TIMINGS["qemu"] = _up(tb)
    finally:
        tb.run("delete", "-f", "-n", tb.name, check=False)
    print(f"\ntoolbox up to ready, qemu driver: {TIMINGS['qemu']:.1f} s (libvirt: {TIMINGS.get('libvirt', float('nan')):.1f} s)")
