"""config.py: defaults fitted to the host, every problem reported at once, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolbox import config
from toolbox.config import HostFacts, ImageRef, InstanceConfig
from toolbox.errors import ConfigError

HOST = HostFacts(cpus=8, memory_mib=16384)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOOLBOX_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("host", "cpus", "memory"),
    [(HostFacts(8, 16384), 2, 2048), (HostFacts(1, 1024), 1, 1024), (HostFacts(4, 3000), 2, 1500)],
)
def test_host_defaults(host: HostFacts, cpus: int, memory: int) -> None:
    d = config.host_defaults(host)
    assert (d["cpus"], d["memory_mib"], d["disk_size_gib"]) == (cpus, memory, 20)


def test_global_defaults_without_file() -> None:
    g = config.load_global(HOST)
    assert (g.driver, g.cpus, g.memory_mib, g.accel) == ("qemu", 2, 2048, "auto")
    assert g.image_url.endswith("manifest.json")


def test_every_problem_reported_with_its_path(home: Path) -> None:
    (home / "config.toml").write_text('driver = "hyperv"\ncpus = 99\nmemory_mib = 100\ncolour = "red"\naccel = "x"\n')
    with pytest.raises(ConfigError) as err:
        config.load_global(HOST)
    text = "\n".join(err.value.problems)
    for needle in ("driver: 'hyperv'", "cpus: 99", "memory_mib: 100 MiB", "colour: unknown", "accel: 'x'"):
        assert needle in text
    assert len(err.value.problems) == 5


def test_bad_toml_is_a_config_error(home: Path) -> None:
    (home / "config.toml").write_text("cpus = = 2")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load_global(HOST)


def test_set_global_parses_validates_and_writes(home: Path) -> None:
    config.set_global("cpus", "4", HOST)
    assert config.load_global(HOST).cpus == 4
    with pytest.raises(ConfigError, match="out of range"):
        config.set_global("cpus", "64", HOST)
    with pytest.raises(ConfigError, match="whole number"):
        config.set_global("memory_mib", "lots", HOST)
    with pytest.raises(ConfigError, match="unknown setting"):
        config.set_global("nope", "1", HOST)
    assert config.load_global(HOST).cpus == 4  # a refused set changes nothing
    assert not list(home.glob(".config.toml.*"))  # no temp files left


def _instance() -> InstanceConfig:
    return InstanceConfig(
        name="default", driver="qemu", cpus=2, memory_mib=2048, disk_size_gib=20,
        image=ImageRef(version="1", sha256="a" * 64, iso="/c/toolbox.iso"), ssh_port=40022,
        created="2026-01-01T00:00:00+00:00",
    )


def test_instance_round_trip(home: Path) -> None:
    path = home / "default" / "instance.toml"
    cfg = _instance()
    config.save_instance(path, cfg)
    assert "version = 1" in path.read_text()
    assert config.load_instance(path, HOST) == cfg
    assert path.stat().st_mode & 0o777 == 0o600


def test_instance_problems_all_listed(home: Path) -> None:
    path = home / "x.toml"
    path.write_text('version = 7\nname = "x"\ndriver = "qemu"\ncpus = 0\nmemory_mib = 2048\n'
                    'disk_size_gib = 1\nssh_port = 22\ncreated = "now"\n')
    with pytest.raises(ConfigError) as err:
        config.load_instance(path, HOST)
    text = "\n".join(err.value.problems)
    for needle in ("version: 7", "cpus: 0", "disk_size_gib: 1", "ssh_port: 22", "image: missing"):
        assert needle in text


@pytest.mark.parametrize(("text", "unit", "mib"), [("2048", "m", 2048), ("2G", "m", 2048), ("2GiB", "m", 2048),
                                                    ("512M", "m", 512), ("20", "g", 20480), ("1.5g", "m", 1536)])
def test_parse_size(text: str, unit: str, mib: int) -> None:
    assert config.parse_size_mib(text, unit) == mib


def test_parse_size_rejects_junk() -> None:
    with pytest.raises(ConfigError):
        config.parse_size_mib("two gigs", "m")
