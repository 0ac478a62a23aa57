"""Guards over the source: TLS verification never turned off, message sizes bounded on every receiving socket.

Cheap static checks that fail the moment someone adds a socket without a size
bound, a WebSocket connect without `max_msg_size`, or an `ssl=False`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = [p for package in ("markets", "broker", "workers", "shard") for p in (ROOT / package).rglob("*.py")]


def functions(path: Path) -> list[tuple[str, str]]:
    """(name, source) of every function in a module (nested ones too)."""
    source = path.read_text()
    return [(node.name, ast.get_source_segment(source, node) or "") for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def _creates_socket(node: ast.AST) -> bool:
    """`<anything>.socket(zmq.X)`."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "socket"
            and len(node.args) == 1 and isinstance(node.args[0], ast.Attribute)
            and isinstance(node.args[0].value, ast.Name) and node.args[0].value.id == "zmq")


def socket_makers(path: Path) -> list[tuple[str, str]]:
    """(name, source) of each function that itself (not a function nested in it) creates a ZeroMQ socket."""
    source = path.read_text()
    found: dict[int, tuple[str, str]] = {}

    def visit(node: ast.AST, owner: ast.AST | None) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            owner = node
        if owner is not None and id(owner) not in found and _creates_socket(node):
            found[id(owner)] = (owner.name, ast.get_source_segment(source, owner) or "")  # type: ignore[attr-defined]
        for child in ast.iter_child_nodes(node):
            visit(child, owner)

    visit(ast.parse(source), None)
    return list(found.values())


def test_tls_verification_is_never_disabled() -> None:
    disabling = re.compile(r"ssl\s*=\s*False|verify_ssl\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in RUNTIME for n, line in enumerate(p.read_text().splitlines(), 1)
                 if disabling.search(line)]
    assert not offenders


def test_every_websocket_connect_bounds_the_message_size() -> None:
    sites = [(p, source) for p in RUNTIME if "markets/sim" not in p.as_posix() for _, source in functions(p)
             if "ws_connect(" in source]
    assert sites, "the venue clients connect somewhere"
    assert all("max_msg_size=" in source for _, source in sites), [str(p) for p, s in sites if "max_msg_size" not in s]


def test_every_zeromq_socket_is_created_with_a_message_size_bound() -> None:
    """PUB sockets too: they receive subscriptions from whoever connects."""
    makers = [(path, name, source) for path in RUNTIME for name, source in socket_makers(path)]
    unbounded = [f"{path.relative_to(ROOT)}:{name}" for path, name, source in makers if "MAXMSGSIZE" not in source]
    assert len(makers) >= 8 and not unbounded, unbounded
