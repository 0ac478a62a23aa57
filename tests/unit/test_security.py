"""CurveZMQ keys and sockets (`broker.security`, `arbees keys`), and the bind rule beyond loopback."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
import zmq.auth
from click.testing import CliRunner

from broker import security
from broker.cli import main
from broker.endpoints import EndpointError, bind
from broker.keys_command import write_keys
from broker.security import SecurityError, load_keys


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_writes_secret_files_readable_by_the_owner_only_and_authorizes_the_clients(tmp_path: Path) -> None:
    secrets = write_keys(tmp_path / "k", ("ops",))
    assert {p.name for p in secrets} == {"server.key_secret", "client.key_secret", "ops.key_secret"}
    assert all(mode(p) == 0o600 for p in secrets)
    assert mode(tmp_path / "k") == 0o700
    assert sorted(p.name for p in (tmp_path / "k" / "authorized").iterdir()) == ["client.key", "ops.key"]
    assert not list(tmp_path.glob("k/tmp*")), "the scratch directory is removed"


def test_keys_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["keys", str(tmp_path / "k")]).exit_code == 0
    before = (tmp_path / "k" / "server.key_secret").read_bytes()
    refused = runner.invoke(main, ["keys", str(tmp_path / "k")])
    assert refused.exit_code == 1 and "--force" in refused.output and "server.key" in refused.output
    assert (tmp_path / "k" / "server.key_secret").read_bytes() == before
    assert runner.invoke(main, ["keys", str(tmp_path / "k"), "--force"]).exit_code == 0
    assert (tmp_path / "k" / "server.key_secret").read_bytes() != before


def test_a_key_name_that_is_not_an_identifier_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain identifier"):
        write_keys(tmp_path / "k", ("../escape",))


def test_a_group_or_world_readable_secret_is_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    write_keys(tmp_path / "k")
    secret = tmp_path / "k" / "client.key_secret"
    for loose in (0o640, 0o604, 0o660):
        secret.chmod(loose)
        with pytest.raises(SecurityError, match=rf"{secret}.*chmod 600 {secret}"):
            load_keys(tmp_path / "k")
    secret.chmod(0o600)
    assert load_keys(tmp_path / "k").client_public == zmq.auth.load_certificate(secret)[0]


def test_missing_or_malformed_keys_say_what_to_do_without_quoting_the_file(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="arbees keys"):
        load_keys(tmp_path / "nowhere")
    write_keys(tmp_path / "k")
    secret = tmp_path / "k" / "client.key_secret"
    secret.write_text('secret-key = "this-is-not-a-z85-key-and-must-not-be-quoted"\n')
    with pytest.raises(SecurityError) as raised:
        load_keys(tmp_path / "k")
    assert "not-a-z85" not in str(raised.value) and "arbees keys" in str(raised.value)


def test_a_host_without_the_server_secret_connects_but_refuses_to_bind(tmp_path: Path) -> None:
    write_keys(tmp_path / "k")
    (tmp_path / "k" / "server.key_secret").unlink()
    keys = load_keys(tmp_path / "k")
    assert keys.server_secret is None
    ctx = zmq.Context()
    try:
        with pytest.raises(SecurityError, match="server.key_secret"):
            security.server(ctx.socket(zmq.PUB), keys)
        security.client(ctx.socket(zmq.SUB), keys)
    finally:
        ctx.destroy(linger=0)


def test_secret_keys_are_not_in_the_repr(tmp_path: Path) -> None:
    write_keys(tmp_path / "k")
    keys = load_keys(tmp_path / "k")
    assert keys.client_secret.decode() not in repr(keys)
    assert keys.server_secret is not None and keys.server_secret.decode() not in repr(keys)


def test_binding_beyond_loopback_needs_curve_or_the_explicit_override() -> None:
    ctx = zmq.Context()
    try:
        with pytest.raises(EndpointError, match="--curve-dir.*--insecure-no-curve"):
            bind(ctx.socket(zmq.PUB), "tcp://0.0.0.0:0", what="test")
        assert bind(ctx.socket(zmq.PUB), "tcp://127.0.0.1:*", what="test").startswith("tcp://127.0.0.1:")
    finally:
        ctx.destroy(linger=0)


async def _count(sock: zmq.asyncio.Socket, until: float) -> int:
    received = 0
    loop = asyncio.get_running_loop()
    while (left := until - loop.time()) > 0:
        if await sock.poll(int(left * 1000) + 1):
            await sock.recv_multipart()
            received += 1
    return received


async def test_only_an_authorized_client_receives_and_each_denial_is_counted(tmp_path: Path) -> None:
    write_keys(tmp_path / "k")
    write_keys(tmp_path / "other")
    keys, other = load_keys(tmp_path / "k"), load_keys(tmp_path / "other")
    stranger = security.CurveKeys(tmp_path / "other", keys.server_public, other.client_public, other.client_secret)
    ctx = zmq.asyncio.Context()
    auth = security.start_authenticator(ctx, keys)
    try:
        pub = ctx.socket(zmq.PUB)
        security.server(pub, keys)
        endpoint = bind(pub, "tcp://127.0.0.1:*", what="test")
        subs = {}
        for name, who in (("authorized", keys), ("stranger", stranger), ("plain", None)):
            sub = subs[name] = ctx.socket(zmq.SUB)
            security.client(sub, who)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(endpoint)
        loop = asyncio.get_running_loop()
        sending_until = loop.time() + 1.5
        counts = asyncio.gather(*(_count(s, sending_until + 0.3) for s in subs.values()))
        while loop.time() < sending_until:
            pub.send(b"price")
            await asyncio.sleep(0.01)
        received = dict(zip(subs, await counts, strict=True))
        assert received["authorized"] > 0 and received["stranger"] == 0 and received["plain"] == 0, received
        assert auth is not None and auth.clients.denied >= 1
    finally:
        security.stop_authenticator(auth)
        ctx.destroy(linger=0)
