"""KalshiCredentials: key loading rules and the exact signature Kalshi verifies."""

from __future__ import annotations

import base64
import logging
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from markets.kalshi.auth import (
    ENV_KEY_ID,
    ENV_PRIVATE_KEY_PATH,
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    KalshiAuthError,
    KalshiCredentials,
)

KEY_ID = "a952bcbe-ec3b-4b5b-b8f9-11dae589608c"
PSS_DIGEST = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_key(path: Path, pem: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(pem)
    os.chmod(path, mode)
    return path


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
           fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def verify(key: rsa.RSAPrivateKey, headers: dict[str, str], message: str) -> None:
    key.public_key().verify(base64.b64decode(headers[HEADER_SIGNATURE], validate=True),
                            message.encode(), PSS_DIGEST, hashes.SHA256())


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8,
                                 serialization.PrivateFormat.TraditionalOpenSSL])
def test_signature_verifies_with_public_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
                                            fmt: serialization.PrivateFormat) -> None:
    creds = KalshiCredentials.from_files(KEY_ID, write_key(tmp_path / "k.pem", pem_of(rsa_key, fmt)))
    headers = creds.sign("get", "/trade-api/v2/portfolio/balance")
    assert headers[HEADER_KEY] == KEY_ID
    verify(rsa_key, headers, f"{headers[HEADER_TIMESTAMP]}GET/trade-api/v2/portfolio/balance")
    with pytest.raises(InvalidSignature):  # the verification above really checks the message
        verify(rsa_key, headers, f"{headers[HEADER_TIMESTAMP]}POST/trade-api/v2/portfolio/balance")


def test_signed_path_excludes_query_string(rsa_key: rsa.RSAPrivateKey) -> None:
    creds = KalshiCredentials(KEY_ID, rsa_key)
    for target in ("/trade-api/v2/portfolio/orders?limit=5&cursor=abc",
                   "https://external-api.kalshi.com/trade-api/v2/portfolio/orders?limit=5"):
        headers = creds.sign("GET", target, timestamp_ms=1703123456789)
        assert headers[HEADER_TIMESTAMP] == "1703123456789"
        verify(rsa_key, headers, "1703123456789GET/trade-api/v2/portfolio/orders")


def test_timestamp_is_current_milliseconds(rsa_key: rsa.RSAPrivateKey) -> None:
    before = time.time_ns() // 1_000_000
    headers = KalshiCredentials(KEY_ID, rsa_key).sign("GET", "/trade-api/ws/v2")
    after = time.time_ns() // 1_000_000
    assert before <= int(headers[HEADER_TIMESTAMP]) <= after
    verify(rsa_key, headers, f"{headers[HEADER_TIMESTAMP]}GET/trade-api/ws/v2")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_readable_by_others_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, mode: int) -> None:
    path = write_key(tmp_path / "shared.pem", pem_of(rsa_key), mode)
    with pytest.raises(KalshiAuthError) as info:
        KalshiCredentials.from_files(KEY_ID, path)
    message = str(info.value)
    assert str(path) in message and f"{mode:04o}" in message and "chmod 600" in message


def test_symlink_is_judged_by_the_file_it_points_to(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """A private link (links have no mode of their own) to a shared key is still a shared key."""
    shared = write_key(tmp_path / "shared.pem", pem_of(rsa_key), 0o644)
    (tmp_path / "via-link.pem").symlink_to(shared)
    with pytest.raises(KalshiAuthError, match="0644"):
        KalshiCredentials.from_files(KEY_ID, tmp_path / "via-link.pem")
    private = write_key(tmp_path / "private.pem", pem_of(rsa_key))
    (tmp_path / "link-ok.pem").symlink_to(private)
    assert KalshiCredentials.from_files(KEY_ID, tmp_path / "link-ok.pem").key_id == KEY_ID


def test_fifo_at_the_key_path_is_refused_without_hanging(tmp_path: Path) -> None:
    """open() of a FIFO blocks until a writer appears; the loader must refuse it at once.

    Run in a child process so that the old, blocking behaviour fails the test by
    timeout instead of hanging the test run.
    """
    fifo = tmp_path / "kalshi.key"
    os.mkfifo(fifo, 0o600)
    code = ("import sys\n"
            "from markets.kalshi.auth import KalshiAuthError, KalshiCredentials\n"
            "try:\n"
            f"    KalshiCredentials.from_files('id', {str(fifo)!r})\n"
            "except KalshiAuthError as exc:\n"
            "    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20,
                            cwd=Path(__file__).resolve().parents[2])
    assert "not a regular file" in result.stdout and str(fifo) in result.stdout, result.stderr


def test_missing_key_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "kalshi.key"
    with pytest.raises(KalshiAuthError, match="not found") as info:
        KalshiCredentials.from_files(KEY_ID, path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(KalshiAuthError, match=r"not a regular file|directory"):
        KalshiCredentials.from_files(KEY_ID, tmp_path)


def test_non_rsa_key_is_refused(tmp_path: Path) -> None:
    path = write_key(tmp_path / "ec.pem", pem_of(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(KalshiAuthError, match="not an RSA key") as info:
        KalshiCredentials.from_files(KEY_ID, path)
    assert str(path) in str(info.value)


def test_garbage_key_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write_key(tmp_path / "junk.pem", b"-----BEGIN PRIVATE KEY-----\nSECRETSTUFF\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KalshiAuthError, match="not a PEM private key") as info:
        KalshiCredentials.from_files(KEY_ID, path)
    assert "SECRETSTUFF" not in str(info.value)


def test_encrypted_key_without_password_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(b"pw"))
    path = write_key(tmp_path / "enc.pem", pem)
    with pytest.raises(KalshiAuthError, match="encrypted"):
        KalshiCredentials.from_files(KEY_ID, path)
    assert KalshiCredentials.from_files(KEY_ID, path, password=b"pw").private_key.key_size == 2048


def test_from_env_and_explicit_arguments_win(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = write_key(tmp_path / "k.pem", pem_of(rsa_key))
    env = {ENV_KEY_ID: KEY_ID, ENV_PRIVATE_KEY_PATH: str(path)}
    assert KalshiCredentials.from_env(env).key_id == KEY_ID
    assert KalshiCredentials.resolve("other-id", environ=env).key_id == "other-id"
    with pytest.raises(KalshiAuthError, match=ENV_PRIVATE_KEY_PATH) as info:
        KalshiCredentials.from_env({ENV_KEY_ID: KEY_ID})
    assert ENV_KEY_ID not in str(info.value)
    with pytest.raises(KalshiAuthError, match=f"{ENV_KEY_ID} and {ENV_PRIVATE_KEY_PATH}"):
        KalshiCredentials.from_env({})


def test_secrets_absent_from_repr_and_logs(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
                                           caplog: pytest.LogCaptureFixture) -> None:
    creds = KalshiCredentials.from_files(KEY_ID, write_key(tmp_path / "k.pem", pem_of(rsa_key)))
    pem_body = pem_of(rsa_key).decode().splitlines()[1]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("loaded %s / %r", creds, creds)
    for text in (repr(creds), str(creds), f"{creds}", caplog.text):
        assert KEY_ID not in text and pem_body not in text
    assert "hidden" in repr(creds)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(creds)


def test_constructor_rejects_bad_values(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(KalshiAuthError, match="empty"):
        KalshiCredentials("  ", rsa_key)
    with pytest.raises(KalshiAuthError, match="RSA"):
        KalshiCredentials(KEY_ID, ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]
