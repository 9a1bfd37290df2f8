"""The JSON types of the request bodies the engine reads (container create, exec create).

Docker decodes these bodies into Go structs, so a value of the wrong JSON type is a 400
("json: cannot unmarshal bool into Go struct field CreateRequest.Image of type string")
before anything looks at it. Checking the same here keeps a `True` where a string belongs
from turning into an AttributeError deep in the engine (a 500). Only the fields the engine
reads are listed; unknown fields pass, as in Docker; null is always allowed.
"""

from __future__ import annotations

from typing import Any

from toolbox_agent.http import ApiError

# A shape: a Go type name (str), [item shape] for a slice, {"*": shape} for a map, or a
# dict of field -> shape for a struct.
Shape = Any
STRINGS: Shape = ["string"]
STR_MAP: Shape = {"*": "string"}
PORT_BINDINGS: Shape = {"*": [{"HostIp": "string", "HostPort": "string"}]}
MOUNT: Shape = {"Type": "string", "Source": "string", "Target": "string", "ReadOnly": "bool",
                "BindOptions": {"Propagation": "string"}, "TmpfsOptions": {"SizeBytes": "int64", "Mode": "uint32"},
                "VolumeOptions": {"NoCopy": "bool", "Labels": STR_MAP}}  # fmt: skip
HOST_CONFIG: Shape = {
    "Binds": STRINGS, "Mounts": [MOUNT], "Tmpfs": STR_MAP, "VolumesFrom": STRINGS, "PortBindings": PORT_BINDINGS,
    "PublishAllPorts": "bool", "AutoRemove": "bool", "RestartPolicy": {"Name": "string", "MaximumRetryCount": "int"},
    "Memory": "int64", "MemorySwap": "int64", "NanoCpus": "int64", "CpuShares": "int64", "CpuQuota": "int64",
    "CpuPeriod": "int64", "PidsLimit": "int64", "CapAdd": STRINGS, "CapDrop": STRINGS, "Privileged": "bool",
    "NetworkMode": "string", "Init": "bool", "ExtraHosts": STRINGS, "Dns": STRINGS, "DnsSearch": STRINGS,
    "DnsOptions": STRINGS, "ShmSize": "int64", "ReadonlyRootfs": "bool", "SecurityOpt": STRINGS, "PidMode": "string",
    "IpcMode": "string", "UTSMode": "string", "Ulimits": [{"Name": "string", "Soft": "int64", "Hard": "int64"}],
    "LogConfig": {"Type": "string", "Config": STR_MAP}, "Sysctls": STR_MAP, "GroupAdd": STRINGS, "Links": STRINGS,
}  # fmt: skip
CONFIG: Shape = {
    "Image": "string", "Cmd": "strslice", "Entrypoint": "strslice", "Env": STRINGS, "Labels": STR_MAP,
    "User": "string", "WorkingDir": "string", "Hostname": "string", "Domainname": "string", "StopSignal": "string",
    "StopTimeout": "int", "Tty": "bool", "OpenStdin": "bool", "StdinOnce": "bool", "AttachStdin": "bool",
    "AttachStdout": "bool", "AttachStderr": "bool", "ExposedPorts": {"*": {}}, "Volumes": {"*": {}},
    "Healthcheck": {"Test": STRINGS, "Interval": "int64", "Timeout": "int64", "Retries": "int"},
    "HostConfig": HOST_CONFIG, "NetworkingConfig": {"EndpointsConfig": {"*": {"Aliases": STRINGS, "IPAMConfig": {"IPv4Address": "string"}}}},
}  # fmt: skip
EXEC_CONFIG: Shape = {
    "Cmd": STRINGS, "Env": STRINGS, "User": "string", "WorkingDir": "string", "Tty": "bool", "Privileged": "bool",
    "AttachStdin": "bool", "AttachStdout": "bool", "AttachStderr": "bool", "DetachKeys": "string",
    "ConsoleSize": ["uint"], "Detach": "bool",
}  # fmt: skip


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _go_type(shape: Shape) -> str:
    if isinstance(shape, str):
        return "[]string" if shape == "strslice" else shape
    if isinstance(shape, list):
        return "[]" + _go_type(shape[0])
    if "*" in shape:
        return "map[string]" + (_go_type(shape["*"]) if shape["*"] else "struct {}")
    return "struct"


def _fits(value: Any, shape: str) -> bool:
    if shape == "string":
        return isinstance(value, str)
    if shape == "bool":
        return isinstance(value, bool)
    if shape == "strslice":  # Docker's StrSlice: a string or a list of strings
        return isinstance(value, str) or isinstance(value, list) and all(isinstance(v, str) for v in value)
    fits_int = isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
    bits, unsigned = (32 if shape.endswith("32") else 64), shape.startswith("uint")
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return fits_int and low <= value <= high


def check(value: Any, shape: Shape, where: str) -> None:
    """ApiError(400) naming the first field whose JSON type is not what Docker decodes."""
    if value is None:
        return
    wrong = ApiError(400, f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where} of type {_go_type(shape)}")
    if isinstance(shape, str):
        if not _fits(value, shape):
            raise wrong
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise wrong
        for item in value:
            check(item, shape[0], where)
    elif not isinstance(value, dict):
        raise wrong
    elif "*" in shape:
        for item in value.values():
            check(item, shape["*"] or {}, where)
    else:
        for key, sub in shape.items():
            if key in value:
                check(value[key], sub, f"{where}.{key}")
