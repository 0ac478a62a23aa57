"""ZeroMQ endpoints: where the runtime's sockets live, binding them safely, and finding a running launch.

Sockets bind to loopback (or ipc files in a private runtime directory) unless told
otherwise: the bus carries prices and the control socket can reassign markets, so
reaching beyond this machine is an explicit choice. A launch records its broker
endpoint in `current.json` under the per-user runtime base, which is how
`arbees status` / `arbees tail` in another terminal find it without options.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.asyncio

ENV_BROKER = "ARBEES_BROKER"
ENV_RUNTIME_DIR = "ARBEES_RUNTIME_DIR"
CURRENT_FILE = "current.json"


class EndpointError(RuntimeError):
    """An endpoint that cannot be used; the message says what to do."""


def runtime_base() -> Path:
    """The per-user directory holding launches' runtime directories (mode 0700)."""
    explicit = os.environ.get(ENV_RUNTIME_DIR)
    if explicit:
        base = Path(explicit)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "arbees"
    else:
        base = Path(tempfile.gettempdir()) / f"arbees-{os.getuid()}"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if base.stat().st_uid != os.getuid():
        raise EndpointError(f"runtime directory {base} belongs to another user; set {ENV_RUNTIME_DIR}")
    return base


def new_runtime_dir() -> Path:
    """A private directory for one launch's ipc files; short, because ipc paths are limited (~107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="run-", dir=runtime_base()))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local(endpoint: str) -> bool:
    """True for ipc/inproc endpoints and tcp on a loopback address."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    return scheme == "tcp" and is_loopback(urlsplit(f"tcp://{rest}").hostname or "")


def bind(sock: zmq.Socket, endpoint: str, *, what: str, allow_remote: bool = False) -> str:
    """Bind and return the actual endpoint (tcp port 0/`*` resolved); clear errors otherwise.

    Beyond loopback only as a Curve server (`broker.security.server` first), or with
    `allow_remote`: the operator's explicit acceptance of plain text (--insecure-no-curve).
    """
    if not is_local(endpoint) and not allow_remote and not sock.getsockopt(zmq.CURVE_SERVER):
        raise EndpointError(f"{what}: {endpoint} is beyond loopback and would be plain text: give CurveZMQ keys "
                            "with --curve-dir (create them with `arbees keys DIR`), or accept the risk with "
                            "--insecure-no-curve")
    if endpoint.startswith("ipc://"):
        path = Path(endpoint[len("ipc://"):])
        if path.exists():
            raise EndpointError(f"{what}: {endpoint} is in use (the file exists); another arbees "
                                "process may be running there: stop it, or choose another endpoint")
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EADDRINUSE:
            raise EndpointError(f"{what}: {endpoint} is in use; stop the process bound there or "
                                "choose another endpoint") from None
        raise EndpointError(f"{what}: cannot bind {endpoint}: {exc}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def sender(sock: zmq.asyncio.Socket) -> zmq.Socket:
    """A synchronous view of an asyncio socket for non-blocking sends.

    `zmq.asyncio` turns a NOBLOCK send into a Future whose `Again` nobody awaits;
    through the shadow a full queue raises `zmq.Again` right here, where the caller
    counts the drop.
    """
    return zmq.Socket.shadow(sock.underlying)


def remove_ipc_file(endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        with contextlib.suppress(FileNotFoundError):
            Path(endpoint[len("ipc://"):]).unlink()


def write_current(broker: str, pid: int, rundir: Path | None) -> Path:
    path = runtime_base() / CURRENT_FILE
    tmp = path.with_suffix(f".{pid}.tmp")
    tmp.write_text(json.dumps({"broker": broker, "pid": pid, "rundir": str(rundir) if rundir else None}))
    tmp.replace(path)
    return path


def clear_current(pid: int) -> None:
    """Remove current.json if it is this launch's (a newer launch may have replaced it)."""
    path = runtime_base() / CURRENT_FILE
    with contextlib.suppress(FileNotFoundError, ValueError):
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()


def find_broker(explicit: str | None) -> str:
    """--broker, else $ARBEES_BROKER, else the running launch's; EndpointError if there is none."""
    if explicit:
        return explicit
    if os.environ.get(ENV_BROKER):
        return os.environ[ENV_BROKER]
    path = runtime_base() / CURRENT_FILE
    try:
        current = json.loads(path.read_text())
        pid, broker = int(current["pid"]), str(current["broker"])
        os.kill(pid, 0)
        return broker
    except (FileNotFoundError, ValueError, KeyError, TypeError, ProcessLookupError, PermissionError):
        raise EndpointError("no running `arbees launch` found: start one, or pass --broker ENDPOINT "
                            f"(or set {ENV_BROKER})") from None
