"""CurveZMQ for the runtime's sockets: keys from a directory, server and client setup, the ZAP authenticator.

The bus carries prices and the control socket can reassign markets, so once the
runtime spans hosts, both must be encrypted and admit only known peers. The model
is the simplest one that does that (the layout `arbees keys` writes):

* one *server* key pair for the whole runtime: every socket that binds (broker
  ROUTER, worker PUB and snapshot ROUTER, shard signal PUB) is a Curve server with
  it, so a peer needs to trust exactly one public key (`server.key`);
* *client* key pairs: every socket that connects is a Curve client with its host's
  pair (`client.key` / `client.key_secret`);
* `authorized/`: the public keys of the clients a server admits. Admission is by
  ZAP (`zmq.auth.asyncio.AsyncioAuthenticator`) in the ZAP domain `arbees`, and the
  server sockets enforce it: with no authenticator running, nobody gets in.

Each denial is counted and logged (rate-limited) with the client's *public* key and
address. Secret keys never leave this module's objects: they are not in their
repr, not in any message, and their files must be readable by the owner only.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from broker.endpoints import EndpointError
from markets.ws_stats import LogLimiter

log = logging.getLogger(__name__)

ENV_CURVE_DIR = "ARBEES_CURVE_DIR"
SERVER = "server"
CLIENT = "client"
AUTHORIZED = "authorized"
ZAP_DOMAIN = b"arbees"
_SHARED_BITS = stat.S_IRWXG | stat.S_IRWXO


class SecurityError(EndpointError):
    """Keys that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class CurveKeys:
    """The keys of one host: the runtime's server key (its secret only where this host binds) and a client pair."""

    directory: Path
    server_public: bytes
    client_public: bytes
    client_secret: bytes = field(repr=False)
    server_secret: bytes | None = field(default=None, repr=False)

    @property
    def authorized(self) -> Path:
        return self.directory / AUTHORIZED


def read_secret_file(path: Path) -> bytes:
    """The bytes of a secret key file, refused if group/other may read it (checked on the open descriptor)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise SecurityError(f"secret key file {path} does not exist: create the keys with "
                            f"`arbees keys {path.parent}`") from None
    except OSError as exc:
        raise SecurityError(f"secret key file {path} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SecurityError(f"secret key file {path} is not a regular file")
        if mode & _SHARED_BITS:
            raise SecurityError(f"secret key file {path} has mode {stat.S_IMODE(mode):04o} and is open to group or "
                                f"other users; restrict it with: chmod 600 {path}")
        return handle.read()


def _load_pair(directory: Path, name: str) -> tuple[bytes, bytes]:
    path = directory / f"{name}.key_secret"
    text = read_secret_file(path)
    try:
        public, secret = _parse_certificate(text)
    except ValueError:
        raise SecurityError(f"{path} is not a ZeroMQ certificate with a secret key; create the keys with "
                            f"`arbees keys {directory}`") from None
    return public, secret


def _parse_certificate(text: bytes) -> tuple[bytes, bytes]:
    """The public and secret keys of a `zmq.auth` certificate, parsed here so that no library error can quote it."""
    found: dict[bytes, bytes] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition(b"=")
        if sep and name.strip() in (b"public-key", b"secret-key"):
            found[name.strip()] = value.strip().strip(b'"')
    public, secret = found.get(b"public-key", b""), found.get(b"secret-key", b"")
    if len(public) != 40 or len(secret) != 40:
        raise ValueError("not a certificate with both keys")
    return public, secret


def _load_public(path: Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError):
        raise SecurityError(f"{path} is missing or not a ZeroMQ public certificate; create the keys with "
                            f"`arbees keys {path.parent}`") from None
    return public


def load_keys(directory: Path) -> CurveKeys:
    """This host's keys from an `arbees keys` directory; SecurityError naming the problem otherwise.

    `server.key_secret` is optional (a host that only connects, e.g. for `arbees
    status`, need not hold it); a role that binds without it is refused by `server()`.
    """
    if not directory.is_dir():
        raise SecurityError(f"Curve key directory {directory} does not exist: create it with `arbees keys {directory}`")
    client_public, client_secret = _load_pair(directory, CLIENT)
    server_secret = None
    if (directory / f"{SERVER}.key_secret").exists():
        server_public, server_secret = _load_pair(directory, SERVER)
    else:
        server_public = _load_public(directory / f"{SERVER}.key")
    return CurveKeys(directory, server_public, client_public, client_secret, server_secret)


def server(sock: zmq.Socket, keys: CurveKeys | None) -> None:
    """Make a socket about to bind a Curve server admitting only authorized clients (no-op without keys)."""
    if keys is None:
        return
    if keys.server_secret is None:
        raise SecurityError(f"{keys.directory / (SERVER + '.key_secret')} is missing: a host that binds runtime "
                            "sockets needs the server secret key (copy it there, mode 0600)")
    sock.curve_secretkey = keys.server_secret
    sock.curve_publickey = keys.server_public
    sock.curve_server = True
    sock.zap_domain = ZAP_DOMAIN
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no authenticator answering: nobody is admitted


def client(sock: zmq.Socket, keys: CurveKeys | None) -> None:
    """Make a socket about to connect a Curve client of the runtime's server key (no-op without keys)."""
    if keys is None:
        return
    sock.curve_secretkey = keys.client_secret
    sock.curve_publickey = keys.client_public
    sock.curve_serverkey = keys.server_public


class AuthorizedClients:
    """The ZAP credentials provider: admits the public keys in `authorized/`, counts and logs the rest."""

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise SecurityError(f"{directory} does not exist: it holds the public keys of the clients this "
                                f"host admits (`arbees keys {directory.parent}` creates it)")
        self.keys = set(zmq.auth.load_certificates(directory))
        self.denied = 0
        self._log_limit = LogLimiter()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        self.denied += 1
        held = self._log_limit.allow("denied")
        if held is not None:
            log.warning("Curve: denied a client whose public key %s is not in the authorized keys "
                        "(%d similar not logged)", key.decode(errors="replace"), held)
        return False


class Authenticator:
    """The ZAP handler of one process's ZeroMQ context, for its Curve server sockets."""

    def __init__(self, context: zmq.Context, keys: CurveKeys) -> None:
        self.clients = AuthorizedClients(keys.authorized)
        # A synchronous view: the authenticator receives on its ZAP socket without awaiting.
        self._auth = AsyncioAuthenticator(zmq.Context.shadow(context.underlying))

    def start(self) -> None:
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN.decode(), credentials_provider=self.clients)

    def stop(self) -> None:
        self._auth.stop()


def start_authenticator(context: zmq.Context, keys: CurveKeys | None) -> Authenticator | None:
    """Start admitting authorized clients on `context` (inside its running event loop); None without keys."""
    if keys is None:
        return None
    auth = Authenticator(context, keys)
    auth.start()
    return auth


def stop_authenticator(auth: Authenticator | None) -> None:
    if auth is not None:
        auth.stop()
