"""Shared folders as written by the user: HOST[:GUEST][:ro], defaults merged, checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolbox.errors import ConfigError
from toolbox.mounts import MountConfig, list_problems, merge, parse_list, parse_mount, split_mount, syntax_problems


@pytest.mark.parametrize(("text", "parts"), [
    ("~", ("~", None, True)),
    ("/a:ro", ("/a", None, False)),
    ("/a:/b", ("/a", "/b", True)),
    ("/a:/b:rw", ("/a", "/b", True)),
    ("/a:/b:ro", ("/a", "/b", False)),
])  # fmt: skip
def test_split(text: str, parts: tuple[str, str | None, bool]) -> None:
    assert split_mount(text) == parts


@pytest.mark.parametrize("text", ["", ":ro", "/a:/b:/c", "/a::ro", "/a:"])
def test_split_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        split_mount(text)


def test_parse_expands_home_and_keeps_the_path_in_the_guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_mount("~") == MountConfig(str(tmp_path), str(tmp_path), True)
    assert parse_mount("~:/h:ro").render() == f"{tmp_path}:/h:ro"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    assert parse_mount("rel").host_path == str(tmp_path / "rel")


def test_reserved_and_missing_paths_each_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_mount(f"{tmp_path / 'nope'}:/var/lib/toolbox")
    assert len(err.value.problems) == 2
    assert "part of the guest's own system" in err.value.problems[0]
    assert "is not a directory" in err.value.problems[1]
    for fine in ("/home/me", "/Users/me", "/tmp/x", "/srv", "/home/toolboxes"):
        assert list_problems("", [MountConfig("/h", fine)]) == []
    for bad in ("/", "/etc", "/usr/local", "/home/toolbox", "/home/toolbox/.ssh", "/proc/1", "/rel/../etc"):
        assert list_problems("", [MountConfig("/h", bad)]), bad


def test_merge_given_replaces_a_default_at_its_guest_path_and_orders_parents_first() -> None:
    home = MountConfig("/Users/me", "/Users/me")
    inner = MountConfig("/data", "/Users/me/data", False)
    ro_home = MountConfig("/Users/me", "/Users/me/", False)
    assert merge([home], [inner]) == [home, inner]
    assert merge([inner, home], []) == [home, inner]
    assert merge([home], [ro_home]) == [ro_home]
    twice = merge([], [MountConfig("/a", "/w"), MountConfig("/b", "/w")])
    assert list_problems("--", twice) == ["--mounts[1]: the guest path /w is used twice"]


def test_config_toml_list_and_comma_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert syntax_problems("", ["~", "/a:/b:ro"]) == []
    assert syntax_problems("", "~") == ["mounts: expected a list of HOST[:GUEST][:ro] strings, got '~'"]
    assert syntax_problems("", ["~", 3]) == ["mounts[1]: expected a HOST[:GUEST][:ro] string, got 3"]
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_list("", "mounts") == []
    assert [m.render() for m in parse_list(f" ~ , {tmp_path}:/d:ro", "mounts")] == [str(tmp_path), f"{tmp_path}:/d:ro"]
