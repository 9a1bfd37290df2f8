"""`toolbox shellinit`: the environment a shell needs to use the instance, in its syntax.

`environment()` says WHAT to set (None means unset); `render()` says it in bash/zsh,
fish, PowerShell or cmd. `use_docker_context()` is the other way to point docker at the
instance: a `toolbox` docker context, selected, so every shell (and IDE) uses it without
an eval; DOCKER_HOST is then unset, since it would override the context.

Testcontainers needs two more facts than DOCKER_HOST gives: the engine's socket path as
seen from inside the VM (it bind-mounts that into its Ryuk reaper container), and the
host on which published ports appear: the host agent forwards them to the host's
127.0.0.1, so that is where a test must connect.
"""

from __future__ import annotations

import os
from pathlib import Path

from toolbox.errors import UsageError
from toolbox.hostagent import GUEST_SOCKET  # the guest agent's socket, inside the VM
from toolbox.paths import InstancePaths

PORTS_HOST = "127.0.0.1"  # where the host agent listens for every published port

SHELLS = ("bash", "zsh", "fish", "powershell", "cmd")


def environment(paths: InstancePaths, docker_context: bool = False) -> dict[str, str | None]:
    """Variables to set (str) or unset (None) for the docker CLI (and Testcontainers) to
    reach the instance. With docker_context the selected context does DOCKER_HOST's job."""
    return {
        "DOCKER_HOST": None if docker_context else f"unix://{paths.docker_socket}",
        # Left over from boot2docker/docker-machine, these would make docker try TLS.
        "DOCKER_TLS_VERIFY": None,
        "DOCKER_CERT_PATH": None,
        # Only where they differ from what DOCKER_HOST implies (the host's socket, localhost).
        "TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE": GUEST_SOCKET,
        "TESTCONTAINERS_HOST_OVERRIDE": PORTS_HOST,
    }


def context_name(name: str) -> str:
    return "toolbox" if name == "default" else f"toolbox-{name}"


def use_docker_context(paths: InstancePaths, name: str) -> str:
    """Create (or update) the instance's docker context and select it; its name.

    Through the real docker CLI, so its own config (DOCKER_CONFIG, ~/.docker) is
    written the way it expects; `update` keeps a context made before current (the
    socket path moves with TOOLBOX_HOME)."""
    from toolbox.run import run, which

    docker = which("docker", "your package manager (the docker CLI package), or Docker's static client binary")
    ctx = context_name(name)
    exists = run([docker, "context", "inspect", ctx], check=False, timeout=30).returncode == 0
    run([docker, "context", "update" if exists else "create", ctx,
         "--description", f"toolbox instance {name}", "--docker", f"host=unix://{paths.docker_socket}"], timeout=30)
    run([docker, "context", "use", ctx], timeout=30)
    return ctx


def detect_shell(explicit: str | None) -> str:
    """--shell wins; else $SHELL's basename; else bash (POSIX syntax works in most)."""
    if explicit:
        shell = explicit.lower()
        if shell not in SHELLS:
            raise UsageError(f"unknown shell {explicit!r}; choose one of: {', '.join(SHELLS)}")
        return shell
    name = Path(os.environ.get("SHELL", "")).name.lower()
    if name in ("pwsh", "powershell"):
        return "powershell"
    return name if name in SHELLS else "bash"


def _quote_posix(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def render(shell: str, env: dict[str, str | None], name: str) -> str:
    """The script for `shell`, ending with a comment saying how to use it."""
    flag = "" if name == "default" else f" -n {name}"
    lines: list[str] = []
    for key, value in env.items():
        if shell in ("bash", "zsh"):
            lines.append(f"export {key}={_quote_posix(value)}" if value is not None else f"unset {key}")
        elif shell == "fish":
            lines.append(f"set -gx {key} {_quote_posix(value)};" if value is not None else f"set -e {key};")
        elif shell == "powershell":
            lines.append(f'$Env:{key} = "{value}"' if value is not None
                         else f"Remove-Item Env:\\{key} -ErrorAction SilentlyContinue")
        else:  # cmd: SET X= removes X
            lines.append(f"SET {key}={value or ''}")
    usage = {
        "bash": f'# Run this command to configure your shell:\n# eval "$(toolbox shellinit{flag})"',
        "zsh": f'# Run this command to configure your shell:\n# eval "$(toolbox shellinit{flag})"',
        "fish": f"# Run this command to configure your shell:\n# toolbox shellinit{flag} --shell fish | source",
        "powershell": f"# Run this command to configure your shell:\n# & toolbox shellinit{flag} --shell powershell | Invoke-Expression",
        "cmd": f"REM Run this command to configure your shell:\nREM @FOR /f \"tokens=*\" %i IN ('toolbox shellinit{flag} --shell cmd') DO @%i",
    }[shell]
    return "\n".join(lines) + "\n" + usage + "\n"
