"""Shared folders through the CLI: the home folder by default, config.toml's list,
--mount and --no-default-mounts, and changing a stopped instance's shares."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from helpers_http import FileServer


def _init(cli: Any, server: FileServer, *args: str, name: str = "default") -> Any:
    return cli("init", "-n", name, *args, "--manifest-url", f"{server.url}/v1/manifest.json")


def _mounts(cli: Any, name: str = "default") -> list[dict[str, Any]]:
    return json.loads(cli("info", "--json", "-n", name).output)["mounts"]


def _drive_mounts(cidata: Path, tmp_path: Path) -> list[list[str]]:
    """The config drive's mounts file as the guest reads it (extracted by xorriso)."""
    out = tmp_path / f"drive-{cidata.parent.name}"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(cidata), "-extract", "/", str(out)],
                   check=True, capture_output=True)
    return [line.split() for line in (out / "mounts").read_text().splitlines()]


def test_home_is_shared_read_write_at_its_own_path(cli: Any, env: Path, server: FileServer, tmp_path: Path) -> None:
    home = str(tmp_path / "user")
    assert _init(cli, server).exit_code == 0
    assert _mounts(cli) == [{"host": home, "guest": home, "writable": True}]
    (kind, tag, guest, mode), = _drive_mounts(env / "default" / "cidata.iso", tmp_path)
    assert (kind, guest, mode) == ("9p", home, "rw") and tag.startswith("tb")
    assert f"{home} → {home} (rw)" in cli("info").output
    assert json.loads((env / "default" / "fake-vm.json").read_text())["state"] == "stopped"


def test_no_default_mounts_and_a_read_only_home(cli: Any, env: Path, server: FileServer, tmp_path: Path) -> None:
    assert _init(cli, server, "--no-default-mounts", name="bare").exit_code == 0
    assert _mounts(cli, "bare") == []
    assert _drive_mounts(env / "bare" / "cidata.iso", tmp_path) == []
    # A --mount at the home folder's guest path replaces the default one.
    assert _init(cli, server, "--mount", "~:ro", name="ro").exit_code == 0
    home = str(tmp_path / "user")
    assert _mounts(cli, "ro") == [{"host": home, "guest": home, "writable": False}]


def test_config_toml_mounts(cli: Any, env: Path, server: FileServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert cli("config", "set", "mounts", f"{data}:/data:ro").exit_code == 0
    assert 'mounts = ["' + f"{data}:/data:ro" + '"]' in cli("config", "show").output
    assert _init(cli, server).exit_code == 0
    assert _mounts(cli) == [{"host": str(data), "guest": "/data", "writable": False}]
    assert cli("config", "set", "mounts", "").exit_code == 0
    assert _init(cli, server, name="none").exit_code == 0 and _mounts(cli, "none") == []
    bad = cli("config", "set", "mounts", "/x:/y:/z")
    assert bad.exit_code == 2 and "mounts[0]: use HOST[:GUEST][:ro]" in bad.output


def test_bad_mounts_are_refused_with_every_problem(cli: Any, env: Path, server: FileServer, tmp_path: Path) -> None:
    result = _init(cli, server, "--mount", f"{tmp_path}:/etc", "--mount", f"{tmp_path}:/usr/lib:ro")
    assert result.exit_code == 2
    assert "/etc is part of the guest's own system" in result.output
    assert "/usr/lib is part of the guest's own system" in result.output
    twice = _init(cli, server, "--mount", f"{tmp_path}:/w", "--mount", f"{tmp_path / 'user'}:/w/")
    assert twice.exit_code == 2 and "/w is used twice" in twice.output
    assert not (env / "default").exists()


def test_changing_a_stopped_instances_shares(cli: Any, env: Path, server: FileServer, tmp_path: Path) -> None:
    assert _init(cli, server).exit_code == 0
    inst = env / "default"
    key_before = _drive_file(inst / "cidata.iso", tmp_path, "ssh_host_ed25519_key")
    data = tmp_path / "data"
    data.mkdir()
    result = cli("config", "set", "-n", "default", "mounts", f"~,{data}:/data:ro")
    assert result.exit_code == 0, result.output
    home = str(tmp_path / "user")
    assert _mounts(cli) == [{"host": str(data), "guest": "/data", "writable": False},
                            {"host": home, "guest": home, "writable": True}]
    lines = _drive_mounts(inst / "cidata.iso", tmp_path)
    assert [(k, g, m) for k, _, g, m in lines] == [("9p", "/data", "ro"), ("9p", home, "rw")]
    assert json.loads((inst / "fake-vm.json").read_text())["mounts"] == [line[1] for line in lines]
    assert (inst / "cidata.iso").stat().st_mode & 0o777 == 0o600
    assert _drive_file(inst / "cidata.iso", tmp_path, "ssh_host_ed25519_key") == key_before  # keys kept

    (inst / "fake-vm.json").write_text(json.dumps({"state": "running"}))  # as the fake driver's start
    running = cli("config", "set", "-n", "default", "mounts", "")
    assert running.exit_code == 1 and "cannot change while it is running" in running.output
    assert "toolbox down -n default" in running.output
    assert len(_mounts(cli)) == 2
    other = cli("config", "set", "-n", "default", "cpus", "1")
    assert other.exit_code == 2 and "only mounts can change" in other.output


def _drive_file(cidata: Path, tmp_path: Path, name: str) -> bytes:
    out = tmp_path / "drive-file"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(cidata), "-extract", "/", str(out)],
                   check=True, capture_output=True)
    return (out / name).read_bytes()


def test_up_with_a_shared_folder_gone_says_what_to_do(cli: Any, env: Path, server: FileServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert _init(cli, server, "--mount", f"{data}:/data").exit_code == 0
    data.rmdir()
    result = cli("up")
    assert result.exit_code == 1
    assert f"shared folder {data} of 'default' is gone from the host" in result.output
    assert f"toolbox config set -n default mounts {tmp_path / 'user'}" in result.output
    assert json.loads((env / "default" / "fake-vm.json").read_text())["state"] == "stopped"  # never started
