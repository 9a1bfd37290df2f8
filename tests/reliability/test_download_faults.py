"""Download faults through the real CLI (`toolbox download` / `init`, its own process)
against a loopback release server: each fault is refused or resumed, an unverified file is
never used, and nothing half-made is cached. After each fault the server heals and the
next run must succeed (resuming what was kept, if anything).

Not repeated here (covered elsewhere): a single interruption resumed within one run and a
corrupted ISO refused by init (tests/e2e/test_lifecycle.py), a server ignoring Range, a
full disk, a 404 (tests/unit/test_images.py, tests/cli/test_cli.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers_http import FileServer
from tally import Tally

REPO = Path(__file__).resolve().parents[2]
PAD = bytes(range(256)) * (4 * 4096)  # 4 MiB: several of the downloader's 1 MiB chunks


def _small_iso(path: Path) -> None:
    """A real ISO9660 (Rock Ridge) with /boot/{vmlinuz,initrd.img,cmdline.txt}: enough for
    the cache's boot-file extraction, small enough to download many times."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", vol_ident="TOOLBOX")
    iso.add_directory("/BOOT", rr_name="boot")
    for name, data in (("vmlinuz", b"kernel\n"), ("initrd.img", b"initrd\n"), ("cmdline.txt", b"console=ttyS0\n"),
                       ("pad", PAD)):
        iso_name = "/BOOT/" + name.upper().replace(".", "_")[:8] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name)
    iso.write(str(path))
    iso.close()


@dataclass
class Release:
    server: FileServer
    home: Path
    sha: str

    @property
    def manifest_url(self) -> str:
        return f"{self.server.url}/manifest.json"

    @property
    def entry(self) -> Path:
        return self.home / "cache" / self.sha

    def toolbox(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBOX_")}
        env.update(TOOLBOX_HOME=str(self.home), PYTHONPATH=str(REPO))
        return subprocess.run([sys.executable, "-m", "toolbox", *args], env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip

    def download(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.toolbox("download", *(extra or ("--manifest-url", self.manifest_url)))

    def heal(self) -> None:
        self.server.faults.__init__()  # type: ignore[misc]

    def assert_nothing_unverified(self) -> None:
        """The invariant after every run: a cached ISO is the verified one, or there is none."""
        cache = self.home / "cache"
        for iso in cache.glob("*/toolbox.iso") if cache.exists() else []:
            assert iso.parent.name == self.sha and hashlib.sha256(iso.read_bytes()).hexdigest() == self.sha, iso
        for entry in cache.iterdir() if cache.exists() else []:
            assert entry.name == self.sha, f"a cache entry for a sha256 never verified: {entry.name}"

    def assert_good_download(self, proc: subprocess.CompletedProcess[str]) -> None:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split()[1:3] == [self.sha, str(self.entry / "toolbox.iso")], proc.stdout
        assert not (self.entry / "toolbox.iso.part").exists()
        self.assert_nothing_unverified()


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Release]:
    root = tmp_path / "srv"
    root.mkdir()
    _small_iso(root / "toolbox.iso")
    data = (root / "toolbox.iso").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    (root / "SHA256SUMS").write_text(f"{sha}  toolbox.iso\n")
    manifest = {"format": 1, "name": "toolbox", "version": "0.0.1-test", "arch": "x86_64",
                "cmdline": "console=ttyS0", "files": {"toolbox.iso": {"sha256": sha, "size": len(data)}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    server = FileServer(root)
    try:
        yield Release(server, tmp_path / "home", sha)
    finally:
        server.close()


def _one_red_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert all(n in proc.stderr for n in needles), proc.stderr


def test_truncated_every_time_keeps_the_part_and_the_next_run_resumes(release: Release, tally: Tally) -> None:
    release.server.faults.truncate_next = 100  # every attempt of this run is cut half-way
    failed = release.download()
    _one_red_line(failed, "connection lost", "resumes")
    part = release.entry / "toolbox.iso.part"
    assert not (release.entry / "toolbox.iso").exists() and 0 < part.stat().st_size
    release.assert_nothing_unverified()
    release.heal()
    ok = release.download()
    release.assert_good_download(ok)
    assert release.server.faults.ranges, "the healed run should have resumed with a Range request"
    tally.add("download truncated on every try, then resumed", injected=1, survived=1)


def test_server_error_500_caches_nothing(release: Release, tally: Tally) -> None:
    release.server.faults.status = 500
    _one_red_line(release.download(), "HTTP 500")
    assert not (release.home / "cache").exists() or not any((release.home / "cache").iterdir())
    release.heal()
    release.assert_good_download(release.download())
    tally.add("download: server error 500", injected=1, survived=1)


def test_500_after_a_partial_keeps_the_part_untouched(release: Release, tally: Tally) -> None:
    release.server.faults.truncate_next = 100
    release.download()
    part = release.entry / "toolbox.iso.part"
    kept = part.read_bytes()
    release.heal()
    release.server.faults.status = 500
    _one_red_line(release.download(), "HTTP 500")
    assert part.read_bytes() == kept and not (release.entry / "toolbox.iso").exists()
    release.heal()
    release.assert_good_download(release.download())
    assert release.server.faults.ranges == [f"bytes={len(kept)}-"]
    tally.add("download: 500 on the resume of a partial", injected=1, survived=1)


def test_corrupted_part_from_an_earlier_run_is_refused_then_replaced(release: Release, tally: Tally) -> None:
    part = release.entry / "toolbox.iso.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * (1 << 20))  # what a disk error or another program left
    _one_red_line(release.download(), "sha256 mismatch", "discarded")
    assert not part.exists() and not (release.entry / "toolbox.iso").exists()
    release.assert_nothing_unverified()
    release.assert_good_download(release.download())
    tally.add("download: corrupted .part resumed", injected=1, survived=1)


@pytest.mark.parametrize("how", ["--sha256", "SHA256SUMS"])
def test_wrong_checksum_is_refused(release: Release, tally: Tally, how: str) -> None:
    wrong = hashlib.sha256(b"another image").hexdigest()
    url = f"{release.server.url}/toolbox.iso"
    if how == "--sha256":
        proc = release.download("--iso-url", url, "--sha256", wrong)
    else:
        (release.server.root / "SHA256SUMS").write_text(f"{wrong}  toolbox.iso\n")
        proc = release.download("--iso-url", url)
    _one_red_line(proc, "sha256 mismatch")
    assert not (release.home / "cache" / wrong).exists()
    release.assert_nothing_unverified()
    tally.add(f"download: wrong checksum ({how})", injected=1, survived=1)


def test_init_on_a_flaky_download_leaves_no_instance(release: Release, tally: Tally) -> None:
    release.server.faults.truncate_next = 100
    proc = release.toolbox("init", "-n", "flaky", "--manifest-url", release.manifest_url)
    _one_red_line(proc, "connection lost")
    assert not (release.home / "flaky").exists()
    release.assert_nothing_unverified()
    tally.add("init during a download cut on every try", injected=1, survived=1)
