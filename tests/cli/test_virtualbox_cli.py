"""`toolbox init/status/down/delete --driver virtualbox` through the CLI, against the
fake VBoxManage (tests/fakes/), which logs every call. `up` is not here: the fake cannot
boot a guest, so no SSH would ever answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers_http import FileServer

FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture
def fake_vbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "fake-vbox"
    monkeypatch.setenv("PATH", f"{FAKES}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_VBOX_HOME", str(home))
    monkeypatch.delenv("FAKE_VBOX_FAIL", raising=False)
    return home


def subcommands(home: Path) -> list[str]:
    return [json.loads(line)[0] for line in (home / "calls.jsonl").read_text().splitlines()]


def registered(home: Path) -> list[str]:
    state = home / "state.json"
    return [vm["name"] for vm in json.loads(state.read_text())["vms"].values()] if state.exists() else []


def test_init_status_down_delete(cli: Any, server: FileServer, env: Path, fake_vbox: Path) -> None:
    result = cli("init", "-n", "vb", "--driver", "virtualbox", "--manifest-url", f"{server.url}/v1/manifest.json")
    assert result.exit_code == 0, result.output
    assert subcommands(fake_vbox) == [
        "showvminfo", "createvm", "modifyvm", "storagectl", "createmedium",
        "storageattach", "storageattach", "storageattach", "sharedfolder", "setextradata",
    ]  # fmt: skip
    assert registered(fake_vbox) == ["toolbox-vb"]
    # The home folder (the env fixture's stand-in) is a VirtualBox shared folder.
    (vm,) = json.loads((fake_vbox / "state.json").read_text())["vms"].values()
    assert [(f["hostpath"], f["readonly"]) for f in vm["shared"]] == [(str(env.parent / "user"), False)]
    assert (env / "vb" / "disk.vdi").exists()  # the driver's disk format
    assert cli("status", "-n", "vb").output.strip() == "stopped"
    assert cli("down", "-n", "vb").exit_code == 0  # stopping a stopped VM does nothing
    assert cli("delete", "-f", "-n", "vb").exit_code == 0
    assert registered(fake_vbox) == []
    assert not (env / "vb").exists()
    # The cached image is the user's: unregistervm --delete must not have taken it.
    assert list((env / "cache").glob("*/toolbox.iso"))


def test_init_without_vboxmanage_says_how_to_install(cli: Any, server: FileServer, env: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = cli("init", "-n", "vb", "--driver", "virtualbox", "--manifest-url", f"{server.url}/v1/manifest.json")
    assert result.exit_code == 1
    assert "VBoxManage is not installed" in result.output and "virtualbox.org" in result.output
    assert not (env / "vb").exists()


def test_vboxmanage_failing_mid_init_leaves_nothing(cli: Any, server: FileServer, env: Path, fake_vbox: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VBOX_FAIL", "storageattach:3")
    result = cli("init", "-n", "vb", "--driver", "virtualbox", "--manifest-url", f"{server.url}/v1/manifest.json")
    assert result.exit_code == 1
    assert "attaching the data disk" in result.output and "injected by FAKE_VBOX_FAIL" in result.output
    assert registered(fake_vbox) == []
    assert not (env / "vb").exists()
