"""Seeded bad input for the runtime's sockets: control frames, snapshot requests and replies, bus records.

Every generator returns frames whose fate is known in advance, so a test can
check that the receiver counted exactly what it was sent and changed nothing.
Junk values cover what MessagePack can carry: wrong types, huge and negative
integers, long and empty strings, binary, nesting, maps with non-string keys
(which the decoders' `strict_map_key` refuses).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack

from broker import protocol
from markets import codec
from markets.models import MarketPrice, Platform, PriceStatus


class Junk:
    """Random MessagePack-able values and frames from one seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        choice = rng.randrange(12 if depth < 2 else 9)
        if choice == 0:
            return None
        if choice == 1:
            return rng.choice([True, False])
        if choice == 2:
            return rng.choice([0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, rng.randrange(-1000, 1000)])
        if choice == 3:
            return rng.choice([0.0, -0.5, 1.5, float("inf"), float("nan"), rng.random()])
        if choice == 4:
            return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 40)))
        if choice == 5:
            return rng.choice(["", "|", "kalshi", "polymarket", "x" * 3000, "kalshi/KX|"])
        if choice in (6, 7, 8):
            return rng.randbytes(rng.randrange(0, 64))
        if choice in (9, 10):
            return [self.value(depth + 1) for _ in range(rng.randrange(0, 5))]
        return {self.text(): self.value(depth + 1) for _ in range(rng.randrange(0, 4))}

    def text(self) -> str:
        return "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(self.rng.randrange(1, 12)))

    def not_of(self, accepts: Callable[[Any], bool]) -> Any:
        """A junk value the given check refuses."""
        while True:
            value = self.value()
            if not accepts(value):
                return value

    def garbage(self) -> bytes:
        """Bytes that are not a map with a valid version: malformed, truncated, or another type."""
        rng = self.rng
        kind = rng.randrange(3)
        if kind == 0:
            return rng.randbytes(rng.randrange(0, 300))
        if kind == 1:
            whole = msgpack.packb({"t": "heartbeat", "v": protocol.PROTOCOL_VERSION, "worker_id": "w0"})
            return whole[:rng.randrange(0, len(whole))]  # truncated
        return msgpack.packb(self.not_of(lambda v: isinstance(v, dict)), use_bin_type=True)

    def bad_version(self, kind: str) -> bytes:
        version = self.rng.choice([0, 2, -1, "1", 1.0, None, True, [1], b"1"])
        body = {"t": kind}
        if version is not None:
            body["v"] = version
        return msgpack.packb(body, use_bin_type=True)

    def unknown_type(self) -> bytes:
        kind = self.not_of(lambda v: isinstance(v, str) and v in protocol.MESSAGE_TYPES)
        return msgpack.packb({"t": kind, "v": protocol.PROTOCOL_VERSION}, use_bin_type=True)

    def message(self, kind: str, **fields: Any) -> bytes:
        return msgpack.packb({"t": kind, "v": protocol.PROTOCOL_VERSION, **fields}, use_bin_type=True)

    def non_string_keyed_map(self) -> bytes:
        return msgpack.packb({"t": "heartbeat", "v": protocol.PROTOCOL_VERSION, "counters": {1: 2}},
                             use_bin_type=True)


def is_text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 1024


def is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def bad_owned(junk: Junk) -> Any:
    """An `owned` / `markets` list no decoder accepts."""
    return junk.rng.choice([
        junk.not_of(lambda v: isinstance(v, list) or v is None),
        [["kalshi"]], [["nasdaq", "X", 5]], [["kalshi", "A|B", 5]], [["kalshi", "X", 0]], [["kalshi", "X", -3]],
        [["kalshi", ["X"], 5]], [["polymarket", "X", 2**63]], [["kalshi", "", 1]], [["kalshi", "X", "5"]],
    ])


def record(market: tuple[Platform, str], seq: int, epoch: int, *, bid: float = 0.40) -> MarketPrice:
    """A valid LIVE record as a worker would publish it."""
    return MarketPrice(market[1], bid, bid + 0.02, 10.0, 12.0, market[0], PriceStatus.LIVE, None, None, 1, 2, seq,
                       epoch)


def bad_payload(junk: Junk) -> bytes:
    """A bus payload `codec.decode` refuses: garbage, wrong schema version, wrong field count or types."""
    rng = junk.rng
    good = list(msgpack.unpackb(codec.encode(record((Platform.KALSHI, "KX-FUZZ"), 1, 1)), use_list=True))
    kind = rng.randrange(4)
    if kind == 0:
        return junk.garbage()
    if kind == 1:
        good[0] = junk.not_of(lambda v: v == codec.SCHEMA_VERSION)
    elif kind == 2:
        good = good[:rng.randrange(0, len(good))] if rng.random() < 0.5 else good + [junk.value()]
    else:
        index = rng.choice(list(_WRONG))
        good[index] = rng.choice(_WRONG[index])
    return msgpack.packb(good, use_bin_type=True)


_WRONG: dict[int, list[Any]] = {
    1: ["", -1, 2.5, [1], {"a": 1}, b"\x00"],  # market_id
    **dict.fromkeys((2, 3), ["x", -0.1, 1.5, float("nan"), [1], b"\x00"]),  # yes_bid, yes_ask
    **dict.fromkeys((4, 5), ["x", -1, -0.5, [1], b"\x00"]),  # sizes
    6: ["nasdaq", "", 3, [1]],  # platform
    7: ["bogus", 0, None, [1]],  # status
    **dict.fromkeys((10, 11, 12, 13), ["x", -1, 2.5, True, [1], None]),  # timestamps, seq, epoch
}
"""Per field of the encoded record (index after the schema version), values the codec must refuse."""
