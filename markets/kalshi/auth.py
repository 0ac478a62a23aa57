"""Kalshi request signing (RSA-PSS), shared by the REST and WebSocket clients.

Kalshi authenticates every REST call and every WebSocket upgrade with three
headers: the API key id, a millisecond timestamp, and an RSA-PSS signature of
``timestamp_ms + METHOD + path`` (protocols/kalshi.md §2).  The details that
break clients in practice are all pinned here, in one place, so the REST and
WebSocket clients cannot drift apart:

* the timestamp is in **milliseconds** (seconds gives 401);
* the signed path is the full path from the host (``/trade-api/v2/...``) with
  the query string removed -- a full URL is accepted too and reduced to its path;
* PSS uses SHA-256, MGF1(SHA-256) and salt length = digest length (not MAX);
* the signature is standard base64 with padding.

The private key is a secret: it is loaded once, never logged, and the
credentials' ``repr`` shows neither it nor the key id.  A key file that group or
other users can read is refused, as ssh does, because a leaked trading key
cannot be revoked retroactively for the orders it already placed.
"""

from __future__ import annotations

import base64
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ENV_KEY_ID = "KALSHI_API_KEY_ID"
ENV_PRIVATE_KEY_PATH = "KALSHI_PRIVATE_KEY_PATH"

HEADER_KEY = "KALSHI-ACCESS-KEY"
HEADER_TIMESTAMP = "KALSHI-ACCESS-TIMESTAMP"
HEADER_SIGNATURE = "KALSHI-ACCESS-SIGNATURE"

# Group/other read bits: if either is set, someone besides the owner can read the key.
_SHARED_READ_BITS = stat.S_IRGRP | stat.S_IROTH

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


class KalshiAuthError(ValueError):
    """Credentials cannot be used: missing, unreadable, exposed or not an RSA key."""


def _load_rsa_key(pem: bytes, *, source: str, password: bytes | None) -> rsa.RSAPrivateKey:
    """Parse PEM (PKCS#1 or PKCS#8) and insist on RSA, naming ``source`` in errors."""
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except TypeError as exc:  # encrypted key without password, or password for a plain key
        raise KalshiAuthError(f"cannot load Kalshi private key {source}: {exc}") from None
    except (ValueError, UnsupportedAlgorithm):
        # The library's message can quote parts of the input; keep key bytes out of errors.
        raise KalshiAuthError(
            f"cannot load Kalshi private key {source}: not a PEM private key "
            "(expected '-----BEGIN PRIVATE KEY-----' or '-----BEGIN RSA PRIVATE KEY-----')"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KalshiAuthError(
            f"Kalshi private key {source} is not an RSA key (found {type(key).__name__.lstrip('_')}); "
            "Kalshi signs with RSA-PSS"
        )
    return key


# O_NONBLOCK: a FIFO (or a device) at the key path must not hang start-up waiting for a writer;
# it is opened at once and then refused as "not a regular file". No effect on regular files.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


def _read_private_key_file(path: Path) -> bytes:
    """Read the key file, refusing it when other users can read it.

    The mode is checked on the opened descriptor (fstat) so the file that is
    checked is the file that is read; through a symlink that is the target.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise KalshiAuthError(f"Kalshi private key file not found: {path}") from None
    except PermissionError:
        raise KalshiAuthError(f"Kalshi private key file {path} is not readable (permission denied)") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory, not a key file" if stat.S_ISDIR(mode) else "not a regular file"
            raise KalshiAuthError(f"Kalshi private key path {path} is {kind}")
        if os.name == "posix" and mode & _SHARED_READ_BITS:
            raise KalshiAuthError(
                f"Kalshi private key file {path} has mode {stat.S_IMODE(mode):04o} and is "
                f"readable by group or other users; restrict it with: chmod 600 {path}"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def signing_path(path_or_url: str) -> str:
    """The path Kalshi expects in the signed message: no scheme, host or query string."""
    return urlsplit(path_or_url).path


class KalshiCredentials:
    """An API key id plus its RSA private key, able to sign requests.

    Immutable after construction; safe to share between a REST client and a
    WebSocket client (signing is stateless).
    """

    __slots__ = ("_key_id", "_private_key")

    def __init__(self, key_id: str, private_key: rsa.RSAPrivateKey) -> None:
        if not isinstance(key_id, str) or not key_id.strip():
            raise KalshiAuthError("Kalshi API key id is empty")
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise KalshiAuthError(
                f"Kalshi private key must be an RSA private key, got {type(private_key).__name__}"
            )
        self._key_id = key_id.strip()
        self._private_key = private_key

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return self._private_key

    @classmethod
    def from_pem(cls, key_id: str, pem: bytes, *, password: bytes | None = None) -> KalshiCredentials:
        """Build credentials from PEM bytes already in memory (e.g. a secrets manager)."""
        return cls(key_id, _load_rsa_key(pem, source="(in-memory PEM)", password=password))

    @classmethod
    def from_files(
        cls, key_id: str, private_key_path: str | os.PathLike[str], *, password: bytes | None = None
    ) -> KalshiCredentials:
        """Load the private key from a PEM file that only its owner can read."""
        path = Path(private_key_path).expanduser()
        pem = _read_private_key_file(path)
        return cls(key_id, _load_rsa_key(pem, source=str(path), password=password))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KalshiCredentials:
        """Load from ``KALSHI_API_KEY_ID`` and ``KALSHI_PRIVATE_KEY_PATH``."""
        return cls.resolve(environ=environ)

    @classmethod
    def resolve(
        cls,
        key_id: str | None = None,
        private_key_path: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> KalshiCredentials:
        """Explicit arguments win; each missing one falls back to its environment variable.

        This is the single rule the CLI and library callers share, so "where did
        my credentials come from" has one answer.
        """
        env = os.environ if environ is None else environ
        resolved_id = key_id or env.get(ENV_KEY_ID)
        resolved_path = private_key_path or env.get(ENV_PRIVATE_KEY_PATH)
        if resolved_id and resolved_path:
            return cls.from_files(resolved_id, resolved_path)
        missing = [
            name
            for name, value in ((ENV_KEY_ID, resolved_id), (ENV_PRIVATE_KEY_PATH, resolved_path))
            if not value
        ]
        raise KalshiAuthError(
            "Kalshi credentials not configured: set " + " and ".join(missing)
            + " (or pass the key id and private key path explicitly)"
        )

    def signature(self, timestamp_ms: int, method: str, path: str) -> str:
        """Base64 RSA-PSS signature of ``timestamp_ms + METHOD + path`` (path sans query)."""
        message = f"{timestamp_ms}{method.upper()}{signing_path(path)}".encode()
        raw = self._private_key.sign(message, _PSS, hashes.SHA256())
        return base64.b64encode(raw).decode("ascii")

    def sign(self, method: str, path: str, *, timestamp_ms: int | None = None) -> dict[str, str]:
        """The three ``KALSHI-ACCESS-*`` headers for one request, stamped now.

        Call it per request / per connection attempt: a signature is bound to
        its timestamp, so reusing headers across reconnects gets 401s.
        """
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        return {
            HEADER_KEY: self._key_id,
            HEADER_TIMESTAMP: str(ts),
            HEADER_SIGNATURE: self.signature(ts, method, path),
        }

    def __repr__(self) -> str:
        return f"KalshiCredentials(key_id=<hidden>, private_key=<hidden RSA-{self._private_key.key_size}>)"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Pickling would write the private key into whatever stores the pickle.
        raise TypeError("KalshiCredentials cannot be pickled; load them from the key file instead")
