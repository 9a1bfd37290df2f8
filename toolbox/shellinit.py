"""`toolbox shellinit`: the environment a shell needs to use the instance, in its syntax.

`environment()` says WHAT to set (None means unset); `render()` says it in bash/zsh,
fish, PowerShell or cmd. The host agent work extends `environment()`; the forms stay.
"""

from __future__ import annotations

import os
from pathlib import Path

from toolbox.errors import UsageError
from toolbox.paths import InstancePaths

SHELLS = ("bash", "zsh", "fish", "powershell", "cmd")


def environment(paths: InstancePaths) -> dict[str, str | None]:
    """Variables to set (str) or unset (None) for the docker CLI to reach the instance."""
    return {
        "DOCKER_HOST": f"unix://{paths.docker_socket}",
        # Left over from boot2docker/docker-machine, these would make docker try TLS.
        "DOCKER_TLS_VERIFY": None,
        "DOCKER_CERT_PATH": None,
    }


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
