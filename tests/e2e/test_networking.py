"""Container networking on the session's shared VM, through the real docker CLI: the default
bridge with NAT (a container reaches the host's loopback at 10.0.2.2), user-defined networks
whose containers find each other by name and alias, --network none, published ports (TCP and
UDP, at 127.0.0.1 and at the VM's own address, from inside the VM), Docker's errors, nothing
left behind by `docker rm -f`, and running containers' networking across an agent restart.

Images: Debian's busybox-static (scripts/demo-image) loaded with `docker load`; for a UDP
server, the VM's own python3 bind-mounted into a busybox container.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Toolbox

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/local/bin/docker"
IMAGE = "nettest/busybox:latest"
UDP_ECHO = (
    "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 9999))\n"
    "while True:\n    d, a = s.recvfrom(512)\n    s.sendto(b'echo:' + d, a)\n"
)
VM_PYTHON = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]


@pytest.fixture(scope="module")
def denv(toolbox_vm: Toolbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = {**toolbox_vm.env, "DOCKER_HOST": toolbox_vm.docker_host, "DOCKER_CONFIG": str(tmp_path_factory.mktemp("dcfg"))}
    archive = subprocess.run([sys.executable, str(REPO / "scripts" / "demo-image"), IMAGE], capture_output=True, check=True).stdout
    subprocess.run([DOCKER, "load"], input=archive, env=env, capture_output=True, check=True, timeout=300)
    yield env


def dk(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True, timeout=timeout)


def ok(env: dict[str, str], *args: str) -> str:
    out = dk(env, *args)
    assert out.returncode == 0, f"docker {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def guest_python(vm: Toolbox, code: str) -> str:
    """Run Python in the VM (as the toolbox user) and return its output."""
    out = vm.run("ssh", "-n", vm.name, "--", "python3", "-c", code, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def vm_address(vm: Toolbox) -> str:
    return vm.ssh("ip -4 -o addr show dev eth0").stdout.split("inet ")[1].split("/")[0]


def test_user_network_containers_reach_each_other_by_name(denv: dict[str, str]) -> None:
    ok(denv, "network", "create", "e2enet")
    try:
        ok(denv, "run", "-d", "--name", "srv", "--network", "e2enet", "--network-alias", "web", IMAGE, "sh", "-c",
           "mkdir /www && echo hello-from-srv > /www/index.html && httpd -p 80 -h /www && exec nc -ll -p 7000 -e echo nc-ok")  # fmt: skip
        retry = "for i in 1 2 3 4 5 6 7 8 9 10; do {} && break; sleep 1; done; "  # the server may still be starting
        script = (retry.format("ping -c1 -W5 srv >/dev/null") + "echo ping-ok; " + retry.format("wget -q -O - http://web/")
                  + retry.format("nc srv 7000 </dev/null") + "nslookup srv | grep -c 'Address: 172' ")  # fmt: skip
        out = ok(denv, "run", "--rm", "--network", "e2enet", IMAGE, "sh", "-c", script)
        assert out.splitlines() == ["ping-ok", "hello-from-srv", "nc-ok", "1"], out
        doc = json.loads(ok(denv, "network", "inspect", "e2enet"))[0]
        assert [c["Name"] for c in doc["Containers"].values()] == ["srv"]
        ip = json.loads(ok(denv, "inspect", "srv"))[0]["NetworkSettings"]["Networks"]["e2enet"]["IPAddress"]
        assert doc["Containers"][next(iter(doc["Containers"]))]["IPv4Address"] == f"{ip}/16"
        other = dk(denv, "run", "--rm", IMAGE, "sh", "-c", "ping -c1 -W3 srv")  # the default bridge has no DNS
        assert other.returncode != 0
        busy = dk(denv, "network", "rm", "e2enet")
        assert busy.returncode != 0 and "has active endpoints" in busy.stderr
    finally:
        dk(denv, "rm", "-f", "srv")
        assert dk(denv, "network", "rm", "e2enet").returncode == 0


def test_network_none_has_no_route_out(denv: dict[str, str]) -> None:
    out = dk(denv, "run", "--rm", "--network", "none", IMAGE, "sh", "-c", "ip -o link | cut -d: -f2; ping -c1 -W3 10.0.2.2")
    assert out.returncode != 0 and out.stdout.split()[0] == "lo" and len(out.stdout.split("\n")) <= 3
    assert "Network is unreachable" in out.stderr


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"hello from the host's loopback\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_container_reaches_the_hosts_loopback_through_nat(denv: dict[str, str]) -> None:
    server = socketserver.TCPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        out = ok(denv, "run", "--rm", IMAGE, "wget", "-q", "-O", "-", f"http://10.0.2.2:{port}/")
        assert out == "hello from the host's loopback\n"
    finally:
        server.shutdown()
        server.server_close()


def test_published_ports_answer_inside_the_vm(denv: dict[str, str], toolbox_vm: Toolbox) -> None:
    ok(denv, "run", "-d", "--name", "pub", "-p", "18080:80", "-p", "127.0.0.1::81", "-p", "15353:9999/udp", *VM_PYTHON,
       IMAGE, "sh", "-c", f"echo web80 > /tmp/i; httpd -p 80 -h /tmp; httpd -p 81 -h /tmp; exec /usr/bin/python3 -c \"{UDP_ECHO}\"")  # fmt: skip
    try:
        ports = dict(line.split(" -> ") for line in ok(denv, "port", "pub").splitlines())
        assert ports["80/tcp"] == "0.0.0.0:18080" and ports["9999/udp"] == "0.0.0.0:15353"
        picked = int(ports["81/tcp"].split(":")[1])
        assert ports["81/tcp"].startswith("127.0.0.1:") and picked > 1024
        assert f"127.0.0.1:{picked}->81/tcp" in ok(denv, "ps", "--filter", "name=pub", "--format", "{{.Ports}}")
        addr = vm_address(toolbox_vm)
        out = guest_python(toolbox_vm, f"""
import json, socket, time, urllib.request
def get(url):
    for attempt in range(20):  # the server in the container may still be starting
        try:
            return urllib.request.urlopen(url, timeout=10).read().decode().strip()
        except OSError:
            time.sleep(1)
for host in ("127.0.0.1", "{addr}"):
    print(get(f"http://{{host}}:18080/i"))
    for attempt in range(20):  # the python server in the container may still be starting
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
        s.sendto(b"ping", (host, 15353))
        try:
            print(s.recvfrom(64)[0].decode()); break
        except socket.timeout:
            time.sleep(1)
print(get("http://127.0.0.1:{picked}/i"))
c = socket.socket(socket.AF_UNIX); c.connect("/run/toolbox/docker.sock")
c.sendall(b"GET /toolbox/v1/ports HTTP/1.0\\r\\n\\r\\n")
data = b""
while chunk := c.recv(65536):
    data += chunk
print(json.dumps(sorted((p["proto"], p["host_ip"], p["host_port"], p["container_port"]) for p in json.loads(data.split(b"\\r\\n\\r\\n", 1)[1]))))
""")
        lines = out.splitlines()
        assert lines[:5] == ["web80", "echo:ping", "web80", "echo:ping", "web80"], out
        assert json.loads(lines[5]) == [["tcp", "0.0.0.0", 18080, 80], ["tcp", "127.0.0.1", picked, 81], ["udp", "0.0.0.0", 15353, 9999]]
    finally:
        dk(denv, "rm", "-f", "pub")


def test_port_conflict_and_unknown_network_are_dockers_errors(denv: dict[str, str]) -> None:
    ok(denv, "run", "-d", "--name", "holder", "-p", "18081:80", IMAGE, "sleep", "600")
    try:
        clash = dk(denv, "run", "--rm", "-p", "18081:80", IMAGE, "true")
        assert clash.returncode == 125 and "Bind for 0.0.0.0:18081 failed: port is already allocated" in clash.stderr
        missing = dk(denv, "run", "--rm", "--network", "nosuchnet", IMAGE, "true")
        assert missing.returncode == 125 and "network nosuchnet not found" in missing.stderr
        assert "network nosuchnet not found" in dk(denv, "network", "inspect", "nosuchnet").stderr
        assert "pre-defined network and cannot be removed" in dk(denv, "network", "rm", "bridge").stderr
        assert ok(denv, "run", "--rm", IMAGE, "echo", "still serving") == "still serving\n"
    finally:
        dk(denv, "rm", "-f", "holder")


def test_rm_f_leaves_no_veth_netns_or_rule(denv: dict[str, str], toolbox_vm: Toolbox) -> None:
    before = set(toolbox_vm.ssh("ls /sys/class/net").stdout.split())
    cid = ok(denv, "run", "-d", "-p", "18082:80", IMAGE, "sleep", "600").strip()
    during = set(toolbox_vm.ssh("ls /sys/class/net").stdout.split())
    new = during - before
    assert len(new) == 1 and next(iter(new)).startswith("veth")
    assert f"tb-{cid[:12]}" in toolbox_vm.ssh("ls /run/netns").stdout
    ok(denv, "rm", "-f", cid)
    state = toolbox_vm.ssh("ls /sys/class/net; echo ---; ls /run/netns; echo ---; sudo nft list table ip toolbox").stdout
    links, netns, rules = state.split("---")
    assert not (set(links.split()) & new) and f"tb-{cid[:12]}" not in netns and "18082" not in rules


def test_agent_restart_keeps_running_containers_networking(denv: dict[str, str], toolbox_vm: Toolbox) -> None:
    ok(denv, "network", "create", "keepnet")
    try:
        ok(denv, "run", "-d", "--name", "keeper", "--network", "keepnet", "-p", "18083:80", IMAGE, "sh", "-c",
           "echo kept > /tmp/i; httpd -f -p 80 -h /tmp")  # fmt: skip
        ip = ok(denv, "inspect", "-f", "{{.NetworkSettings.Networks.keepnet.IPAddress}}", "keeper").strip()
        toolbox_vm.ssh("sudo kill $(pgrep -f '^python3 -m toolbox_agent$')")
        deadline = time.monotonic() + 120
        while dk(denv, "version").returncode != 0:
            assert time.monotonic() < deadline, "the agent did not come back"
            time.sleep(1)
        assert ok(denv, "inspect", "-f", "{{.NetworkSettings.Networks.keepnet.IPAddress}}", "keeper").strip() == ip
        out = guest_python(toolbox_vm, "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:18083/i', timeout=20).read().decode().strip())")
        assert out.strip() == "kept"
        assert ok(denv, "run", "--rm", "--network", "keepnet", IMAGE, "wget", "-q", "-O", "-", "http://keeper/i") == "kept\n"
        clash = dk(denv, "run", "--rm", "-p", "18083:80", IMAGE, "true")  # the port is held again
        assert clash.returncode == 125 and "port is already allocated" in clash.stderr
    finally:
        dk(denv, "rm", "-f", "keeper")
        dk(denv, "network", "rm", "keepnet")
