"""The guest image on its own (vm-image/out), booted by QEMU under TCG.

Three VMs boot at once when the module starts:
  kernel  direct kernel boot (the host's way), config drive + an empty data disk;
          most assertions run on it, then it reboots and finally powers off by ACPI.
  bios    `-cdrom` under SeaBIOS, no config drive, no disk: sshd with its own host key,
          nobody gets in.
  uefi    `-cdrom` under OVMF, config drive: the pinned host key and the login work.

Skips when the image is missing, unless TOOLBOX_REQUIRE_E2E=1 (CI), which fails instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from image_helpers import IMAGE_OUT, GuestVM, KeyPair, create_disk, run, write_cidata

pytestmark = pytest.mark.e2e

INIT_STEPS = [  # in boot order, as the serial log shows them
    "cgroup2 mounted at /sys/fs/cgroup",
    "config drive",
    "hostname imagetest, user toolbox 501:20, host key from config drive",
    "network: lo up, eth0 10.0.2.15/24 (DHCP)",
    "sshd started on port 22",
    "guest agent started under supervision",  # waiting until released: see vm-image/README.md
    "data disk /dev/vda mounted at /var/lib/toolbox",
    "guest agent released (log /var/lib/toolbox/log/toolbox-agent.log)",
    "ready",
]


def _require_image() -> None:
    if (IMAGE_OUT / "toolbox.iso").is_file():
        return
    message = f"no guest image in {IMAGE_OUT} (build it with: make -C vm-image)"
    if os.environ.get("TOOLBOX_REQUIRE_E2E"):
        pytest.fail(message)
    pytest.skip(message)


class Guests:
    def __init__(self, workdir: Path) -> None:
        self.login = KeyPair.generate("toolbox-test")
        self.host_key = KeyPair.generate("root@imagetest")
        cidata = workdir / "cidata.iso"
        write_cidata(cidata, self.login, self.host_key)
        self.kernel = GuestVM(workdir, "kernel", cidata=cidata, disk=create_disk(workdir / "disk.qcow2"))
        self.bios = GuestVM(workdir, "bios", cpus=1)
        self.uefi = GuestVM(workdir, "uefi", cidata=cidata, cpus=1)

    def all(self) -> list[GuestVM]:
        return [self.kernel, self.bios, self.uefi]


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guests]:
    _require_image()
    g = Guests(tmp_path_factory.mktemp("image"))
    for vm in g.all():
        vm.start()
    try:
        yield g
    finally:
        for vm in g.all():
            vm.kill()


@pytest.fixture(scope="module")
def kernel_vm(guests: Guests) -> GuestVM:
    guests.kernel.wait_for_sshd()
    return guests.kernel


def test_direct_kernel_boot_key_login_and_pinned_host_key(guests: Guests, kernel_vm: GuestVM) -> None:
    with kernel_vm.ssh(guests.login, host_key=guests.host_key) as client:
        status, out = run(client, "id -un; id -u; id -g; hostname; sudo -n id -u")
    assert status == 0, out
    assert out.split() == ["toolbox", "501", "20", "imagetest", "0"]


def test_password_login_refused_and_not_offered(kernel_vm: GuestVM) -> None:
    transport = paramiko.Transport(("127.0.0.1", kernel_vm.port))
    try:
        transport.start_client(timeout=60)
        with pytest.raises(paramiko.BadAuthenticationType) as err:
            transport.auth_password("toolbox", "toolbox")
        assert err.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_serial_log_shows_each_init_step_with_its_time(kernel_vm: GuestVM) -> None:
    kernel_vm.wait_for_serial("] ready")
    lines = [line for line in kernel_vm.serial().splitlines() if line.startswith("[toolbox-init ")]
    assert all(re.match(r"\[toolbox-init \d+\.\d+s\] ", line) for line in lines), lines
    positions = []
    for step in INIT_STEPS:
        found = [i for i, line in enumerate(lines) if step in line]
        assert found, f"{step!r} missing from:\n" + "\n".join(lines)
        positions.append(found[0])
    assert positions == sorted(positions), lines


def test_guest_runs_cgroup2_only_and_agent_socket_is_open_to_toolbox(guests: Guests, kernel_vm: GuestVM) -> None:
    ping = ("import socket,time\n"
            "for _ in range(240):\n"
            "    try:\n"
            "        s=socket.socket(socket.AF_UNIX); s.connect('/run/toolbox/docker.sock'); break\n"
            "    except OSError as e: err=e; time.sleep(0.5)\n"
            "else: raise SystemExit(err)\n"
            "s.sendall(b'GET /_ping HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); print(s.recv(4096).decode())\n")
    with kernel_vm.ssh(guests.login) as client:
        status, out = run(client, "findmnt -no FSTYPE /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.subtree_control; "
                                  "grep -c cgroup /proc/mounts")
        assert status == 0, out
        assert out.split()[0] == "cgroup2" and "memory" in out and "pids" in out
        assert out.split()[-1] == "1"  # no v1 hierarchy anywhere
        status, out = run(client, f"python3 -c \"{ping}\"", timeout=180)
        assert status == 0 and out.startswith("HTTP/1.1 200"), out
        status, out = run(client, "sudo cat /run/toolbox/agent.json")
        assert '"test": true' in out


def test_no_config_drive_boots_from_cdrom_under_seabios_and_lets_nobody_in(guests: Guests) -> None:
    vm = guests.bios
    vm.wait_for_sshd()
    assert "host key generated" in vm.serial()
    with pytest.raises(paramiko.AuthenticationException):
        vm.ssh(guests.login)
    vm.kill()  # frees a CPU for the others


def test_cdrom_boot_under_ovmf(guests: Guests) -> None:
    vm = guests.uefi
    vm.wait_for_sshd(timeout=400)
    with vm.ssh(guests.login, host_key=guests.host_key) as client:
        status, out = run(client, "test -d /sys/firmware/efi && echo uefi")
    assert status == 0 and out.strip() == "uefi", out
    vm.kill()


def test_data_disk_survives_reboot_without_reformat(guests: Guests, kernel_vm: GuestVM) -> None:
    with kernel_vm.ssh(guests.login) as client:
        status, out = run(client, "echo kept | sudo tee /var/lib/toolbox/marker >/dev/null && "
                                  "sudo findmnt -no UUID,LABEL /var/lib/toolbox")
        assert status == 0, out
        uuid_before = out.split()[0]
        assert out.split()[1] == "toolbox-data"
        run(client, "sudo reboot")
    kernel_vm.wait_for_serial("sshd started on port 22", count=2)
    kernel_vm.wait_for_sshd()
    assert kernel_vm.serial().count("formatting empty disk") == 1  # the first boot only
    assert "data disk unmounted" in kernel_vm.serial()
    with kernel_vm.ssh(guests.login) as client:
        status, out = run(client, "cat /var/lib/toolbox/marker; sudo findmnt -no UUID /var/lib/toolbox")
    assert status == 0 and out.split() == ["kept", uuid_before], out


def test_acpi_power_button_shuts_down_cleanly(kernel_vm: GuestVM) -> None:
    kernel_vm.wait_for_serial("guest agent started", count=2)
    kernel_vm.qmp("system_powerdown")
    assert kernel_vm.wait_exit(timeout=90) == 0, kernel_vm.serial()[-2000:]
    tail = kernel_vm.serial().split("shutdown (poweroff)")[-1]
    assert "data disk unmounted" in tail and "poweroff" in tail
