"""Are the workers' books right? Their published records against the simulators' own tops.

The fault tests and `scripts/soak.py` end the same way: pause the simulators, let the
venue clients settle, then ask each worker's snapshot service for the record of every
market it owns and compare it with the true top of the simulator's ladder
(`GET /_sim/tops`). A record is right when it is LIVE and its prices and sizes are the
ladder's, exactly: prices in ticks of $0.0001, sizes in hundredths of a contract.
"""

from __future__ import annotations

import itertools
import json
import urllib.request
from typing import Any

import zmq

from broker import protocol
from broker.protocol import MarketKey, key_text
from markets import codec
from markets.models import TICKS_PER_DOLLAR, MarketPrice, PriceStatus

SIZE_UNITS = 100
"""Hundredths of a contract per contract: the ladders' size unit."""
_request_ids = itertools.count(1)


class AuditError(RuntimeError):
    """A worker's snapshot service or the simulators' control did not answer as expected."""


Tops = dict[MarketKey, tuple[int | None, int | None, int | None, int | None]]


def fetch_tops(control_url: str, timeout: float = 10.0) -> Tops:
    """The simulators' true top of every market: (bid, ask, bid_size, ask_size) in ticks and hundredths."""
    with urllib.request.urlopen(f"{control_url}/tops", timeout=timeout) as response:
        body: dict[str, dict[str, list[Any]]] = json.loads(response.read())
    return {protocol.market_key(venue, market_id): (top[0], top[1], top[2], top[3])
            for venue, markets in body.items() for market_id, top in markets.items()}


def fetch_records(snapshot_endpoint: str, timeout: float = 5.0) -> dict[MarketKey, MarketPrice]:
    """The last published record of every market the worker behind `snapshot_endpoint` owns
    (one SNAPSHOT_REQUEST naming no market: all of them); a market it owns but has not
    published yet is absent."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_BYTES)
        sock.connect(snapshot_endpoint)
        request_id = next(_request_ids)
        sock.send(protocol.encode(protocol.SNAPSHOT_REQUEST, id=request_id, markets=[]))
        if not sock.poll(int(timeout * 1000)):
            raise AuditError(f"no snapshot from {snapshot_endpoint} within {timeout:g} s")
        reply = protocol.decode(sock.recv())
    finally:
        sock.close(linger=0)
        ctx.term()
    if reply.kind != protocol.SNAPSHOT or reply.integer("id") != request_id:
        raise AuditError(f"{snapshot_endpoint} answered {reply.kind!r} {reply.body!r:.200} to a snapshot request")
    records = (codec.decode(payload) for payload in reply.sequence("records") or [])
    return {(record.platform, record.market_id): record for record in records}


def record_top(record: MarketPrice) -> tuple[int | None, int | None, int | None, int | None]:
    """A record's top in the ladders' units (ticks, hundredths), for an exact comparison."""
    def scaled(value: float | None, unit: int) -> int | None:
        return None if value is None else round(value * unit)

    return (scaled(record.yes_bid, TICKS_PER_DOLLAR), scaled(record.yes_ask, TICKS_PER_DOLLAR),
            scaled(record.yes_bid_size, SIZE_UNITS), scaled(record.yes_ask_size, SIZE_UNITS))


def wrong_books(records: dict[MarketKey, MarketPrice], tops: Tops) -> dict[str, str]:
    """`venue/id` -> what is wrong, for every market of `tops` whose record is missing, not
    LIVE, or not the true top; empty when every book is right."""
    wrong = {}
    for key, top in tops.items():
        record = records.get(key)
        if record is None:
            wrong[key_text(key)] = "no record from any worker"
        elif record.status is not PriceStatus.LIVE:
            wrong[key_text(key)] = f"status {record.status.value}"
        elif record_top(record) != top:
            wrong[key_text(key)] = f"worker has {record_top(record)}, simulator has {top}"
    return wrong


def all_records(snapshot_endpoints: list[str], timeout: float = 5.0) -> dict[MarketKey, MarketPrice]:
    """Every worker's records together (a market owned twice keeps the newer epoch's)."""
    merged: dict[MarketKey, MarketPrice] = {}
    for endpoint in snapshot_endpoints:
        for key, record in fetch_records(endpoint, timeout).items():
            if key not in merged or record.epoch > merged[key].epoch:
                merged[key] = record
    return merged

