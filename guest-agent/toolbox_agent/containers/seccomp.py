"""The seccomp filter for a container: Docker's default policy, expressed as what it denies.

Docker's default profile is an allow-list of ~350 system calls; what it leaves out (or
allows only with a capability) is the short list below, and that is what this filter
refuses with EPERM. Calls that need CAP_SYS_ADMIN (mount, unshare, setns ...) stay allowed
when the container has that capability; `--privileged` and `seccomp=unconfined` get no
filter. Not done: Docker's argument filters (clone's namespace flags, personality values);
without CAP_SYS_ADMIN the kernel refuses new namespaces anyway.
"""

from __future__ import annotations

from typing import Any

# Denied always (Docker's default profile never allows these).
ALWAYS = [
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "move_pages",
    "nfsservctl", "open_by_handle_at", "perf_event_open", "process_vm_readv", "process_vm_writev",
    "query_module", "quotactl", "reboot", "request_key", "set_mempolicy", "settimeofday", "swapoff",
    "swapon", "sysfs", "_sysctl", "uselib", "userfaultfd", "ustat", "io_uring_setup",
    "io_uring_enter", "io_uring_register",
]  # fmt: skip
# Denied unless the container has CAP_SYS_ADMIN.
NEED_SYS_ADMIN = ["mount", "umount2", "pivot_root", "unshare", "setns", "name_to_handle_at", "fanotify_init", "syslog"]
# Docker allows these with the capability named.
NEED_CAP = {"CAP_SYS_PTRACE": ["ptrace"], "CAP_SYS_BOOT": ["reboot"], "CAP_SYS_MODULE": ["init_module", "finit_module", "delete_module"],
            "CAP_SYS_TIME": ["settimeofday", "clock_settime", "clock_adjtime"], "CAP_SYS_PACCT": ["acct"],
            "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "move_pages"], "CAP_SYSLOG": ["syslog"]}  # fmt: skip
ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
EPERM = 1


def profile(host_config: dict[str, Any], caps: list[str]) -> dict[str, Any] | None:
    """The OCI `linux.seccomp` section, or None for no filter."""
    if host_config.get("Privileged"):
        return None
    for opt in host_config.get("SecurityOpt") or []:
        key, _, value = opt.replace("=", ":", 1).partition(":")
        if key == "seccomp" and value == "unconfined":
            return None
    denied = set(ALWAYS)
    if "CAP_SYS_ADMIN" not in caps:
        denied |= set(NEED_SYS_ADMIN)
    for cap, calls in NEED_CAP.items():
        if cap in caps:
            denied -= set(calls)
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHES,
        "syscalls": [{"names": sorted(denied), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}],
    }
