"""An image for the reliability tests that need more of busybox than the default images
carry (sync for the crash writer; mount and insmod for the security checks), pushed to the
session's loopback registry and named as the guest reaches it."""

from __future__ import annotations

import pytest
from registry import Entry, RegistryServer, busybox_layer, make_image, push, registry, tar_layer  # noqa: F401
from test_agents import GUEST

TOOLS = ("sync", "mount", "umount", "insmod", "dd")


@pytest.fixture(scope="session")
def tools_image(registry: RegistryServer) -> str:  # noqa: F811
    extra = tar_layer([Entry(f"bin/{a}", kind="symlink", target="busybox") for a in TOOLS])
    push(registry, "/reliability/tools:latest", make_image([busybox_layer(), extra]))
    return f"{GUEST}:{registry.port}/reliability/tools:latest"
