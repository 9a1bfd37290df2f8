"""The CLI end to end over the fake driver: help, errors, init/delete, status, shellinit, config."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers_http import FileServer

from toolbox import guest, instance, ssh
from toolbox.lock import instance_lock
from toolbox.paths import InstancePaths

def _command_paths() -> list[tuple[str, ...]]:
    """Every command, alias and subcommand the CLI has, read from the app itself."""
    import typer.main

    from toolbox.cli import app

    paths: list[tuple[str, ...]] = []

    def walk(group: Any, prefix: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            paths.append(prefix + (name,))
            if hasattr(command, "commands"):  # a group: config, cache
                walk(command, prefix + (name,))

    walk(typer.main.get_command(app), ())
    return paths


COMMAND_PATHS = _command_paths()
BOOT2DOCKER_COMMANDS = ["init", "up", "start", "boot", "ssh", "save", "suspend", "down", "stop", "halt", "restart",
                        "poweroff", "reset", "delete", "destroy", "config", "cfg", "info", "ip", "shellinit",
                        "socket", "status", "download", "upgrade", "version"]


def test_every_boot2docker_command_and_alias_is_there() -> None:
    assert {p[0] for p in COMMAND_PATHS} >= set(BOOT2DOCKER_COMMANDS)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_help_renders_and_teaches(cli: Any, path: tuple[str, ...]) -> None:
    result = cli(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output or path[0] in ("config", "cfg", "cache"), result.output


def test_version(cli: Any) -> None:
    assert cli("version").output.startswith("toolbox 0.")


def test_missing_instance_is_one_red_line(cli: Any) -> None:
    result = cli("status")
    assert result.exit_code == 1
    assert "Error: instance 'default' does not exist" in result.output
    assert "Traceback" not in result.output


def test_bad_options_all_reported_nothing_made(cli: Any, env: Path, server: FileServer) -> None:
    result = cli("init", "--cpus", "999", "--memory", "100", "--driver", "hyperv",
                 "--manifest-url", f"{server.url}/v1/manifest.json")
    assert result.exit_code == 2
    for needle in ("--cpus: 999", "--memory: 100 MiB", "--driver: 'hyperv'"):
        assert needle in result.output
    assert not (env / "default").exists()


def test_404_leaves_nothing(cli: Any, env: Path, server: FileServer) -> None:
    result = cli("init", "--manifest-url", f"{server.url}/nope/manifest.json")
    assert result.exit_code == 1 and "HTTP 404" in result.output
    assert not (env / "default").exists()


def test_checksum_mismatch_leaves_nothing(cli: Any, env: Path, server: FileServer) -> None:
    server.faults.corrupt = True
    try:
        result = cli("init", "--manifest-url", f"{server.url}/v1/manifest.json")
    finally:
        server.faults.corrupt = False
    assert result.exit_code == 1 and "sha256 mismatch" in result.output
    assert not (env / "default").exists()
    assert not any((env / "cache").glob("*")) if (env / "cache").exists() else True


def test_missing_hypervisor_names_install_command(cli: Any, monkeypatch: pytest.MonkeyPatch, server: FileServer) -> None:
    monkeypatch.setenv("FAKE_MISSING", "1")
    result = cli("init", "--manifest-url", f"{server.url}/v1/manifest.json")
    assert result.exit_code == 1
    assert "qemu-system-x86_64 is not installed" in result.output and "apt-get install" in result.output


def test_driver_failure_removes_everything(cli: Any, env: Path, monkeypatch: pytest.MonkeyPatch,
                                           server: FileServer) -> None:
    monkeypatch.setenv("FAKE_FAIL_CREATE", "1")
    result = cli("init", "--manifest-url", f"{server.url}/v1/manifest.json")
    assert result.exit_code == 1 and "create failed on purpose" in result.output
    assert not (env / "default").exists()


def test_unexpected_error_suggests_debug(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(name: str) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr("toolbox.state.status", boom)
    result = cli("status")
    assert result.exit_code == 1 and "unexpected RuntimeError: kaboom" in result.output
    assert "--debug" in result.output
    assert "Traceback" in cli("--debug", "status").output


def test_init_makes_an_instance(cli: Any, inited: Path) -> None:
    for name in ("instance.toml", "id_ed25519", "id_ed25519.pub", "ssh_host_ed25519_key.pub", "cidata.iso",
                 "disk.qcow2"):
        assert (inited / name).exists(), name
    assert (inited / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert cli("status").output.strip() == "stopped"
    assert "default" in cli("list").output
    info = json.loads(cli("info", "--json").output)
    assert info["image"]["version"] == "1.0" and info["ssh"]["user"] == "toolbox"
    assert cli("ip").output.strip() == "127.0.0.1"
    again = cli("init", "--manifest-url", "http://127.0.0.1:1/x")
    assert again.exit_code == 1 and "already exists" in again.output


def test_ssh_config_pins_the_key(cli: Any, inited: Path) -> None:
    out = cli("ssh-config").output
    assert "StrictHostKeyChecking yes" in out and f"IdentityFile {inited / 'id_ed25519'}" in out
    pinned = (inited / "ssh_host_ed25519_key.pub").read_text().split()[1]
    assert pinned in (inited / "known_hosts").read_text()


@pytest.mark.parametrize(("shell", "needle"), [
    ("bash", "export DOCKER_HOST='unix://"), ("zsh", "unset DOCKER_TLS_VERIFY"),
    ("fish", "set -gx DOCKER_HOST 'unix://"), ("powershell", '$Env:DOCKER_HOST = "unix://'),
    ("cmd", "SET DOCKER_HOST=unix://"),
])
def test_shellinit_forms(cli: Any, inited: Path, shell: str, needle: str) -> None:
    result = cli("shellinit", "--shell", shell)
    assert result.exit_code == 0 and needle in result.output
    assert str(inited / "docker.sock") in result.output


def test_shellinit_follows_shell_env(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELL", "/usr/bin/fish")
    assert "set -gx" in cli("socket").output
    assert cli("shellinit", "--shell", "tcsh").exit_code == 2


def test_config_show_set_validate(cli: Any, env: Path) -> None:
    assert cli("config", "set", "cpus", "1").exit_code == 0
    assert "cpus = 1" in cli("cfg", "show").output
    before = (env / "config.toml").read_bytes()
    bad = cli("config", "set", "memory_mib", "10")
    assert bad.exit_code == 2 and "invalid setting: memory_mib: 10 MiB is out of range" in bad.output
    assert "config.toml is unchanged" in bad.output and (env / "config.toml").read_bytes() == before
    (env / "config.toml").write_text('cpus = 0\ndriver = "x"\n')
    result = cli("config", "validate")
    assert result.exit_code == 2 and "cpus: 0" in result.output and "driver: 'x'" in result.output


def test_up_down_with_ssh_faked(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh(monkeypatch)
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert cli("status").output.startswith("starting")  # nothing speaks SSH on the port
    assert json.loads((inited / "fake-vm.json").read_text())["accel"] == "tcg"
    assert cli("halt").exit_code == 0
    assert cli("status").output.strip() == "stopped"


def test_info_names_the_accelerator_in_use(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh(monkeypatch)
    monkeypatch.setenv("TOOLBOX_ACCEL", "kvm")  # this boot's choice; the instance's setting stays auto
    assert cli("up").exit_code == 0
    info = json.loads(cli("info", "--json").output)
    assert (info["accel"], info["accel_setting"]) == ("kvm", "auto")
    assert "kvm" in cli("info").output.split("accel ", 1)[1].split("\n", 1)[0]
    assert cli("halt").exit_code == 0
    # stopped: what "auto" takes next, from the probe's cached verdict (never a probe here)
    monkeypatch.setattr("toolbox.accel.known_accel", lambda arch: "tcg")
    info = json.loads(cli("info", "--json").output)
    assert (info["accel"], info["accel_setting"]) == ("tcg", "auto")
    monkeypatch.setattr("toolbox.accel.known_accel", lambda arch: None)
    assert json.loads(cli("info", "--json").output)["accel"] == "auto (probed at the next up)"


def test_save_without_suspend_support(cli: Any, inited: Path) -> None:
    result = cli("suspend")
    assert result.exit_code == 1 and "cannot save" in result.output and "toolbox down" in result.output


def test_locked_instance(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("toolbox.lock.DEFAULT_TIMEOUT", 0.3)
    with instance_lock("default", InstancePaths.for_name("default").lock):
        result = cli("down")
    assert result.exit_code == 1 and "busy with another toolbox command" in result.output


def test_up_waits_out_another_command(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second `up` waits for the first to finish (a boot outlasts the usual lock wait),
    saying so; other commands still give up after the usual wait."""
    import threading

    _fake_ssh(monkeypatch)
    monkeypatch.setattr("toolbox.lock.DEFAULT_TIMEOUT", 0.2)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with instance_lock("default", InstancePaths.for_name("default").lock):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    assert cli("down").exit_code == 1  # gives up after 0.2 s
    threading.Timer(1.0, release.set).start()  # the "other up" ends after 1 s, past down's wait
    result = cli("up")
    holder.join()
    assert result.exit_code == 0, result.output
    assert "waiting for another toolbox command" in result.output


def test_delete_confirms(cli: Any, inited: Path) -> None:
    assert cli("delete", input="n\n").exit_code == 1 and inited.exists()
    assert cli("destroy", "-f").exit_code == 0
    assert not inited.exists()
    listed = cli("list")
    assert listed.stdout.strip().splitlines()[1:] == [] and "create one with `toolbox init`" in listed.stderr


def test_upgrade_swaps_image_keeps_disk(cli: Any, inited: Path, server: FileServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instance, "_boot", lambda *a, **k: None)
    (inited / "disk.qcow2").write_bytes(b"precious")
    same = cli("upgrade", "--manifest-url", f"{server.url}/v1/manifest.json")
    assert same.exit_code == 0 and "up to date" in same.output
    result = cli("upgrade", "--manifest-url", f"{server.url}/v2/manifest.json")
    assert result.exit_code == 0, result.output
    assert json.loads(cli("info", "--json").output)["image"]["version"] == "2.0"
    assert (inited / "disk.qcow2").read_bytes() == b"precious"


def test_download_into_cache(cli: Any, env: Path, server: FileServer) -> None:
    result = cli("download", "--iso-url", f"{server.url}/v2/toolbox.iso")
    assert result.exit_code == 0, result.output
    sha = result.stdout.split()[1]
    assert (env / "cache" / sha / "toolbox.iso").exists()
    assert (env / "cache" / sha / "vmlinuz").read_bytes() == b"KERNEL"


def _fake_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    class Client:
        def close(self) -> None:
            pass

    monkeypatch.setattr(ssh, "wait_for_ssh", lambda *a, **k: Client())
    monkeypatch.setattr(guest, "wait_for_agent", lambda client: None)
    monkeypatch.setattr(guest, "start_host_agent", lambda *a, **k: None)  # no real SSH to serve
    monkeypatch.setattr(guest, "wait_for_docker_socket", lambda *a, **k: None)


def test_up_moves_off_a_taken_port(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    _fake_ssh(monkeypatch)
    port = json.loads(cli("info", "--json").output)["ssh"]["port"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        result = cli("up")
    assert result.exit_code == 0, result.output
    assert f"port {port} is taken" in result.output
    new_port = json.loads(cli("info", "--json").output)["ssh"]["port"]
    assert new_port != port
    assert json.loads((inited / "fake-vm.json").read_text())["spec_port"] == new_port


def test_up_reports_a_host_key_the_host_agent_refused(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fresh boot the host agent's login is up's only one: a refused host key comes to
    up through the host agent's report, is up's error, and the host agent is stopped."""
    paths = InstancePaths.for_name("default")
    stand_in = subprocess.Popen(["sleep", "60"])  # the host agent's pid: up stops it (SIGTERM)
    message = "the guest at 127.0.0.1:1 presented host key SHA256:b, not the pinned SHA256:a: refusing to connect"

    def start(paths: InstancePaths, cfg: object, boot_timeout: float = 0.0) -> None:
        assert boot_timeout > 0  # started with the VM, before the guest is up
        paths.hostagent_pid.write_text(f"{stand_in.pid}\n")
        paths.hostagent_state.write_text(json.dumps({"ssh": {
            "connected": False, "error": message, "refused_host_key": True, "hint": "run 'toolbox delete'"}}))

    monkeypatch.setattr(guest, "start_host_agent", start)
    try:
        result = cli("up")
    finally:
        stand_in.kill()
        stand_in.wait()
    assert result.exit_code != 0 and "refusing to connect" in result.output and "toolbox delete" in result.output
    assert not paths.hostagent_pid.exists()


def test_ssh_to_a_stopped_instance(cli: Any, inited: Path) -> None:
    result = cli("ssh", "--", "true")
    assert result.exit_code == 1 and "is stopped" in result.output and "toolbox up" in result.output


def test_broken_instance_shows_and_deletes(cli: Any, inited: Path) -> None:
    (inited / "instance.toml").write_text("version = 1\ncpus = 'many'\n")
    status = cli("status").output
    assert status.startswith("broken") and "cpus: expected a whole number" in status
    assert cli("delete", "-f").exit_code == 0 and not inited.exists()


def test_leftover_of_a_crashed_init_is_replaced(cli: Any, env: Path, server: FileServer) -> None:
    (env / "default").mkdir(parents=True)
    (env / "default" / "junk").write_text("half made")
    result = cli("init", "--manifest-url", f"{server.url}/v1/manifest.json")
    assert result.exit_code == 0, result.output
    assert not (env / "default" / "junk").exists()


def test_concurrent_commands_take_turns(inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """up and down from two threads: each runs whole, under the lock, none interleaved."""
    import threading
    import time

    from fake_driver import FakeDriver

    _fake_ssh(monkeypatch)
    events: list[str] = []
    real_start, real_stop = FakeDriver.start, FakeDriver.stop

    def slow_start(self: FakeDriver, spec: Any) -> None:
        events.append("start-begin")
        time.sleep(0.3)
        real_start(self, spec)
        events.append("start-end")

    def logged_stop(self: FakeDriver, spec: Any, **kw: Any) -> None:
        events.append("stop")
        real_stop(self, spec, **kw)

    monkeypatch.setattr(FakeDriver, "start", slow_start)
    monkeypatch.setattr(FakeDriver, "stop", logged_stop)
    first = threading.Thread(target=instance.up, args=("default",))
    first.start()
    time.sleep(0.1)
    instance.down("default")
    first.join()
    assert events == ["start-begin", "start-end", "stop"]


def test_failed_upgrade_rolls_back(cli: Any, inited: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolbox.errors import GuestTimeout

    def no_boot(*a: Any, **k: Any) -> None:
        raise GuestTimeout("SSH did not answer within 1 s")

    monkeypatch.setattr(instance, "_boot", no_boot)
    result = cli("upgrade", "--manifest-url", f"{server.url}/v2/manifest.json")
    assert result.exit_code == 1 and "back on image 1.0" in result.output
    assert json.loads(cli("info", "--json").output)["image"]["version"] == "1.0"
    fake = json.loads((inited / "fake-vm.json").read_text())
    assert fake["state"] == "stopped" and "toolbox.iso" in fake["iso"]


def test_image_url_from_env(cli: Any, env: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLBOX_IMAGE_URL", f"{server.url}/v2/manifest.json")
    assert cli("init").exit_code == 0
    assert json.loads(cli("info", "--json").output)["image"]["version"] == "2.0"


def test_logs_print_the_console(cli: Any, inited: Path) -> None:
    assert "no console output yet" in cli("logs").output
    (inited / "serial.log").write_text("[    0.000000] Linux version 6.1\n")
    assert "Linux version" in cli("logs").stdout


def test_init_with_mounts(cli: Any, env: Path, server: FileServer, tmp_path: Path) -> None:
    share = tmp_path / "src"
    share.mkdir()
    result = cli("init", "--mount", str(share), "--mount", f"{share}:/work:ro",
                 "--manifest-url", f"{server.url}/v1/manifest.json")
    assert result.exit_code == 0, result.output
    mounts = json.loads(cli("info", "--json").output)["mounts"]
    home = str(tmp_path / "user")  # shared by default (the env fixture's $HOME)
    assert mounts == [{"host": str(share), "guest": "/work", "writable": False},  # parents first
                      {"host": home, "guest": home, "writable": True},
                      {"host": str(share), "guest": str(share), "writable": True}]
    bad = cli("init", "-n", "other", "--mount", str(tmp_path / "missing"))
    assert bad.exit_code == 2 and "is not a directory" in bad.output


def _agent_json(cidata: Path, tmp_path: Path) -> dict[str, Any]:
    """agent.json as the guest reads it: extracted from the config drive by xorriso."""
    out = tmp_path / "drive"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(cidata), "-extract", "/", str(out)],
                   check=True, capture_output=True)
    return json.loads((out / "agent.json").read_text())


def test_init_passes_registry_settings_to_the_agent(cli: Any, env: Path, server: FileServer, tmp_path: Path) -> None:
    result = cli("init", "--insecure-registry", "10.0.2.2:5000", "--registry-mirror", "http://10.0.2.2:5000",
                 "--manifest-url", f"{server.url}/v1/manifest.json")
    assert result.exit_code == 0, result.output
    agent = _agent_json(env / "default" / "cidata.iso", tmp_path)
    assert agent["insecure_registries"] == ["10.0.2.2:5000"]
    assert agent["registry_mirrors"] == ["http://10.0.2.2:5000"]
    saved = tomllib.loads((env / "default" / "instance.toml").read_text())
    assert saved["insecure_registries"] == ["10.0.2.2:5000"]


def test_init_refuses_bad_registry_settings(cli: Any, env: Path, server: FileServer) -> None:
    bad = cli("init", "--insecure-registry", "http://10.0.2.2:5000/v2", "--registry-mirror", "10.0.2.2:5000",
              "--manifest-url", f"{server.url}/v1/manifest.json")
    assert bad.exit_code == 2
    assert "insecure-registries[0]" in bad.output and "registry-mirrors[0]" in bad.output
    assert not (env / "default").exists()


def test_status_trusts_a_serving_host_agent(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live host agent with its socket means ready, without waiting on sshd's banner;
    without one, status says what is missing (SSH, or the docker socket)."""
    _fake_ssh(monkeypatch)
    assert cli("up").exit_code == 0
    assert cli("status").output.startswith("starting")  # nothing speaks SSH on the port
    (inited / "hostagent.pid").write_text(f"{os.getpid()}\n")  # a live process: this test
    (inited / "docker.sock").touch()
    assert cli("status").output.strip() == "running"
    (inited / "docker.sock").unlink()  # the agent's socket gone: not serving
    assert cli("status").output.startswith("starting")
    (inited / "hostagent.pid").unlink()
    assert cli("halt").exit_code == 0


def test_cache_ls_and_prune_keep_what_instances_boot(cli: Any, inited: Path, server: FileServer, env: Path) -> None:
    assert cli("download", "--manifest-url", f"{server.url}/v2/manifest.json").exit_code == 0
    unfinished = env / "cache" / ("ab" * 32)  # a download that died over an hour ago
    unfinished.mkdir()
    (unfinished / "toolbox.iso.part").write_bytes(b"x" * 1000)
    os.utime(unfinished / "toolbox.iso.part", (1, 1))
    rows = {r["sha256"]: r for r in json.loads(cli("cache", "ls", "--json").output)}
    booted = json.loads(cli("info", "--json").output)["image"]["sha256"]
    assert rows[booted]["used_by"] == ["default"] and rows[booted]["complete"]
    assert len(rows) == 3 and not rows["ab" * 32]["complete"]
    assert "unused" in cli("cache", "ls").output
    dry = cli("cache", "prune", "--dry-run")
    assert dry.exit_code == 0 and dry.output.count("would remove") == 2
    assert len(json.loads(cli("cache", "ls", "--json").output)) == 3  # a dry run removes nothing
    result = cli("cache", "prune")
    assert result.exit_code == 0 and result.output.count("removed") == 2, result.output
    assert [r["sha256"] for r in json.loads(cli("cache", "ls", "--json").output)] == [booted]
    assert (env / "cache" / booted / "toolbox.iso").is_file()  # the booted image is untouched
    fresh = env / "cache" / ("cd" * 32)  # a download that may still be running
    fresh.mkdir()
    (fresh / "toolbox.iso.part").write_bytes(b"x")
    assert "removed" not in cli("cache", "prune").output and fresh.is_dir()


def test_up_boots_again_once_when_the_guest_kernel_hangs(cli: Any, inited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A console whose watchdog says a CPU is stuck for a minute: the VM is switched off and
    booted again, once; a second hang is the error, with the watchdog's line."""
    _fake_ssh(monkeypatch)
    paths = InstancePaths.for_name("default")
    waits: list[str] = []

    def wait(paths: InstancePaths, alive: Any, timeout: float) -> None:
        waits.append(cli("status").output.split()[0])  # the VM is running while up waits
        if len(waits) == 1 or len(waits) >= 3:  # the first boot hangs, and the third (a second `up`) too
            with paths.serial_log.open("ab") as log:
                log.write(b"[ 84.6] watchdog: BUG: soft lockup - CPU#1 stuck for 74s! [sshd:214]\n")
            alive()

    monkeypatch.setattr(guest, "wait_for_docker_socket", wait)
    result = cli("up")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())  # rich wraps at the terminal's width
    assert "the guest kernel hung while booting (soft lockup - CPU#1 stuck for 74s! [sshd:214])" in flat
    assert "booting it again" in flat and len(waits) == 2
    assert cli("halt").exit_code == 0
    again = cli("up")  # hangs twice: the second is up's error, and the VM is left off
    assert again.exit_code != 0 and "hung while booting" in again.output and "toolbox up" in again.output
    assert len(waits) == 4 and cli("status").output.strip() == "stopped"
