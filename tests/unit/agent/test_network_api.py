"""Networks and published ports through the real docker CLI against an agent whose network
engine is dry (it records its ip/nft calls instead of touching the build host's network)."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.parse

import agent_harness  # noqa: F401
from test_agent_containers import run


def _api(agent, path: str) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.connect(str(agent.settings.socket))
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = b""
    s.settimeout(3)
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _net(agent):  # type: ignore[no-untyped-def]
    return agent.agent.containers.network


def test_network_lifecycle_and_docker_errors(agent) -> None:  # type: ignore[no-untyped-def]
    out = run(agent, "network", "ls", "--format", "{{.Name}} {{.Driver}}")
    assert sorted(out.stdout.split("\n")[:-1]) == ["bridge bridge", "host host", "none null"]
    net_id = run(agent, "network", "create", "--label", "team=a", "appnet").stdout.strip()
    assert len(net_id) == 64
    doc = json.loads(run(agent, "network", "inspect", "appnet").stdout)[0]
    assert doc["IPAM"]["Config"] == [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}] and doc["Labels"] == {"team": "a"}
    assert run(agent, "network", "create", "appnet").stderr.strip().endswith("network with name appnet already exists")
    custom = run(agent, "network", "create", "--subnet", "10.77.0.0/24", "--gateway", "10.77.0.254", "custom")
    assert custom.returncode == 0, custom.stderr
    clash = run(agent, "network", "create", "--subnet", "10.77.0.128/25", "clash")
    assert clash.returncode != 0 and "Pool overlaps with other one on this address space" in clash.stderr
    missing = run(agent, "network", "inspect", "nosuch")
    assert missing.returncode == 1 and "network nosuch not found" in missing.stderr
    for name in ("bridge", "host", "none"):
        assert f"{name} is a pre-defined network and cannot be removed" in run(agent, "network", "rm", name).stderr
    cid = run(agent, "run", "-d", "--network", "appnet", "--network-alias", "www", "--name", "web", "fake", "sleep", "30").stdout.strip()
    doc = json.loads(run(agent, "network", "inspect", "appnet").stdout)[0]
    assert doc["Containers"][cid]["Name"] == "web" and doc["Containers"][cid]["IPv4Address"] == "172.18.0.2/16"
    settings = json.loads(run(agent, "inspect", "web").stdout)[0]["NetworkSettings"]
    ep = settings["Networks"]["appnet"]
    assert ep["IPAddress"] == "172.18.0.2" and ep["Gateway"] == "172.18.0.1" and ep["Aliases"] == ["www"]
    assert ep["DNSNames"] == ["web", cid[:12], "www"] and settings["SandboxKey"] == f"/run/netns/tb-{cid[:12]}"
    assert _net(agent).lookup("172.18.0.2", "www") == ["172.18.0.2"]
    busy = run(agent, "network", "rm", "appnet")
    assert busy.returncode != 0 and "has active endpoints" in busy.stderr
    assert run(agent, "network", "connect", "custom", "web").returncode == 0
    assert json.loads(run(agent, "inspect", "web").stdout)[0]["NetworkSettings"]["Networks"]["custom"]["IPAddress"] == "10.77.0.1"
    assert run(agent, "network", "disconnect", "custom", "web").returncode == 0
    assert run(agent, "rm", "-f", "web").returncode == 0
    assert run(agent, "network", "rm", "appnet").returncode == 0
    assert run(agent, "network", "prune", "-f").stdout.split() == ["Deleted", "Networks:", "custom"]


def test_default_bridge_addresses_and_teardown(agent) -> None:  # type: ignore[no-untyped-def]
    kernel = _net(agent).kernel
    out = run(agent, "run", "--name", "one", "--add-host", "db:10.0.0.5", "--dns", "10.0.2.2", "fake", "echo", "ok")
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
    batches = [c[-1] for c in kernel.calls if c[0].endswith("/ip")]
    assert batches[0].startswith("link add name toolbox0 type bridge\n")  # at agent start
    batches = batches[1:]
    assert batches[0].startswith("netns add tb-") and "master toolbox0" in batches[0]
    assert "addr add 172.17.0.2/16 dev eth0" in batches[1] and "route replace default via 172.17.0.1 dev eth0" in batches[1]
    assert batches[-1].rstrip().endswith("netns del tb-" + run(agent, "inspect", "-f", "{{.Id}}", "one").stdout[:12])
    cdir = agent.settings.root / "containers" / run(agent, "inspect", "-f", "{{.Id}}", "one").stdout.strip()
    assert (cdir / "resolv.conf").read_text().startswith("nameserver 10.0.2.2\n")
    assert "10.0.0.5\tdb\n" in (cdir / "hosts").read_text()
    unknown = run(agent, "run", "--rm", "--network", "nosuch", "fake", "true")
    assert unknown.returncode == 125 and "network nosuch not found" in unknown.stderr
    assert run(agent, "run", "--rm", "--network", "bridge", "--network-alias", "x", "fake", "true").returncode == 125
    assert run(agent, "version").returncode == 0  # the engine keeps serving


def test_published_ports_ps_port_conflict_and_events(agent) -> None:  # type: ignore[no-untyped-def]
    wanted = urllib.parse.quote(json.dumps({"type": ["toolbox.port"]}))
    events: list[dict[str, object]] = []
    plain: list[str] = []
    ev = subprocess.Popen(["docker", "events", "--format", "{{.Type}}"], env=agent.env(), stdout=subprocess.PIPE, text=True)

    def read_port_events() -> None:
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.connect(str(agent.settings.socket))
        s.sendall(f"GET /events?filters={wanted} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        buf = b""
        while len(events) < 4 and (chunk := s.recv(4096)):
            buf += chunk
            events[:] = [json.loads(line) for line in buf.split(b"\r\n") if line.startswith(b"{")]
        s.close()

    reader = threading.Thread(target=read_port_events, daemon=True)
    reader.start()
    cid = run(agent, "run", "-d", "--name", "pub", "-p", "127.0.0.1::8080", "-p", "5353/udp", "fake", "sleep", "30").stdout.strip()
    lines = sorted(run(agent, "port", "pub").stdout.splitlines())
    assert lines[0].startswith("5353/udp -> 0.0.0.0:") and lines[1].startswith("8080/tcp -> 127.0.0.1:")
    tcp_port = int(lines[1].rsplit(":", 1)[1])
    ps = run(agent, "ps", "--format", "{{.Ports}}").stdout
    assert f"127.0.0.1:{tcp_port}->8080/tcp" in ps
    status, body = _api(agent, "/toolbox/v1/ports")
    assert status == 200 and {"container": cid, "proto": "tcp", "host_ip": "127.0.0.1", "host_port": tcp_port, "container_port": 8080} in json.loads(body)
    script = [c[-1] for c in _net(agent).kernel.calls if c[0].endswith("/nft")][-1]
    assert f"ip daddr 127.0.0.1 tcp dport {tcp_port} dnat to 172.17.0.2:8080" in script
    clash = run(agent, "run", "--rm", "-p", f"127.0.0.1:{tcp_port}:80", "fake", "true")
    assert clash.returncode == 125 and f"Bind for 127.0.0.1:{tcp_port} failed: port is already allocated" in clash.stderr
    assert run(agent, "rm", "-f", "pub").returncode == 0
    reader.join(10)
    assert [e["Action"] for e in events] == ["publish", "publish", "unpublish", "unpublish"]
    assert {e["Actor"]["Attributes"]["host_port"] for e in events} >= {str(tcp_port)} and events[0]["Actor"]["ID"] == cid
    assert json.loads(_api(agent, "/toolbox/v1/ports")[1]) == []
    ev.terminate()
    plain = ev.communicate(timeout=10)[0].split()
    assert "container" in plain and "toolbox.port" not in plain  # the docker CLI never sees them
