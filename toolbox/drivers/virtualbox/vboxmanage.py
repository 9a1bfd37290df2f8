"""Pure: VBoxManage argv builders and the parser of `showvminfo --machinereadable`.

No process is started here; toolbox.drivers.virtualbox.driver runs these argvs through
toolbox.run.run. Grammar per the VirtualBox 7 manual (chapter 8, VBoxManage).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from toolbox.drivers.base import Mount, VMSpec, VMState, VMStatus

VBOXMANAGE = "VBoxManage"
CONTROLLER = "SATA"  # the one storage controller toolbox adds (AHCI)
# SATA ports: the image first so BIOS boots it, then the config drive, then the data disk.
PORT_ISO, PORT_CIDATA, PORT_DISK = 0, 1, 2
SSH_RULE = "ssh"  # the name of the NAT port-forwarding rule for SSH


def vm_name(instance: str) -> str:
    """VirtualBox machine names are global to the user, so ours carry a prefix."""
    return f"toolbox-{instance}"


def _vbm(*args: str | Path) -> list[str]:
    return [VBOXMANAGE, *(str(a) for a in args)]


# -- argv builders ----------------------------------------------------------------------


def createvm(name: str, basefolder: Path) -> list[str]:
    # --basefolder keeps the .vbox file and logs inside the instance directory, so
    # deleting the instance cannot miss them.
    return _vbm("createvm", "--name", name, "--ostype", "Linux26_64", "--basefolder", basefolder, "--register")


def modifyvm(name: str, spec: VMSpec) -> list[str]:
    """Hardware, firmware, NAT with the SSH forward, serial console: one call."""
    return _vbm(
        "modifyvm", name,
        "--memory", str(spec.memory_mib),
        "--cpus", str(spec.cpus),
        "--firmware", "bios",  # the image is hybrid; BIOS boots faster than VirtualBox's EFI
        "--ioapic", "on",  # needed for more than one CPU
        "--rtcuseutc", "on",
        "--boot1", "dvd", "--boot2", "none", "--boot3", "none", "--boot4", "none",
        "--audio-driver", "none",
        # NAT with a forward bound to 127.0.0.1 only: the guest's sshd is never on the
        # network (boot2docker's host-only adapter exposed it to the host's LAN side).
        "--nic1", "nat", "--nictype1", "virtio", "--cableconnected1", "on",
        "--natpf1", forward_rule(spec.ssh_port),
        "--uart1", "0x3F8", "4", "--uartmode1", "file", str(spec.serial_log),
    )  # fmt: skip


def forward_rule(port: int) -> str:
    return f"{SSH_RULE},tcp,127.0.0.1,{port},,22"


def delete_forward(name: str) -> list[str]:
    return _vbm("modifyvm", name, "--natpf1", "delete", SSH_RULE)


def storagectl(name: str) -> list[str]:
    return _vbm(
        "storagectl", name, "--name", CONTROLLER, "--add", "sata", "--controller", "IntelAhci",
        "--portcount", "3", "--bootable", "on",
    )  # fmt: skip


def createmedium(path: Path, size_gib: int) -> list[str]:
    # Standard = dynamically allocated: the file grows as the guest writes.
    return _vbm(
        "createmedium", "disk", "--filename", path, "--format", "VDI", "--variant", "Standard",
        "--size", str(size_gib * 1024),
    )  # fmt: skip


def storageattach(name: str, port: int, kind: str, medium: Path | str) -> list[str]:
    """Attach medium ("none" detaches) as kind ("dvddrive" or "hdd") at SATA port."""
    return _vbm(
        "storageattach", name, "--storagectl", CONTROLLER, "--port", str(port), "--device", "0",
        "--type", kind, "--medium", medium,
    )  # fmt: skip


def sharedfolder_add(name: str, mount: Mount) -> list[str]:
    # No --automount: the guest mounts each share itself at mount.guest_path, as the
    # config drive's mounts file says.
    argv = _vbm("sharedfolder", "add", name, "--name", mount.tag, "--hostpath", mount.host_path)
    return argv + ([] if mount.writable else ["--readonly"])


def allow_symlinks(name: str, mount: Mount) -> list[str]:
    # VirtualBox refuses to create symlinks in a shared folder unless the VM's extra data
    # allows it per share; projects (node_modules/.bin, virtualenvs) need them.
    return _vbm("setextradata", name, f"VBoxInternal2/SharedFoldersEnableSymlinksCreate/{mount.tag}", "1")


def sharedfolder_remove(name: str, tag: str) -> list[str]:
    return _vbm("sharedfolder", "remove", name, "--name", tag)


def startvm(name: str) -> list[str]:
    return _vbm("startvm", name, "--type", "headless")


def controlvm(name: str, action: str) -> list[str]:
    """action: acpipowerbutton, poweroff, savestate, reset, pause, resume."""
    return _vbm("controlvm", name, action)


def discardstate(name: str) -> list[str]:
    return _vbm("discardstate", name)


def showvminfo(name: str) -> list[str]:
    return _vbm("showvminfo", name, "--machinereadable")


def unregistervm(name: str) -> list[str]:
    return _vbm("unregistervm", name, "--delete")


def closemedium(kind: str, path: Path, *, delete: bool = False) -> list[str]:
    return _vbm("closemedium", kind, path, *(["--delete"] if delete else []))


# -- errors ---------------------------------------------------------------------------------

_ERROR = re.compile(r"^VBoxManage(?:\.exe)?: error: (.*)$")


def error_message(output: str) -> str:
    """The first line of a VBoxManage error that says what went wrong.

    VBoxManage follows the message with "Details: code ..." and "Context: ..." lines,
    which name C++ calls rather than the problem.
    """
    for line in output.splitlines():
        m = _ERROR.match(line.strip())
        if m and not m.group(1).startswith(("Details:", "Context:")):
            return m.group(1)
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[0] if lines else "no output"


def is_not_found(output: str) -> bool:
    return "VBOX_E_OBJECT_NOT_FOUND" in output or "Could not find a registered machine" in output


# -- showvminfo --machinereadable -------------------------------------------------------


@dataclass(frozen=True)
class Forward:
    name: str
    proto: str
    host_ip: str
    host_port: int
    guest_ip: str
    guest_port: int


@dataclass(frozen=True)
class Attachment:
    controller: str
    port: int
    device: int
    medium: str  # a path, "none" or "emptydrive"


@dataclass(frozen=True)
class SharedFolder:
    name: str
    host_path: str


@dataclass(frozen=True)
class VMInfo:
    name: str
    uuid: str
    vm_state: str  # VirtualBox's own word: running, poweroff, saved, aborted, paused ...
    memory_mib: int
    cpus: int
    firmware: str
    forwards: tuple[Forward, ...]
    attachments: tuple[Attachment, ...]
    shared_folders: tuple[SharedFolder, ...]
    uart_mode: str  # e.g. "file,/path/serial.log", or "" when disconnected
    raw: Mapping[str, str]

    @property
    def status(self) -> VMStatus:
        return map_state(self.vm_state)

    def forward(self, name: str) -> Forward | None:
        return next((f for f in self.forwards if f.name == name), None)

    def medium_at(self, controller: str, port: int, device: int = 0) -> str | None:
        return next(
            (a.medium for a in self.attachments if (a.controller, a.port, a.device) == (controller, port, device)),
            None,
        )


def _unquote(text: str) -> tuple[str, str]:
    """Split a leading "quoted" token (backslash escapes \\" and \\\\) from the rest."""
    out, i = [], 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), text[i + 1 :]
        out.append(c)
        i += 1
    return "".join(out), ""


def parse_pairs(text: str) -> dict[str, str]:
    """key=value lines; keys with dashes or spaces arrive quoted ("SATA-0-0"="...")."""
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line.startswith('"'):
            key, rest = _unquote(line)
            if not rest.startswith("="):
                continue
            rest = rest[1:]
        else:
            key, sep, rest = line.partition("=")
            if not sep:
                continue
        value = _unquote(rest)[0] if rest.startswith('"') else rest.strip()
        pairs[key] = value
    return pairs


_FORWARD_KEY = re.compile(r"^Forwarding\((\d+)\)$")
_MEDIUM_KEY = re.compile(r"^(?P<ctl>.+)-(?P<port>\d+)-(?P<dev>\d+)$")
_FOLDER_KEY = re.compile(r"^SharedFolderNameMachineMapping(\d+)$")


def _forwards(pairs: Mapping[str, str]) -> tuple[Forward, ...]:
    found: list[tuple[int, Forward]] = []
    for key, value in pairs.items():
        m = _FORWARD_KEY.match(key)
        if m:
            name, proto, host_ip, host_port, guest_ip, guest_port = value.split(",")
            found.append((int(m.group(1)), Forward(name, proto, host_ip, int(host_port), guest_ip, int(guest_port))))
    return tuple(f for _, f in sorted(found, key=lambda x: x[0]))


def _attachments(pairs: Mapping[str, str]) -> tuple[Attachment, ...]:
    controllers = {v for k, v in pairs.items() if k.startswith("storagecontrollername")}
    out = []
    for key, value in pairs.items():
        m = _MEDIUM_KEY.match(key)
        # "SATA-ImageUUID-0-0", "SATA-IsEjected-0-0" ... also match; only CTL-PORT-DEV is a medium.
        if m and m.group("ctl") in controllers:
            out.append(Attachment(m.group("ctl"), int(m.group("port")), int(m.group("dev")), value))
    return tuple(sorted(out, key=lambda a: (a.controller, a.port, a.device)))


def _shared_folders(pairs: Mapping[str, str]) -> tuple[SharedFolder, ...]:
    out = []
    for key, value in pairs.items():
        m = _FOLDER_KEY.match(key)
        if m:
            out.append((int(m.group(1)), SharedFolder(value, pairs.get(f"SharedFolderPathMachineMapping{m.group(1)}", ""))))
    return tuple(f for _, f in sorted(out, key=lambda x: x[0]))


def parse_vminfo(text: str) -> VMInfo:
    """A VMInfo from `VBoxManage showvminfo NAME --machinereadable` output."""
    pairs = parse_pairs(text)
    if "VMState" not in pairs or "name" not in pairs:
        raise ValueError("not showvminfo --machinereadable output: no name= or VMState= line")
    return VMInfo(
        name=pairs["name"],
        uuid=pairs.get("UUID", ""),
        vm_state=pairs["VMState"],
        memory_mib=int(pairs.get("memory", "0")),
        cpus=int(pairs.get("cpus", "0")),
        firmware=pairs.get("firmware", ""),
        forwards=_forwards(pairs),
        attachments=_attachments(pairs),
        shared_folders=_shared_folders(pairs),
        uart_mode=pairs.get("uartmode1", ""),
        raw=pairs,
    )


# VirtualBox MachineState short names (VBoxManage's machineStateToName) -> toolbox's.
_RUNNING = {"running", "starting", "restoring", "teleportingin", "livesnapshotting", "onlinesnapshotting"}
_TRANSIENT = {"stopping": "powering off", "saving": "saving its state to disk", "settingup": "being set up"}


def map_state(vm_state: str) -> VMStatus:
    if vm_state in _RUNNING:
        return VMStatus(VMState.RUNNING, () if vm_state == "running" else (vm_state,))
    if vm_state in _TRANSIENT:
        return VMStatus(VMState.RUNNING, (_TRANSIENT[vm_state],))
    if vm_state == "poweroff":
        return VMStatus(VMState.STOPPED)
    if vm_state == "aborted":
        # The VM process died (killed, host crash); startvm boots it afresh, as after kill -9.
        return VMStatus(VMState.STOPPED, ("aborted: the VM process ended without a clean power-off",))
    if vm_state == "teleported":
        return VMStatus(VMState.STOPPED, ("teleported away",))
    if vm_state == "saved":
        return VMStatus(VMState.SUSPENDED, ("memory saved to disk (VirtualBox saved state)",))
    if vm_state == "paused":
        return VMStatus(VMState.SUSPENDED, ("paused in memory",))
    if vm_state == "gurumeditation":
        return VMStatus(VMState.BROKEN, ("guru meditation: the VM hit a fatal error; power it off",))
    return VMStatus(VMState.BROKEN, (f"VirtualBox reports state {vm_state!r}",))
