"""The OCI runtime config (config.json) for a container: a pure function of its settings.

Security defaults follow Docker's: its default capability set, masked and read-only /proc
paths, a device allow-list, no_new_privileges on request, a cgroup v2 path per container,
and a seccomp filter denying what Docker's default profile denies (seccomp.py). No AppArmor.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

from toolbox_agent.containers import seccomp

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip
ALL_CAPS = DEFAULT_CAPS + [
    "CAP_DAC_READ_SEARCH", "CAP_LINUX_IMMUTABLE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_LEASE",
    "CAP_AUDIT_CONTROL", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]  # fmt: skip
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# (type, major, minor) allowed rwm besides the blanket mknod rules, as Docker allows.
ALLOWED_DEVICES = [("c", 1, 3), ("c", 1, 8), ("c", 1, 7), ("c", 5, 0), ("c", 1, 5), ("c", 1, 9), ("c", 136, None), ("c", 5, 2), ("c", 10, 200)]


@dataclass
class SpecInput:
    id: str
    args: list[str]
    env: list[str]
    cwd: str
    uid: int
    gid: int
    additional_gids: list[int]
    hostname: str
    rootfs: str
    tty: bool
    hosts_path: str
    hostname_path: str
    resolv_path: str
    host_config: dict[str, Any] = field(default_factory=dict)
    console_size: tuple[int, int] | None = None  # (rows, cols)
    mounts: list[dict[str, Any]] = field(default_factory=list)  # binds, volumes, tmpfs (volumemounts.py)
    netns: str | None = None  # a namespace to join (path), "" a new one, None the VM's


def capabilities(host_config: dict[str, Any]) -> list[str]:
    if host_config.get("Privileged"):
        return list(ALL_CAPS)
    caps = list(DEFAULT_CAPS)
    adds = [_cap_name(c) for c in host_config.get("CapAdd") or []]
    drops = [_cap_name(c) for c in host_config.get("CapDrop") or []]
    if "CAP_ALL" in drops:
        caps = []
    caps = [c for c in caps if c not in drops]
    if "CAP_ALL" in adds:
        caps = list(ALL_CAPS)
    caps += [c for c in adds if c != "CAP_ALL" and c not in caps]
    return caps


def _cap_name(name: str) -> str:
    upper = name.upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def no_new_privileges(host_config: dict[str, Any]) -> bool:
    for opt in host_config.get("SecurityOpt") or []:
        key, _, value = opt.replace("=", ":").partition(":")
        if key == "no-new-privileges" and value.lower() in ("", "true", "1"):
            return True
    return False


def build_spec(inp: SpecInput) -> dict[str, Any]:
    hc = inp.host_config
    caps = capabilities(hc)
    process: dict[str, Any] = {
        "terminal": inp.tty,
        "user": {"uid": inp.uid, "gid": inp.gid, "additionalGids": inp.additional_gids},
        "args": inp.args,
        "env": inp.env,
        "cwd": inp.cwd or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}],
        "noNewPrivileges": no_new_privileges(hc),
        "oomScoreAdj": int(hc.get("OomScoreAdj") or 0),
    }
    if inp.tty and inp.console_size:
        process["consoleSize"] = {"height": inp.console_size[0], "width": inp.console_size[1]}
    privileged = bool(hc.get("Privileged"))
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")]
    if _own_netns(inp):
        namespaces.append({"type": "network", **({"path": inp.netns} if inp.netns else {})})
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": f"/toolbox/{inp.id}",
        "resources": _resources(hc, privileged),
        "maskedPaths": [] if privileged else MASKED_PATHS,
        "readonlyPaths": [] if privileged else READONLY_PATHS,
    }
    filt = seccomp.profile(hc, caps)
    if filt is not None:
        linux["seccomp"] = filt
    sysctls = hc.get("Sysctls") or {}
    if sysctls:
        linux["sysctl"] = dict(sysctls)
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": inp.rootfs, "readonly": bool(hc.get("ReadonlyRootfs"))},
        "hostname": inp.hostname,
        "mounts": _mounts(inp),
        "linux": linux,
    }


def _resources(hc: dict[str, Any], privileged: bool) -> dict[str, Any]:
    devices: list[dict[str, Any]] = [{"allow": privileged, "access": "rwm"}]
    if not privileged:
        devices += [{"allow": True, "type": "c", "access": "m"}, {"allow": True, "type": "b", "access": "m"}]
        for kind, major, minor in ALLOWED_DEVICES:
            rule: dict[str, Any] = {"allow": True, "type": kind, "major": major, "access": "rwm"}
            if minor is not None:
                rule["minor"] = minor
            devices.append(rule)
    res: dict[str, Any] = {"devices": devices}
    if hc.get("Memory"):
        res["memory"] = {"limit": int(hc["Memory"])}
    cpu: dict[str, Any] = {}
    if hc.get("NanoCpus"):
        cpu = {"quota": int(hc["NanoCpus"]) * 100000 // 1_000_000_000, "period": 100000}
    if hc.get("CpuShares"):
        cpu["shares"] = int(hc["CpuShares"])
    if cpu:
        res["cpu"] = cpu
    if (hc.get("PidsLimit") or 0) > 0:  # 0 and -1: unlimited
        res["pids"] = {"limit": int(hc["PidsLimit"])}
    return res


def _own_netns(inp: SpecInput) -> bool:
    return inp.netns is not None or (inp.host_config.get("NetworkMode") or "") == "none"


def _mounts(inp: SpecInput) -> list[dict[str, Any]]:
    hc = inp.host_config
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]  # fmt: skip
    if not _own_netns(inp):
        # the VM's network namespace is shared: sysfs may not be mounted anew, bind it
        mounts[3] = {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    for dest, src in (("/etc/hosts", inp.hosts_path), ("/etc/hostname", inp.hostname_path), ("/etc/resolv.conf", inp.resolv_path)):
        mounts.append({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate"]})
    return _with_user_mounts(mounts, inp.mounts)


def _with_user_mounts(defaults: list[dict[str, Any]], user: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The user's mounts replace a default at the same place; parents before children (a
    volume on /etc before /etc/hosts), the order otherwise kept, as Docker sorts them."""
    taken = {m["destination"] for m in user}
    merged = [m for m in defaults if m["destination"] not in taken] + list(user)
    return sorted(merged, key=lambda m: m["destination"].rstrip("/").count("/"))


def resolve_user(spec: str, passwd: str, group: str) -> tuple[int, int, list[int]]:
    """Docker's `User` ("", "name", "uid", "name:group", "uid:gid") against the image's files.

    Raises ValueError naming what is unknown.
    """
    user, _, grp = spec.partition(":")
    users = [line.split(":") for line in passwd.splitlines() if line.count(":") >= 6]
    groups = [line.split(":") for line in group.splitlines() if line.count(":") >= 3]
    uid, gid, name = 0, 0, "root"
    if user:
        entry = next((u for u in users if u[0] == user or (user.isdigit() and u[2] == user)), None)
        if entry is not None:
            uid, gid, name = int(entry[2]), int(entry[3]), entry[0]
        elif user.isdigit():
            uid, gid, name = int(user), 0, ""
        else:
            raise ValueError(f"unable to find user {user}: no matching entries in passwd file")
    if grp:
        g = next((x for x in groups if x[0] == grp or (grp.isdigit() and x[2] == grp)), None)
        if g is not None:
            gid = int(g[2])
        elif grp.isdigit():
            gid = int(grp)
        else:
            raise ValueError(f"unable to find group {grp}: no matching entries in group file")
    extra = sorted({int(g[2]) for g in groups if name and name in g[3].split(",") and int(g[2]) != gid})
    return uid, gid, extra


def signal_number(value: str | int | None, default: int = signal.SIGKILL) -> int:
    """"SIGTERM", "TERM", "15" -> 15; ValueError for anything else."""
    if value is None or value == "":
        return int(default)
    if isinstance(value, int) or str(value).isdigit():
        num = int(value)
        if 0 < num < 65:
            return num
        raise ValueError(f"invalid signal: {value}")
    name = str(value).upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"invalid signal: {value}") from None
