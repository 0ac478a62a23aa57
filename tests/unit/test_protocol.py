"""The control protocol's wire: broker/protocol.py.

Every process decodes frames from its peers with `decode` and the typed getters,
and counts and drops what raises `ProtocolError`. So the tests check both halves:
each message type survives a round trip, each kind of bad input is refused with
an error naming the problem, and no frame at all - random bytes, a valid frame
mutated, or well-formed msgpack with the wrong shapes - makes the decoder or a
getter raise anything else (which would take the receiving loop down).
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest

from broker import protocol
from broker.protocol import (
    MAX_CONTROL_BYTES,
    PROTOCOL_VERSION,
    Message,
    ProtocolError,
    decode,
    encode,
    owned_wire,
    placed_wire,
)
from markets.models import Platform
from shard.subscriber import Directory

K, P = Platform.KALSHI, Platform.POLYMARKET
OWNED = {(K, "KXNFLGAME-25NOV23KCBUF-KC"): 7, (P, "0x" + "ab" * 32): 1 << 40}
PLACED = {(K, "KX-A"): ("w0", 3), (P, "123456"): ("w1", 4)}
GAME = {"id": "nfl-kc-buf", "name": "KC at BUF", "markets": [["kalshi", "KX-A", "KC", "KC wins"]]}

EXAMPLES: dict[str, dict[str, Any]] = {
    protocol.REGISTER: {"worker_id": "w0", "pub": "ipc:///tmp/a/pub", "snapshot": "ipc:///tmp/a/snap",
                        "capacity": 10_000, "venues": ["kalshi", "polymarket"], "owned": owned_wire(OWNED),
                        "pid": 4242, "counters": {"published": 3}},
    protocol.HEARTBEAT: {"worker_id": "w0", "counters": {"published": 10, "markets": {"kalshi/KX-A": [3, 9]}}},
    protocol.ASSIGN: {"version": 4, "markets": owned_wire(OWNED)},
    protocol.REREGISTER: {"reason": "unknown worker"},
    protocol.ACK: {"assign_version": 4},
    protocol.HELLO: {"shard_id": "s0", "signals": "ipc:///tmp/a/s0", "games": ["nfl-kc-buf"],
                     "directory_version": -1, "counters": {}},
    protocol.DIRECTORY: {"version": 9, "workers": {"w0": {"pub": "tcp://127.0.0.1:1", "snapshot": "tcp://127.0.0.1:2"}},
                         "markets": placed_wire(PLACED), "games": [GAME], "shards": {"s0": {"signals": "x"}}},
    protocol.STATUS_REQUEST: {},
    protocol.STATUS: {"status": {"workers": {}, "assignment": {}, "unassigned": []}},
    protocol.DIRECTORY_REQUEST: {},
    protocol.SNAPSHOT_REQUEST: {"id": 12, "markets": [["kalshi", "KX-A"]]},
    protocol.SNAPSHOT: {"id": 12, "worker_id": "w0", "records": [b"\x92\x02\xa1M"], "pending": [["kalshi", "KX-B", 3]],
                        "not_owned": [["polymarket", "123"]]},
    protocol.ERROR: {"error": "bad request"},
}


def frame(body: object) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def message(kind: str = protocol.REGISTER, **fields: Any) -> Message:
    return decode(encode(kind, **fields))


# -- round trips ------------------------------------------------------------------------------


def test_every_message_type_has_a_round_trip_example() -> None:
    assert set(EXAMPLES) == protocol.MESSAGE_TYPES


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_each_message_type_round_trips(kind: str) -> None:
    decoded = decode(encode(kind, **EXAMPLES[kind]))
    assert decoded.kind == kind
    assert dict(decoded.body) == {"t": kind, "v": PROTOCOL_VERSION, **EXAMPLES[kind]}


def test_typed_getters_read_back_what_was_sent() -> None:
    register = message(protocol.REGISTER, **EXAMPLES[protocol.REGISTER])
    assert register.text("worker_id") == "w0"
    assert register.integer("capacity", minimum=1) == 10_000
    assert register.strings("venues") == ["kalshi", "polymarket"]
    assert register.owned_markets("owned") == OWNED
    assert register.mapping("counters") == {"published": 3}
    assert register.integer("missing", default=0) == 0
    assert register.text("missing", optional=True) == ""
    assert register.strings("missing", optional=True) is None
    directory = Directory.from_message(message(protocol.DIRECTORY, **EXAMPLES[protocol.DIRECTORY]))
    assert directory.placed == PLACED
    assert directory.workers == {"w0": ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")}
    assert [g.game_id for g in directory.games] == ["nfl-kc-buf"]
    assert directory.shards == {"s0": "x"}


def test_encode_refuses_an_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown control message type 'nope'"):
        encode("nope")


# -- rejections --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "problem"), [
    (b"\xc1", "malformed control frame"),
    (b"", "malformed control frame"),
    (frame({"t": "ack", "v": 1}) + b"\x00", "malformed control frame"),  # trailing bytes
    (frame([1, 2]), "must be a map, got list"),
    (frame("ack"), "must be a map, got str"),
    (frame({"t": "ack"}), "version None is not 1"),
    (frame({"t": "ack", "v": 2}), "version 2 is not 1"),
    (frame({"t": "ack", "v": True}), "version True is not 1"),
    (frame({"t": "ack", "v": 1.0}), "version 1.0 is not 1"),
    (frame({"v": 1}), "unknown control message type None"),
    (frame({"t": "launch_missiles", "v": 1}), "unknown control message type 'launch_missiles'"),
    (frame({"t": b"ack", "v": 1}), "unknown control message type b'ack'"),
    (frame({1: "x", "t": "ack", "v": 1}), "malformed control frame"),  # integer map key
])
def test_decode_rejects_frames_naming_the_problem(raw: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem.replace("(", r"\(")):
        decode(raw)


def test_decode_rejects_an_oversized_frame_before_parsing_it() -> None:
    with pytest.raises(ProtocolError, match=f"exceeds {MAX_CONTROL_BYTES}"):
        decode(b"\x00" * (MAX_CONTROL_BYTES + 1))


@pytest.mark.parametrize("worker_id", [None, 7, b"w0", "", ["w0"], "w" * 129])
def test_a_worker_id_must_be_a_short_non_empty_string(worker_id: object) -> None:
    with pytest.raises(ProtocolError, match="register: field 'worker_id' must be a non-empty string"):
        message(worker_id=worker_id).text("worker_id", limit=128)


@pytest.mark.parametrize("capacity", [None, -1, 0, True, False, 1.5, "10"])
def test_capacity_must_be_a_positive_integer_and_not_a_bool(capacity: object) -> None:
    with pytest.raises(ProtocolError, match="field 'capacity' must be an integer >= 1"):
        message(capacity=capacity).integer("capacity", minimum=1)


@pytest.mark.parametrize(("owned", "problem"), [
    ("KX-A", "field 'owned' must be a list"),
    ({"kalshi": "KX-A"}, "field 'owned' must be a list"),
    ([["kalshi", "KX-A"]], r"entries must be \[venue, market_id, epoch\]"),
    ([["kalshi", "KX-A", 1, 2]], r"entries must be \[venue, market_id, epoch\]"),
    (["kalshi/KX-A"], r"entries must be \[venue, market_id, epoch\]"),
    ([["nyse", "KX-A", 1]], "unknown venue 'nyse'"),
    ([[None, "KX-A", 1]], "unknown venue None"),
    ([["kalshi", "KX|A", 1]], "bad market id 'KX|A'"),
    ([["kalshi", "", 1]], "bad market id ''"),
    ([["kalshi", 5, 1]], "bad market id 5"),
    ([["kalshi", "K" * 257, 1]], "bad market id"),
    ([["kalshi", "KX-A", 0]], "epoch must be a positive integer, got 0"),
    ([["kalshi", "KX-A", -3]], "epoch must be a positive integer, got -3"),
    ([["kalshi", "KX-A", True]], "epoch must be a positive integer, got True"),
    ([["kalshi", "KX-A", 2.0]], "epoch must be a positive integer, got 2.0"),
    ([["kalshi", "KX-A", 1 << 63]], "epoch must be a positive integer, got 9223372036854775808"),
    ([["kalshi", "KX-A", (1 << 64) - 1]], "epoch must be a positive integer"),
])
def test_owned_entries_are_checked_one_by_one(owned: object, problem: str) -> None:
    with pytest.raises(ProtocolError, match=f"register: .*{problem}"):
        message(owned=owned).owned_markets("owned")


def test_the_largest_allowed_epoch_is_accepted() -> None:
    assert message(owned=[["kalshi", "KX-A", (1 << 63) - 1]]).owned_markets("owned") == {(K, "KX-A"): (1 << 63) - 1}


@pytest.mark.parametrize(("placed", "problem"), [
    ([["kalshi", "KX-A", "w0"]], r"entries must be \[venue, market_id, worker, epoch\]"),
    ([["kalshi", "KX-A", "", 1]], "worker id must be a non-empty string"),
    ([["kalshi", "KX-A", 3, 1]], "worker id must be a non-empty string"),
    ([["kalshi", "KX|A", "w0", 1]], "bad market id"),
    ([["kalshi", "KX-A", "w0", 0]], "epoch must be a positive integer"),
])
def test_placed_entries_are_checked_one_by_one(placed: object, problem: str) -> None:
    with pytest.raises(ProtocolError, match=f"directory: .*{problem}"):
        message(protocol.DIRECTORY, markets=placed).placed_markets("markets")


@pytest.mark.parametrize(("fields", "problem"), [
    ({"workers": {"w0": "tcp://x"}}, "bad endpoints for worker 'w0'"),
    ({"workers": {"w0": {"pub": "tcp://x"}}}, "bad endpoints for worker 'w0'"),
    ({"workers": {"w0": {"pub": "a", "snapshot": "b"}}, "games": [{"id": "g"}]}, "bad game entry"),
    ({"workers": {}, "games": [{"id": "g", "markets": [["nyse", "X", "Y", ""]]}]}, "'nyse' is not a valid Platform"),
    ({"workers": {}, "games": [{"id": "g", "markets": [["kalshi", "X|Y", "Y", ""]]}]}, "bad market id 'X|Y'"),
    ({"workers": [], "games": []}, "field 'workers' must be a map"),
    ({"workers": {}, "games": [], "version": -2}, "field 'version' must be an integer >= 0"),
])
def test_a_malformed_directory_is_a_protocol_error(fields: dict[str, Any], problem: str) -> None:
    body = {"version": 1, "markets": [], **fields}
    with pytest.raises(ProtocolError, match=problem):
        Directory.from_message(message(protocol.DIRECTORY, **body))


def test_strings_and_mappings_check_their_items() -> None:
    with pytest.raises(ProtocolError, match="field 'games' must be a list of non-empty strings"):
        message(protocol.HELLO, games=["g", 3]).strings("games")
    with pytest.raises(ProtocolError, match="field 'counters' must be a map with string keys"):
        message(protocol.HELLO, counters=[1]).mapping("counters")


# -- fuzz --------------------------------------------------------------------------------------

FIELD_NAMES = sorted({name for fields in EXAMPLES.values() for name in fields} | {"t", "v", "missing"})


def read_everything(decoded: Message) -> None:
    """Every getter on every field name, as some receiver might call it; only ProtocolError may escape."""
    getters = [
        lambda n: decoded.text(n), lambda n: decoded.text(n, optional=True), lambda n: decoded.integer(n),
        lambda n: decoded.integer(n, minimum=-1, default=-1), lambda n: decoded.mapping(n),
        lambda n: decoded.sequence(n), lambda n: decoded.strings(n, optional=True),
        lambda n: decoded.owned_markets(n), lambda n: decoded.placed_markets(n),
    ]
    for name in FIELD_NAMES:
        for getter in getters:
            try:
                getter(name)
            except ProtocolError:
                pass
    if decoded.kind == protocol.DIRECTORY:
        try:
            Directory.from_message(decoded)
        except ProtocolError:
            pass


def random_value(rng: random.Random, depth: int = 0) -> object:
    choices = [None, True, False, 0, -1, 1, 1 << 63, -(1 << 63), (1 << 64) - 1, 0.5, float("nan"), "", "w0",
               "kalshi", "polymarket", "KX|A", "é", b"", b"\xff", "x" * 300]
    if depth < 3 and rng.random() < 0.4:
        if rng.random() < 0.5:
            return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(FIELD_NAMES + ["pub", "snapshot", "signals", "id"]): random_value(rng, depth + 1)
                for _ in range(rng.randint(0, 4))}
    return rng.choice(choices)


def mutated(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        action = rng.randrange(4)
        position = rng.randrange(len(data) + 1)
        if action == 0 and data:
            data[min(position, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif action == 1:
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        elif action == 2:
            del data[position:position + rng.randint(1, 8)]
        else:
            data = data[:position]
    return bytes(data)


def fuzz_frames(rng: random.Random, count: int) -> list[bytes]:
    valid = [encode(kind, **fields) for kind, fields in EXAMPLES.items()]
    frames = []
    for _ in range(count):
        style = rng.randrange(3)
        if style == 0:
            frames.append(rng.randbytes(rng.randint(0, 64)))
        elif style == 1:
            frames.append(mutated(rng, rng.choice(valid)))
        else:  # well-formed header, fields of every wrong shape
            kind = rng.choice(sorted(protocol.MESSAGE_TYPES))
            body = {name: random_value(rng) for name in rng.sample(FIELD_NAMES, rng.randint(0, 6))}
            frames.append(frame({**body, "t": kind, "v": PROTOCOL_VERSION}))
    return frames


def test_no_frame_makes_decode_or_a_getter_raise_anything_but_protocol_error() -> None:
    rng = random.Random(8)
    decoded = 0
    for raw in fuzz_frames(rng, 4000):
        try:
            result = decode(raw)
        except ProtocolError:
            continue
        decoded += 1
        read_everything(result)
    assert decoded > 1000, "the fuzz should reach the getters often"
