"""The network engine's pure parts: IPAM, the ip/nft builders, port and network-config
parsing, /etc files, the embedded DNS's messages."""

from __future__ import annotations

import asyncio
import socket
import struct
from ipaddress import IPv4Network

import pytest

import agent_harness  # noqa: F401  (puts the guest agent on sys.path)
from toolbox_agent.network import dns, etc, ipam, kernel, nft
from toolbox_agent.network.errors import InvalidNetworkParameter, PortAllocated
from toolbox_agent.network.model import Network
from toolbox_agent.network.ports import PortRequest, Reservations, exposed_ports, requested_ports


def test_subnets_skip_used_pools_and_addresses_are_lowest_free() -> None:
    used = [IPv4Network("172.17.0.0/16"), IPv4Network("172.18.0.0/16")]
    assert ipam.pick_subnet(used) == IPv4Network("172.19.0.0/16")
    all16 = [IPv4Network(f"172.{n}.0.0/16") for n in range(17, 32)]
    assert ipam.pick_subnet(all16) == IPv4Network("192.168.0.0/20")
    net, gw = IPv4Network("10.9.0.0/29"), ipam.gateway_for(IPv4Network("10.9.0.0/29"))
    assert str(gw) == "10.9.0.1"
    assert str(ipam.allocate(net, gw, ["10.9.0.2", ""])) == "10.9.0.3"
    assert str(ipam.allocate(net, gw, [], requested="10.9.0.5")) == "10.9.0.5"
    with pytest.raises(ValueError, match="already in use"):
        ipam.allocate(net, gw, ["10.9.0.5"], requested="10.9.0.5")
    with pytest.raises(ValueError, match="no available IPv4 addresses"):
        ipam.allocate(net, gw, [f"10.9.0.{i}" for i in range(2, 7)])
    with pytest.raises(ValueError):
        ipam.gateway_for(net, "10.10.0.1")
    assert ipam.mac_for("172.17.0.2") == "02:42:ac:11:00:02"


def test_ip_batches_for_a_container() -> None:
    assert kernel.netns_path("ab" * 32) == "/run/netns/tb-abababababab"
    veth = kernel.veth_name("c" * 64, "n" * 64)
    assert veth.startswith("veth") and len(veth) <= 15 and veth == kernel.veth_name("c" * 64, "n" * 64)
    assert kernel.veth_lines("tb-x", "veth1", "eth0", "02:42:ac:11:00:02", "toolbox0", True) == [
        "netns add tb-x",
        "link add veth1 type veth peer name eth0 address 02:42:ac:11:00:02 netns tb-x",
        "link set veth1 master toolbox0",
        "link set veth1 type bridge_slave hairpin on",
        "link set veth1 up",
    ]
    assert kernel.inside_lines("eth0", "172.17.0.2", 16, "172.17.0.1", True, True) == [
        "addr add 172.17.0.2/16 dev eth0", "link set eth0 up", "link set lo up", "route replace default via 172.17.0.1 dev eth0",
    ]  # fmt: skip
    assert kernel.inside_lines("eth1", "172.18.0.2", 16, "172.18.0.1", False, False) == ["addr add 172.18.0.2/16 dev eth1", "link set eth1 up"]
    assert kernel.teardown_lines("tb-x", ["veth1", "veth2"]) == ["link del veth1", "link del veth2", "netns del tb-x"]
    assert kernel.bridge_lines("toolbox0", "172.17.0.1", 16, True)[0] == "link add name toolbox0 type bridge"


def _net(name: str, bridge: str, subnet: str, internal: bool = False) -> Network:
    return Network("i" + name, name, "bridge", "", subnet=subnet, gateway=subnet.replace("0/16", "1"), bridge=bridge, internal=internal)


def test_nft_ruleset_nat_ports_and_isolation() -> None:
    nets = [_net("bridge", "toolbox0", "172.17.0.0/16"), _net("app", "br-app", "172.18.0.0/16"),
            _net("priv", "br-priv", "172.19.0.0/16", internal=True), Network("h", "host", "host", "")]  # fmt: skip
    fwd = [nft.Forward("tcp", "0.0.0.0", 8080, "172.17.0.2", 80), nft.Forward("udp", "127.0.0.1", 5353, "172.18.0.3", 53)]
    text = nft.ruleset(nets, fwd)
    assert text.startswith("table ip toolbox\ndelete table ip toolbox\ntable ip toolbox {\n")
    assert "\t\ttcp dport 8080 dnat to 172.17.0.2:80\n" in text
    assert "\t\tip daddr 127.0.0.1 udp dport 5353 dnat to 172.18.0.3:53\n" in text
    assert text.count("fib daddr type local jump ports") == 2
    assert 'ip saddr 172.17.0.0/16 oifname != "toolbox0" masquerade' in text
    assert 'ip saddr 127.0.0.0/8 oifname "br-app" masquerade' in text
    assert "172.19.0.0/16" not in text  # an internal network has no egress
    assert 'iifname "br-priv" oifname != "br-priv" drop' in text
    assert 'iifname "toolbox0" oifname { "br-app", "br-priv" } drop' in text
    assert text.index("ct status dnat accept") < text.index('oifname { "br-app", "br-priv" } drop')


def test_port_requests_from_bindings_and_publish_all() -> None:
    hc = {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
                           "81": [{"HostIp": "::", "HostPort": "81"}], "90/tcp": [{"HostPort": "9000-9002"}]},
          "PublishAllPorts": True}  # fmt: skip
    reqs = requested_ports(hc, {"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}})
    assert PortRequest("tcp", "0.0.0.0", 8080, 8080, 80) in reqs
    assert PortRequest("udp", "127.0.0.1", 0, 0, 53) in reqs
    assert PortRequest("tcp", "0.0.0.0", 9000, 9002, 90) in reqs
    assert PortRequest("tcp", "0.0.0.0", 0, 0, 443) in reqs  # -P
    assert not any(r.container_port == 81 for r in reqs)  # IPv6 only: no IPv6 NAT in the VM
    for bad, message in (({"x/tcp": []}, "invalid containerPort: x"), ({"80/icmp": []}, "invalid proto"),
                         ({"80/tcp": [{"HostPort": "nope"}]}, "invalid hostPort: nope"),
                         ({"80/tcp": [{"HostIp": "1.2.3", "HostPort": "1"}]}, "invalid IP address")):  # fmt: skip
        with pytest.raises(InvalidNetworkParameter, match=message):
            requested_ports({"PortBindings": bad}, {})
    assert exposed_ports({"ExposedPorts": {"443/tcp": {}, "80/tcp": {}}}, {"PortBindings": {"53/udp": []}}) == ["53/udp", "80/tcp", "443/tcp"]


def test_reservations_hold_ports_and_refuse_a_second_claim() -> None:
    res = Reservations(loopback_only=True)
    port = res.reserve(PortRequest("tcp", "0.0.0.0", 0, 0, 80))
    assert port > 0
    with pytest.raises(PortAllocated, match=f"Bind for 0.0.0.0:{port} failed: port is already allocated"):
        res.reserve(PortRequest("tcp", "0.0.0.0", port, port, 81))
    with pytest.raises(PortAllocated, match="port is already allocated"):
        res.reserve(PortRequest("tcp", "127.0.0.1", port, port, 81))
    assert res.reserve(PortRequest("udp", "0.0.0.0", port, port, 81)) == port  # another protocol
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    other = taken.getsockname()[1]
    with pytest.raises(PortAllocated, match=f"Bind for 0.0.0.0:{other} failed"):
        res.reserve(PortRequest("tcp", "0.0.0.0", other, other, 80))
    taken.close()
    for key in list(res.held):
        res.held.pop(key).close()


def test_resolv_conf_and_hosts() -> None:
    vm = etc.parse_resolv("# by udhcpc\nnameserver 10.0.2.3\nnameserver 127.0.0.53\nsearch lan\noptions edns0\n")
    assert vm.nameservers == ["10.0.2.3", "127.0.0.53"] and vm.search == ["lan"]
    assert etc.resolv_conf({}, vm) == "nameserver 10.0.2.3\nnameserver 127.0.0.53\nsearch lan\noptions edns0\n"
    assert etc.resolv_conf({"Dns": ["10.0.2.2"], "DnsSearch": ["corp"]}, vm).startswith("nameserver 10.0.2.2\nsearch corp\n")
    assert etc.resolv_conf({"Dns": ["10.0.2.2"]}, vm, embedded="172.18.0.1") == "nameserver 172.18.0.1\nsearch lan\noptions edns0 ndots:0\n"
    assert etc.upstreams({"Dns": ["10.0.2.2"]}, vm) == ["10.0.2.2"]
    hosts = etc.hosts_file("web", "172.18.0.2", ["db:10.0.0.5", "gw:host-gateway"], "10.0.2.2")
    assert "10.0.0.5\tdb\n" in hosts and "10.0.2.2\tgw\n" in hosts and hosts.endswith("172.18.0.2\tweb\n")


def _query(name: str, qtype: int = dns.QTYPE_A, qid: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def test_dns_messages() -> None:
    q = dns.parse_query(_query("Web.Example"))
    assert (q.id, q.name, q.qtype) == (0x1234, "web.example", 1)
    reply = dns.answer(_query("web"), dns.parse_query(_query("web")), ["172.18.0.2", "172.18.0.3"])
    qid, flags, qd, an = struct.unpack_from("!HHHH", reply)
    assert (qid, qd, an) == (0x1234, 1, 2) and flags & 0x8000 and flags & 0x0400 and flags & 0x000F == 0
    assert reply.endswith(bytes([172, 18, 0, 3]))
    assert struct.unpack_from("!HHHH", dns.answer(_query("web", dns.QTYPE_AAAA), dns.parse_query(_query("web", dns.QTYPE_AAAA)), ["1.2.3.4"]))[3] == 0
    with pytest.raises(ValueError):
        dns.parse_query(b"\x00\x01")


def test_dns_server_answers_names_and_forwards_the_rest() -> None:
    async def scenario() -> tuple[bytes, bytes, bytes]:
        loop = asyncio.get_running_loop()

        class Upstream(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                q = dns.parse_query(data)
                self.t.sendto(dns.answer(data, q, ["10.0.2.99"]), addr)  # type: ignore[attr-defined]

        up_t, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        up_port = up_t.get_extra_info("sockname")[1]
        servers = dns.DnsServers(lambda src, name: ["172.18.0.7"] if name == "db" else None, lambda src: ["127.0.0.1"], port=0)
        servers.upstream_port = up_port
        await servers.listen("127.0.0.1")
        port = servers.listeners["127.0.0.1"].get_extra_info("sockname")[1]

        async def ask(data: bytes) -> bytes:
            fut: asyncio.Future[bytes] = loop.create_future()

            class Client(asyncio.DatagramProtocol):
                def datagram_received(self, d: bytes, addr: tuple[str, int]) -> None:
                    fut.set_result(d)

            t, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
            t.sendto(data)
            try:
                return await asyncio.wait_for(fut, 5)
            finally:
                t.close()

        own, other, bad = await ask(_query("db")), await ask(_query("example.org")), await ask(b"\x00\x07\x00")
        servers.close("127.0.0.1")
        up_t.close()
        return own, other, bad

    own, other, bad = asyncio.run(scenario())
    assert own.endswith(bytes([172, 18, 0, 7]))
    assert other.endswith(bytes([10, 0, 2, 99]))
    assert struct.unpack_from("!HH", bad)[1] & 0x000F == dns.RCODE_FORMERR


def test_an_agent_restart_keeps_addresses_and_ports_a_reboot_frees_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from toolbox_agent.events import EventBus
    from toolbox_agent.network.manager import NetworkManager

    hc = {"NetworkMode": "default", "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}}

    async def first_life() -> tuple[str | None, int]:
        nets = NetworkManager(tmp_path / "net", EventBus(), dry=True)
        await nets.recover()
        mode, atts = nets.plan(hc, {}, {})
        nets.configure("c" * 64, "/web", mode, atts)
        (tmp_path / "c").mkdir()
        netns = await nets.attach("c" * 64, "/web", "web", hc, {}, tmp_path / "c")
        port = nets.published()[0]["host_port"]
        for m in nets.sandboxes["c" * 64].ports:
            nets.reservations.release(m)  # the agent process ends: its sockets close
        return netns, port

    async def second_life(netns_survived: bool) -> tuple[list[dict[str, object]], str, list[tuple[str, ...]]]:
        nets = NetworkManager(tmp_path / "net", EventBus(), dry=True)
        nets.kernel.netns_exists = lambda path: netns_survived  # type: ignore[method-assign]
        await nets.recover()
        published = nets.published()
        ip = nets.sandboxes["c" * 64].attachments[nets.get("bridge").id].ip
        for m in nets.sandboxes["c" * 64].ports:
            nets.reservations.release(m)
        return published, ip, nets.kernel.calls

    netns, port = asyncio.run(first_life())
    assert netns == "/run/netns/tb-cccccccccccc"
    published, ip, calls = asyncio.run(second_life(True))
    assert published == [{"container": "c" * 64, "proto": "tcp", "host_ip": "127.0.0.1", "host_port": port, "container_port": 80}]
    assert ip == "172.17.0.2" and not any("netns del" in c[-1] for c in calls)
    assert f"ip daddr 127.0.0.1 tcp dport {port} dnat to 172.17.0.2:80" in calls[-1][-1]
    published, ip, calls = asyncio.run(second_life(False))  # after a reboot /run/netns is empty
    assert published == [] and ip == "" and any("netns del tb-cccccccccccc" in c[-1] for c in calls)
