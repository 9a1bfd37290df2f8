"""The config drive as the guest sees it: mounted by Linux's isofs (Rock Ridge names)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from toolbox.cidata import ConfigDrive, DriveMount, render_files, write_config_drive
from toolbox.keys import fingerprint_sha256, generate_ed25519


def _drive() -> ConfigDrive:
    login, host = generate_ed25519("login"), generate_ed25519("host")
    return ConfigDrive(
        hostname="toolbox-default",
        uid=501,
        gid=20,
        authorized_keys=[login.public_openssh],
        host_private_key=host.private_openssh,
        host_public_key=host.public_openssh,
        mounts=[("9p", "tbabc", "/Users/me", True), DriveMount("9p", "tbdef", "/opt/ro", False)],
        agent={"insecure_registries": ["10.0.2.2:5000"]},
    )


def test_render_files_formats() -> None:
    files = render_files(_drive())
    assert files["version"][0] == b"1\n"
    assert files["user"][0] == b"toolbox 501 20\n"
    assert files["mounts"][0] == b"9p tbabc /Users/me rw\n9p tbdef /opt/ro ro\n"
    assert files["ssh_host_ed25519_key"][1] == 0o600
    assert json.loads(files["agent.json"][0]) == {"insecure_registries": ["10.0.2.2:5000"]}


def test_render_refuses_unwritable_mount() -> None:
    bad = ConfigDrive("h", 1, 1, [], "k", "p", mounts=[("nfs", "t", "/x", True)])
    with pytest.raises(ValueError):
        render_files(bad)


def test_isoinfo_reads_label_and_rock_ridge_names(tmp_path: Path) -> None:
    """xorriso (a separate ISO9660 reader) sees the label and every Rock Ridge name."""
    path = tmp_path / "cidata.iso"
    drive = _drive()
    write_config_drive(path, drive)
    assert not list(tmp_path.glob("*.tmp"))
    out = subprocess.run(
        ["xorriso", "-indev", str(path), "-pvd_info", "-find", "/", "-type", "f"],
        capture_output=True, text=True, check=True,
    )
    assert "Volume Id    : cidata" in out.stdout
    names = {line.strip().strip("'").lstrip("/") for line in out.stdout.splitlines() if line.startswith("'/")}
    assert names == set(render_files(drive))
    extract = tmp_path / "x"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(path), "-extract", "/", str(extract)],
                   capture_output=True, check=True)
    assert (extract / "ssh_host_ed25519_key.pub").read_text().strip() == drive.host_public_key
    assert os.stat(extract / "ssh_host_ed25519_key").st_mode & 0o777 == 0o600


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    pair = generate_ed25519("x")
    pub = tmp_path / "k.pub"
    pub.write_text(pair.public_openssh + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == fingerprint_sha256(pair.public_openssh)


def test_replace_mounts_keeps_every_other_file(tmp_path: Path) -> None:
    from toolbox.cidata import read_files, replace_mounts

    drive = _drive()
    path = tmp_path / "cidata.iso"
    write_config_drive(path, drive)
    replace_mounts(path, [DriveMount("vboxsf", "tbnew", "/Users/me/src", True)])
    after = read_files(path)
    before = render_files(drive)
    assert after.pop("mounts") == (b"vboxsf tbnew /Users/me/src rw\n", 0o644)
    before.pop("mounts")
    assert after == before  # the host key (which exists nowhere else) and its mode kept
    assert path.stat().st_mode & 0o777 == 0o600
