"""Demo API keys for the Kalshi simulator.

The simulator verifies real RSA-PSS signatures, so a client under test needs a
real key pair; this makes one the way Kalshi hands them out (an RSA-2048
private key file plus a key id), written owner-only because a client is
expected to refuse a world-readable key.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def generate_demo_keypair(directory: Path) -> tuple[str, Path, bytes]:
    """Write a new RSA-2048 PKCS#8 PEM private key (mode 0600) into `directory`.

    Returns (key id, private key path, public key PEM).  The file is created
    exclusively with mode 0600 from the start, so it is never briefly readable.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_id = str(uuid.uuid4())
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    path = directory / f"kalshi-demo-{key_id}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_pem = private_key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return key_id, path, public_pem
