"""The host agent on the session's VM: published ports on the host's loopback (TCP and
UDP), a host port already taken reported by `toolbox status`, the guest clock kept on
the host's, and the SSH connection cut and made again.

Containers come from the session's registry (tests/e2e/registry.py): busybox's httpd for
TCP, and for UDP a tiny static echo server compiled here (Debian's busybox has no UDP
server applet).
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Toolbox
from registry import Entry, RegistryServer, busybox_layer, make_image, push, registry, tar_layer  # noqa: F401
from docker_session import docker_cli, docker_env  # noqa: F401  (docker_env: a fixture)

pytestmark = pytest.mark.e2e
WEB_IMAGE = "learn/tutorial"
UDP_IMAGE = "test/udpecho:latest"
UDP_ECHO_C = r"""
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) return 1;
    static char buf[65536];
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (n >= 0) sendto(s, buf, n, 0, (struct sockaddr *)&peer, len);
    }
}
"""


def port_or_free(wanted: int, kind: int = socket.SOCK_STREAM) -> int:
    """`wanted` (the issue's port) when it is free on the host, else any free port."""
    for port in (wanted, 0):
        try:
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", port))
                return int(s.getsockname()[1])
        except OSError:
            continue
    raise AssertionError("no free port")


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.25)


def http_get(port: int, host: str = "127.0.0.1") -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as s:
            s.settimeout(10)
            s.connect((host, port))
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode("latin-1")
    except OSError:
        return ""


def udp_ask(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(data, (host, port))
        try:
            return s.recvfrom(65535)[0]
        except OSError:
            return b""


def port_free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    try:
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def udp_image(registry: RegistryServer) -> str:  # noqa: F811
    """The busybox image plus /bin/udpecho PORT (static, compiled here)."""
    gcc = shutil.which("gcc")
    assert gcc, "gcc builds the UDP echo server"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "udpecho.c", Path(tmp) / "udpecho"
        src.write_text(UDP_ECHO_C)
        subprocess.run([gcc, "-static", "-Os", "-o", str(out), str(src)], check=True, capture_output=True)
        binary = out.read_bytes()
    push(registry, UDP_IMAGE, make_image([busybox_layer(), tar_layer([Entry("bin/udpecho", binary, mode=0o755)])]))
    return UDP_IMAGE


@pytest.fixture
def container(docker_env: dict[str, str]) -> Iterator[Callable[..., str]]:  # noqa: F811
    """`run(*args)`: docker run -d ARGS, the id; every one removed at the end."""
    made: list[str] = []

    def run(*args: str) -> str:
        out = docker_cli(docker_env, "run", "-d", *args)
        assert out.returncode == 0, out.stderr
        made.append(out.stdout.strip())
        return made[-1]

    yield run
    for cid in made:
        docker_cli(docker_env, "rm", "-f", cid)


def serve_web(run: Callable[..., str], port: int) -> str:
    return run("-p", f"{port}:80", WEB_IMAGE, "sh", "-c",
               "mkdir -p /www && echo hello-from-httpd > /www/index.html && exec httpd -f -p 80 -h /www")


def test_published_tcp_port_answers_on_localhost_until_removed(docker_env: dict[str, str], container: Callable[..., str]) -> None:  # noqa: F811
    port = port_or_free(18080)
    cid = serve_web(container, port)
    page = wait_for(lambda: http_get(port), 60, f"HTTP on 127.0.0.1:{port}")
    assert "200 OK" in str(page) and "hello-from-httpd" in str(page)
    assert "hello-from-httpd" in http_get(port, "::1")
    assert docker_cli(docker_env, "rm", "-f", cid).returncode == 0
    wait_for(lambda: port_free(port), 15, f"127.0.0.1:{port} to be free after docker rm -f")
    assert http_get(port) == ""


def test_published_udp_port_answers_on_localhost(docker_env: dict[str, str], container: Callable[..., str],  # noqa: F811
                                                 udp_image: str) -> None:
    port = port_or_free(18081, socket.SOCK_DGRAM)
    cid = container("-p", f"{port}:53/udp", udp_image, "/bin/udpecho", "53")
    assert wait_for(lambda: udp_ask(port, b"ping over udp"), 60, f"a UDP answer on 127.0.0.1:{port}") == b"ping over udp"
    assert udp_ask(port, b"six", "::1") == b"six"
    big = os.urandom(8000)
    assert udp_ask(port, big) == big
    assert docker_cli(docker_env, "rm", "-f", cid).returncode == 0
    wait_for(lambda: port_free(port, socket.SOCK_DGRAM), 15, f"udp 127.0.0.1:{port} to be free after docker rm -f")


def test_a_host_port_already_taken_is_reported_by_status(toolbox_vm: Toolbox, docker_env: dict[str, str],  # noqa: F811
                                                         container: Callable[..., str]) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    port = int(squatter.getsockname()[1])
    try:
        serve_web(container, port)
        expected = f"port {port}/tcp is not forwarded to the host: 127.0.0.1:{port} already in use on the host"
        status = wait_for(lambda: expected in (out := toolbox_vm.run("status", "-n", toolbox_vm.name).stdout) and out,
                          60, "toolbox status to report the taken port")
        assert str(status).startswith("running")
        log = (toolbox_vm.instance_dir / "hostagent.log").read_text()
        assert f"cannot forward {port}/tcp: 127.0.0.1:{port} already in use on the host" in log
    finally:
        squatter.close()
    # freed: the host agent takes it on its next try
    wait_for(lambda: "hello-from-httpd" in http_get(port), 30, "the port forwarded once free")
    assert expected not in toolbox_vm.run("status", "-n", toolbox_vm.name).stdout


def guest_time_offset(docker_host: str) -> float:
    """Guest minus host wall clock, in seconds, from the guest agent's /info SystemTime."""
    import docker

    client = docker.APIClient(base_url=docker_host, timeout=30)
    before = time.time()
    system_time = client.info()["SystemTime"]
    after = time.time()
    client.close()
    guest = datetime.datetime.fromisoformat(system_time.replace("Z", "+00:00")[:26] + "+00:00").timestamp()
    return guest - (before + after) / 2


def test_guest_clock_an_hour_wrong_comes_back(toolbox_vm: Toolbox, docker_env: dict[str, str]) -> None:  # noqa: F811
    # the host agent again, syncing every 3 s instead of every minute
    env = {**toolbox_vm.env, "TOOLBOX_CLOCK_INTERVAL": "3"}
    up = subprocess.run([sys.executable, "-m", "toolbox", "up", "-n", toolbox_vm.name], env=env,
                        capture_output=True, text=True, timeout=600)  # fmt: skip
    assert up.returncode == 0, up.stderr
    toolbox_vm.ssh(f"sudo date -s @{int(time.time()) - 3600} >/dev/null")
    wait_for(lambda: abs(guest_time_offset(toolbox_vm.docker_host)) < 1.0, 30, "the guest clock within 1 s of the host's")
    log = (toolbox_vm.instance_dir / "hostagent.log").read_text()
    assert "guest clock was -3" in log and "s off the host's: stepped" in log


CUT_SESSIONS = (
    # every sshd session process but the ones this shell runs under: the host agent's
    "me=$$; anc=; p=$me; while [ \"$p\" -gt 1 ]; do anc=\"$anc $p\"; p=$(awk '{print $4}' /proc/$p/stat); done; "
    "for d in /proc/[0-9]*; do pid=${d#/proc/}; cmd=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null); "
    "case \"$cmd\" in 'sshd: toolbox'*) case \" $anc \" in *\" $pid \"*) ;; *) echo $pid;; esac;; esac; done"
)


def test_ssh_connection_cut_forwards_and_docker_come_back(toolbox_vm: Toolbox, docker_env: dict[str, str],  # noqa: F811
                                                         container: Callable[..., str]) -> None:
    port = port_or_free(0)
    serve_web(container, port)
    wait_for(lambda: "hello-from-httpd" in http_get(port), 60, "the forward before the cut")
    log_file = toolbox_vm.instance_dir / "hostagent.log"
    log_before = log_file.read_text()
    pids = toolbox_vm.ssh(CUT_SESSIONS).stdout.split()
    assert pids, "no sshd session serves the host agent"
    toolbox_vm.ssh(f"sudo kill -9 {' '.join(pids)}")
    cut = time.monotonic()
    wait_for(lambda: "SSH connection made again" in log_file.read_text()[len(log_before):], 30, "the host agent to reconnect")
    wait_for(lambda: docker_cli(docker_env, "version").returncode == 0, 30, "docker.sock to work again")
    wait_for(lambda: "hello-from-httpd" in http_get(port), 30, "the forward to work again")
    took = time.monotonic() - cut
    assert took < 30, f"back after {took:.1f} s"
    print(f"reconnected: docker and the forward answer {took:.1f} s after the cut")
