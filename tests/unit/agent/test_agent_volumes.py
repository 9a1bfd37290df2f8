"""Volumes and mounts through the real docker CLI, with fake_crun.py standing in for crun
(it runs no mount namespace, so what the container would see is read from the runtime
config the agent wrote, and from the volume directories on disk)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import docker
import pytest

import agent_harness
from toolbox_agent.containers.mounts import MountError, parse_bind, parse_mount, plan, tmpfs_options


def run(agent, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(["docker", *args], env=agent.env(), capture_output=True, text=True, input=input, timeout=30)


def oci_mounts(agent, name: str) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    cid = run(agent, "inspect", "-f", "{{.Id}}", name).stdout.strip()
    config = json.loads((agent.settings.containers_dir / cid / "bundle" / "config.json").read_text())
    return {m["destination"]: m for m in config["mounts"]}


def add_image_with_volume(agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """"withvol": the fake image's layer plus /data/seed, and VOLUME /data."""
    layer = tmp_path / "layer2"
    (layer / "data").mkdir(parents=True)
    (layer / "data" / "seed").write_text("from the image\n")
    base = agent.images.images["fake:latest"]
    cfg = {"config": {**base.config["config"], "Volumes": {"/data": {}}}}
    agent.images.images["withvol:latest"] = agent_harness.FakeImage("sha256:" + "cd" * 32, cfg, [*base.layer_dirs, layer], ["withvol:latest"])


def test_parse_binds_and_mounts_with_dockers_messages(tmp_path: Path) -> None:
    mp = parse_bind("data:/srv/data:ro")
    assert (mp.type, mp.name, mp.destination, mp.rw, mp.mode) == ("volume", "data", "/srv/data", False, "ro")
    mp = parse_bind("/host/dir:/dst/")
    assert (mp.type, mp.source, mp.destination, mp.rw, mp.propagation, mp.create_source) == ("bind", "/host/dir", "/dst", True, "rprivate", True)
    assert parse_bind("v:/d:nocopy").copy_data is False
    for raw, message in [
        ("/only:ro", "invalid volume specification: '/only:ro'"),
        ("a:b:c:d", "invalid volume specification: 'a:b:c:d'"),
        ("v:/d:bogus", "invalid mode: bogus"),
        ("v:relative", "invalid volume specification: 'v:relative': invalid mount config for type \"volume\": "
                       "invalid mount path: 'relative' mount path must be absolute"),
        ("/src:/", "invalid volume specification: '/src:/': invalid mount config for type \"bind\": "
                   "invalid specification: destination can't be '/'"),
    ]:  # fmt: skip
        with pytest.raises(MountError) as info:
            parse_bind(raw)
        assert str(info.value) == message
    with pytest.raises(MountError) as info:
        parse_mount({"Type": "bind", "Source": str(tmp_path / "nope"), "Target": "/x"})
    assert str(info.value) == f'invalid mount config for type "bind": bind source path does not exist: {tmp_path / "nope"}'
    with pytest.raises(MountError, match="must not set ReadOnly mode when using anonymous volumes"):
        parse_mount({"Type": "volume", "Target": "/x", "ReadOnly": True})
    tmpfs = parse_mount({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1770}})
    assert tmpfs.tmpfs_options == "mode=1770,size=64m"
    assert tmpfs_options("exec,size=1m") == ["nosuid", "nodev", "exec", "size=1m"]
    with pytest.raises(MountError, match="Duplicate mount point: /d"):
        plan({"Binds": ["a:/d"], "Mounts": [{"Type": "volume", "Source": "b", "Target": "/d"}]}, {}, [])
    planned = plan({"Binds": ["/h:/a/b"], "Tmpfs": {"/t": ""}}, {"Volumes": {"/a": {}, "/t": {}}}, [])
    assert [(m.type, m.destination) for m in planned] == [("volume", "/a"), ("bind", "/a/b")]


def test_volume_cli_create_ls_inspect_rm_prune(agent) -> None:  # type: ignore[no-untyped-def]
    assert run(agent, "volume", "create", "--label", "app=web", "webdata").stdout.strip() == "webdata"
    assert run(agent, "volume", "create", "plain").returncode == 0
    doc = json.loads(run(agent, "volume", "inspect", "webdata").stdout)[0]
    assert doc["Driver"] == "local" and doc["Scope"] == "local" and doc["Labels"] == {"app": "web"}
    assert doc["Mountpoint"] == str(agent.settings.root / "volumes" / "webdata" / "_data") and doc["CreatedAt"].endswith("Z")
    assert Path(doc["Mountpoint"]).is_dir()
    assert run(agent, "volume", "ls", "-q", "--filter", "label=app=web").stdout.split() == ["webdata"]
    assert run(agent, "volume", "ls", "-q", "--filter", "name=pla").stdout.split() == ["plain"]
    assert run(agent, "volume", "ls", "--format", "{{.Driver}} {{.Name}}").stdout.split("\n")[:2] == ["local plain", "local webdata"]
    out = run(agent, "volume", "create", "bad/name")
    assert out.returncode == 1 and 'create bad/name: "bad/name" includes invalid characters for a local volume name' in out.stderr
    out = run(agent, "volume", "inspect", "nosuch")
    assert out.returncode == 1 and "get nosuch: no such volume" in out.stderr
    # in use (even by a stopped container) -> 409 with Docker's message; the engine keeps serving
    cid = run(agent, "create", "-v", "webdata:/srv", "fake", "true").stdout.strip()
    out = run(agent, "volume", "rm", "webdata")
    assert out.returncode == 1 and f"remove webdata: volume is in use - [{cid}]" in out.stderr
    assert run(agent, "volume", "ls", "-q", "--filter", "dangling=true").stdout.split() == ["plain"]
    assert run(agent, "volume", "prune", "-f").stdout.count("plain") == 0  # only anonymous ones without --all
    assert "plain" in run(agent, "volume", "prune", "-af").stdout
    assert run(agent, "rm", cid).returncode == 0
    assert run(agent, "volume", "rm", "webdata").stdout.strip() == "webdata"
    assert run(agent, "volume", "ls", "-q").stdout == ""


def test_volume_events(agent) -> None:  # type: ignore[no-untyped-def]
    since = run(agent, "version", "-f", "{{.Server.Version}}") and str(int(__import__("time").time()) - 1)
    run(agent, "run", "--rm", "-v", "evvol:/data", "fake", "true")
    run(agent, "volume", "rm", "evvol")
    out = run(agent, "events", "--since", since, "--until", "+0s" if False else str(int(__import__("time").time()) + 1),
              "--filter", "type=volume", "--format", "{{.Action}} {{.Actor.ID}}")  # fmt: skip
    assert out.stdout.split("\n")[:4] == ["create evvol", "mount evvol", "unmount evvol", "destroy evvol"], out.stdout + out.stderr


def test_named_volume_copy_up_and_survives_rm(agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the fake image has /etc/passwd: an empty named volume on /etc takes it (copy-up), nocopy does not
    assert run(agent, "run", "--name", "first", "-v", "etcvol:/etc", "fake", "true").returncode == 0
    mountpoint = Path(json.loads(run(agent, "volume", "inspect", "etcvol").stdout)[0]["Mountpoint"])
    assert (mountpoint / "passwd").read_text().startswith("root:")
    assert oci_mounts(agent, "first")["/etc"] == {"destination": "/etc", "type": "bind", "source": str(mountpoint),
                                                  "options": ["rbind", "rprivate", "rw"]}  # fmt: skip
    order = [m for m in oci_mounts(agent, "first")]
    assert order.index("/etc") < order.index("/etc/hosts")  # the volume first, Docker's files over it
    (mountpoint / "kept").write_text("still here\n")
    assert run(agent, "rm", "-v", "first").returncode == 0  # -v removes anonymous volumes only
    assert (mountpoint / "kept").read_text() == "still here\n"
    assert run(agent, "run", "--rm", "--mount", "type=volume,source=empty,target=/etc,volume-nocopy", "fake", "true").returncode == 0
    assert list(Path(json.loads(run(agent, "volume", "inspect", "empty").stdout)[0]["Mountpoint"]).iterdir()) == []
    doc = json.loads(run(agent, "inspect", run(agent, "create", "-v", "etcvol:/etc:ro", "fake", "true").stdout.strip()).stdout)[0]
    assert doc["Mounts"] == [{"Type": "volume", "Name": "etcvol", "Source": str(mountpoint), "Destination": "/etc",
                              "Driver": "local", "Mode": "ro", "RW": False, "Propagation": ""}]  # fmt: skip


def test_anonymous_volumes_rm_v_and_auto_remove(agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    add_image_with_volume(agent, tmp_path)
    assert run(agent, "create", "--name", "anon", "-v", "/scratch", "withvol", "true").returncode == 0
    mounts = json.loads(run(agent, "inspect", "-f", "{{json .Mounts}}", "anon").stdout)
    assert sorted(m["Destination"] for m in mounts) == ["/data", "/scratch"]
    names = [m["Name"] for m in mounts]
    assert all(len(n) == 64 and m["Type"] == "volume" and m["RW"] for n, m in zip(names, mounts))
    assert run(agent, "start", "-a", "anon").returncode == 0
    data = next(Path(m["Source"]) for m in mounts if m["Destination"] == "/data")
    assert (data / "seed").read_text() == "from the image\n"  # copy-up of the image's VOLUME
    # --volumes-from shares them (read-only here); the donor's rm -v keeps what the other still uses
    assert run(agent, "create", "--name", "taker", "--volumes-from", "anon:ro", "fake", "true").returncode == 0
    taken = json.loads(run(agent, "inspect", "-f", "{{json .Mounts}}", "taker").stdout)
    assert sorted((m["Name"], m["RW"]) for m in taken) == sorted((n, False) for n in names)
    assert run(agent, "rm", "-v", "anon").returncode == 0
    assert sorted(run(agent, "volume", "ls", "-q").stdout.split()) == sorted(names)
    assert run(agent, "rm", "-v", "taker").returncode == 0
    assert run(agent, "volume", "ls", "-q").stdout == ""
    assert run(agent, "run", "--rm", "withvol", "true").returncode == 0  # --rm takes its anonymous volume
    assert run(agent, "volume", "ls", "-q").stdout == ""
    api = docker.APIClient(base_url=agent.url, version="auto")
    with pytest.raises(docker.errors.NotFound, match="No such container: nosuch"):  # the CLI would try a pull on 404
        api.create_container("fake", ["true"], host_config=api.create_host_config(volumes_from=["nosuch"]))


def test_binds_tmpfs_and_invalid_specs(agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    made = tmp_path / "made" / "by-v"
    ro = tmp_path / "ro"
    ro.mkdir()
    out = run(agent, "run", "--name", "binds", "-v", f"{made}:/rw", "--mount", f"type=bind,source={ro},target=/ro,readonly",
              "--tmpfs", "/run:size=1m", "--mount", "type=tmpfs,target=/t,tmpfs-size=2097152,tmpfs-mode=1770", "fake", "true")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert made.is_dir()  # -v makes a missing host directory, as Docker does
    m = oci_mounts(agent, "binds")
    assert m["/rw"]["source"] == str(made) and m["/rw"]["options"][-1] == "rw"
    assert m["/ro"]["source"] == str(ro) and m["/ro"]["options"][-1] == "ro"
    assert m["/run"]["type"] == "tmpfs" and m["/run"]["options"] == ["noexec", "nosuid", "nodev", "size=1m"]
    assert m["/t"]["options"] == ["noexec", "nosuid", "nodev", "mode=1770", "size=2m"]
    mounts = json.loads(run(agent, "inspect", "-f", "{{json .Mounts}}", "binds").stdout)
    assert {"Type": "bind", "Source": str(ro), "Destination": "/ro", "Mode": "", "RW": False, "Propagation": "rprivate"} in mounts
    out = run(agent, "run", "--mount", "type=bind,source=/no/such/dir,target=/x", "fake", "true")
    assert out.returncode == 125 and 'invalid mount config for type "bind": bind source path does not exist: /no/such/dir' in out.stderr
    out = run(agent, "run", "-v", "vol:relative", "fake", "true")
    assert out.returncode == 125 and "invalid volume specification: 'vol:relative'" in out.stderr
    out = run(agent, "run", "-v", "vola:/d", "-v", "volb:/d", "fake", "true")  # (one letter would be a drive, to the CLI)
    assert out.returncode == 125 and "Duplicate mount point: /d" in out.stderr
    assert run(agent, "volume", "ls", "-q").stdout == ""  # a refused create made no volume
    assert run(agent, "version").returncode == 0


def test_cp_into_a_volume_of_a_stopped_container(agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "in.txt"
    src.write_text("into the volume\n")
    assert run(agent, "create", "--name", "cpvol", "-v", "cpdata:/data", "fake", "true").returncode == 0
    assert run(agent, "cp", str(src), "cpvol:/data/").returncode == 0
    mountpoint = Path(json.loads(run(agent, "volume", "inspect", "cpdata").stdout)[0]["Mountpoint"])
    assert (mountpoint / "in.txt").read_text() == "into the volume\n"
    (mountpoint / "out.txt").write_text("out of the volume\n")
    assert run(agent, "cp", "cpvol:/data/out.txt", str(tmp_path / "out.txt")).returncode == 0
    assert (tmp_path / "out.txt").read_text() == "out of the volume\n"


def test_local_driver_options_mount_while_used(tmp_path: Path) -> None:
    from toolbox_agent.events import EventBus
    from toolbox_agent.volumes import InvalidVolume, VolumeStore

    events = EventBus()
    store = VolumeStore(tmp_path / "volumes", events)
    vol = store.create("ram", options={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    with pytest.raises(InvalidVolume, match='create bad: invalid option key: "colour"'):
        store.create("bad", options={"colour": "red"})
    store.mount("ram", "c1", "/data", True)
    store.mount("ram", "c2", "/data", True)
    try:
        assert os.path.ismount(vol.mountpoint)
        store.unmount("ram", "c1")
        assert os.path.ismount(vol.mountpoint)  # c2 still uses it
    finally:
        store.unmount("ram", "c2")
    assert not os.path.ismount(vol.mountpoint)
    again = VolumeStore(tmp_path / "volumes", events)  # an agent restart finds it on disk
    assert again.get("ram").options == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    again.mount("ram", "c3", "/data", True, quiet=True)  # a container still running: no event
    assert os.path.ismount(vol.mountpoint) and [e["Action"] for e in events._history if e["Type"] == "volume"].count("mount") == 2
    again.unmount("ram", "c3")
    assert not os.path.ismount(vol.mountpoint)


def test_cp_into_read_only_volume_or_rootfs_is_refused(agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "f.txt"
    src.write_text("x\n")
    assert run(agent, "create", "--name", "rocp", "--read-only", "-v", "rovol:/ro:ro", "-v", "rwvol:/rw", "fake", "true").returncode == 0
    out = run(agent, "cp", str(src), "rocp:/ro/")
    assert out.returncode == 1 and "mounted volume is marked read-only" in out.stderr
    out = run(agent, "cp", str(src), "rocp:/etc/")
    assert out.returncode == 1 and "container rootfs is marked read-only" in out.stderr
    assert run(agent, "cp", str(src), "rocp:/rw/").returncode == 0


def test_a_record_from_before_volumes_keeps_its_binds(agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    host = tmp_path / "old"
    host.mkdir()
    cid = run(agent, "create", "-v", f"{host}:/old:ro", "fake", "true").stdout.strip()
    engine = agent.agent.containers
    (engine.get(cid).dir / "mounts.json").unlink()  # as an older agent left it
    engine.mounts._cache.clear()
    mounts = json.loads(run(agent, "inspect", "-f", "{{json .Mounts}}", cid).stdout)
    assert [(m["Type"], m["Source"], m["RW"]) for m in mounts] == [("bind", str(host), False)]
    assert run(agent, "start", cid).returncode == 0
    assert oci_mounts(agent, cid)["/old"]["options"] == ["rbind", "rprivate", "ro"]
