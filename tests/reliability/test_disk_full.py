"""The guest's data disk filled up: a pull fails with a clear "no space" error, the agent
keeps serving (`docker version`, `docker ps`), and once the filler is deleted the same pull
works. The disk is filled with fallocate (as root, so the reserved blocks go too) and the last few MiB it
leaves with zeros: the host's qcow2 grows by those MiB only.
"""

from __future__ import annotations

import pytest
from registry import RegistryServer, registry  # noqa: F401  (the session's registry fixture)
from tally import Tally
from test_agents import docker, sleeper  # noqa: F401  (sleeper: the docker env and a running container)
from toolbox_cli import Toolbox

pytestmark = pytest.mark.e2e
FILL = "/var/lib/toolbox/reliability-fill"
FILLER = f"""import os
fd = os.open("{FILL}", os.O_CREAT | os.O_WRONLY, 0o600)
size, chunk = 0, 1 << 40
while chunk >= 4096:
    try:
        os.posix_fallocate(fd, size, chunk)
        size += chunk
    except OSError:
        chunk //= 2
os.close(fd)
with open("{FILL}-tail", "wb", buffering=0) as tail:  # the last MiBs fallocate leaves
    try:
        while True:
            tail.write(bytes(65536))
    except OSError:
        pass
st = os.statvfs("/var/lib/toolbox")
print(size >> 20, st.f_bfree * st.f_frsize)
"""


def test_full_data_disk(toolbox_vm: Toolbox, sleeper: tuple[dict[str, str], str], tally: Tally) -> None:  # noqa: F811
    env, _ = sleeper
    tb = toolbox_vm
    docker(env, "rmi", "-f", "learn/tutorial")
    filled = tb.ssh(f"sudo python3 -c '{FILLER}'").stdout.split()
    try:
        # ext4 keeps up to 4096 clusters (16 MiB) that no one may allocate (resv_clusters)
        assert int(filled[1]) <= 17 << 20, f"still free after filling: {filled}"
        pull = docker(env, "pull", "learn/tutorial", timeout=300)
        serving = docker(env, "version").returncode == 0 and docker(env, "ps").returncode == 0
    finally:
        tb.ssh(f"sudo rm -f {FILL} {FILL}-tail")
    clear = pull.returncode != 0 and "no space left on device" in (pull.stderr + pull.stdout).lower()
    again = docker(env, "pull", "learn/tutorial", timeout=300)
    ok = clear and serving and again.returncode == 0
    tally.add("data disk full (pull refused, agent serving, freed)", injected=1, survived=int(ok))
    assert clear, f"pull on a full disk: exit {pull.returncode}: {pull.stderr[-500:]}"
    assert serving, "the agent stopped serving on a full disk"
    assert again.returncode == 0, again.stderr
