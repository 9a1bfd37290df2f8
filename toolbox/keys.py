"""SSH keys: the instance's login key and the guest's host key, made on the host.

Both are ed25519 in OpenSSH format. The guest's host key is made here, not in the guest,
so that the host knows it before the first connection and can pin it: no trust on first
use. The private half travels to the guest on the config drive.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str  # "-----BEGIN OPENSSH PRIVATE KEY-----..."
    public_openssh: str  # "ssh-ed25519 AAAA... comment"


def generate_ed25519(comment: str) -> KeyPair:
    """A fresh ed25519 key pair in OpenSSH formats, unencrypted."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return KeyPair(private, f"{public} {comment}".strip())


def fingerprint_sha256(public_openssh: str) -> str:
    """The key's fingerprint as `ssh-keygen -l` prints it: "SHA256:<base64, no padding>"."""
    fields = public_openssh.split()
    if len(fields) < 2:
        raise ValueError(f"not an OpenSSH public key: {public_openssh[:40]!r}")
    blob = base64.b64decode(fields[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def write_private(path: Path, text: str) -> None:
    """Write a secret file created 0600 from the start (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def write_keypair(pair: KeyPair, private_path: Path, public_path: Path) -> None:
    write_private(private_path, pair.private_openssh)
    public_path.write_text(pair.public_openssh + "\n")
