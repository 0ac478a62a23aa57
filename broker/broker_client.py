"""One request to the broker and its answer, for tools (`arbees status`, tests): bounded in time."""

from __future__ import annotations

import zmq

from broker import protocol, security
from broker.endpoints import EndpointError


class BrokerUnreachable(EndpointError):
    """No answer from the broker within the timeout."""


def ask_broker(endpoint: str, kind: str, *, timeout: float = 3.0,
               curve: security.CurveKeys | None = None) -> protocol.Message:
    """Send one `kind` request and return the broker's reply; BrokerUnreachable after `timeout` seconds."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_BYTES)
        security.client(sock, curve)
        sock.connect(endpoint)
        sock.send(protocol.encode(kind))
        if not sock.poll(int(timeout * 1000)):
            raise BrokerUnreachable(f"no answer from the broker at {endpoint} within {timeout:g} s: is "
                                    "`arbees launch` (or `arbees broker`) running there?")
        return protocol.decode(sock.recv())
    finally:
        sock.close(linger=0)
        ctx.term()
