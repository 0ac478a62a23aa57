"""Run as a script (inside a network namespace): count what a Curve SUB receives from a PUB for a while.

`python curve_probe.py ENDPOINT SERVER_PUBLIC_FILE SECONDS [CLIENT_SECRET_FILE]` prints the
number of messages received; without a client key file the SUB speaks plain text.
"""

from __future__ import annotations

import sys
import time

import zmq
import zmq.auth


def count(endpoint: str, server_public_file: str, seconds: float, client_secret_file: str | None) -> int:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if client_secret_file is not None:
        server_public, _ = zmq.auth.load_certificate(server_public_file)
        sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(client_secret_file)
        sock.curve_serverkey = server_public
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    received = 0
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            if sock.poll(int(left * 1000) + 1):
                sock.recv_multipart()
                received += 1
    finally:
        sock.close(linger=0)
        ctx.term()
    return received


if __name__ == "__main__":
    print(count(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None))
