"""The MarketPrice wire codec and bus topics."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from markets.codec import SCHEMA_VERSION, CodecError, decode, encode, parse_topic, topic, venue_prefix
from markets.models import MarketPrice, Platform, PriceStatus

dollars = st.one_of(st.none(), st.integers(0, 10_000).map(lambda t: t / 10_000))
sizes = st.one_of(st.none(), st.floats(0, 1e9, allow_nan=False))
counts = st.integers(0, 2**63 - 1)

prices = st.builds(
    MarketPrice,
    market_id=st.text(min_size=1, max_size=80),
    yes_bid=dollars,
    yes_ask=dollars,
    yes_bid_size=sizes,
    yes_ask_size=sizes,
    platform=st.sampled_from(Platform),
    status=st.sampled_from(PriceStatus),
    last_trade=dollars,
    venue_ts_ms=st.one_of(st.none(), counts),
    recv_ts_ns=counts,
    publish_ts_ns=counts,
    seq=counts,
    epoch=counts,
)


@given(prices)
def test_round_trip_is_exact(price: MarketPrice) -> None:
    decoded = decode(encode(price))
    assert decoded == price
    assert type(decoded.platform) is Platform and type(decoded.status) is PriceStatus


def _payload(*fields: object) -> bytes:
    return msgpack.packb(fields)


GOOD = (SCHEMA_VERSION, "M", 0.4, 0.5, 1.0, 2.0, "kalshi", "live", None, None, 1, 2, 3, 4)


def _with(index: int, value: object) -> bytes:
    fields = list(GOOD)
    fields[index] = value
    return _payload(*fields)


def test_good_payload_decodes() -> None:
    assert decode(_payload(*GOOD)).market_id == "M"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1", "malformed"),
        (b"", "malformed"),
        (msgpack.packb({"a": 1}), "must be an array"),
        (_with(0, 1), "schema version 1"),
        (_payload(*GOOD[:-1]), "12 fields, expected 13"),
        (_with(1, ""), "market_id"),
        (_with(2, 1.5), "yes_bid"),
        (_with(3, "0.5"), "yes_ask"),
        (_with(4, -1.0), "yes_bid_size"),
        (_with(6, "nyse"), "nyse"),
        (_with(7, "open"), "open"),
        (_with(12, -1), "seq"),
        (_with(10, True), "recv_ts_ns"),
        (_with(13, -2), "epoch"),
    ],
)
def test_bad_payloads_raise_a_clear_codec_error(payload: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(payload)


def test_topic_round_trip_and_rejects_non_topics() -> None:
    assert topic(Platform.KALSHI, "KXA-1") == b"kalshi/KXA-1|"
    assert parse_topic(b"polymarket/0xabc|") == (Platform.POLYMARKET, "0xabc")
    for bad in (b"kalshi/KXA", b"nyse/A|", b"kalshi|", b"kalshi/|"):
        with pytest.raises(CodecError):
            parse_topic(bad)
    with pytest.raises(ValueError):
        topic(Platform.KALSHI, "A|B")


def test_a_market_subscription_never_receives_a_longer_id_over_real_zeromq() -> None:
    """ZeroMQ matches by prefix; the terminator makes one market's topic exact."""
    ctx = zmq.Context.instance()
    pub, sub, venue_sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
    try:
        for sock in (pub, sub, venue_sub):
            sock.setsockopt(zmq.LINGER, 0)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        for sock in (sub, venue_sub):
            sock.setsockopt(zmq.RCVTIMEO, 2000)
            sock.connect(f"tcp://127.0.0.1:{port}")
        short, long = "KXNFLGAME-25NOV23KCBUF", "KXNFLGAME-25NOV23KCBUF-KC"
        sub.setsockopt(zmq.SUBSCRIBE, topic(Platform.KALSHI, short))
        venue_sub.setsockopt(zmq.SUBSCRIBE, venue_prefix(Platform.KALSHI))
        # Slow-joiner: publish a probe until both subscriptions are live.
        probe = topic(Platform.KALSHI, short)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(venue_sub, zmq.POLLIN)
        ready: set[zmq.Socket] = set()
        deadline = time.monotonic() + 20  # generous: a loaded CI box can be slow to connect
        while len(ready) < 2 and time.monotonic() < deadline:
            pub.send_multipart([probe, b"probe"])
            ready |= {s for s, _ in poller.poll(20)}
        assert len(ready) == 2, "subscriptions never became live"
        # Probes still in flight must not be mistaken for the messages under test.
        for sock in (sub, venue_sub):
            while sock.poll(200):
                assert sock.recv_multipart()[1] == b"probe"
        for market in (long, short, "OTHER"):
            pub.send_multipart([topic(Platform.KALSHI, market), market.encode()])
        pub.send_multipart([topic(Platform.POLYMARKET, short), b"pm"])
        got = sub.recv_multipart()
        assert got == [topic(Platform.KALSHI, short), short.encode()]
        assert not sub.poll(200), "the exact subscription received another market"
        venue_got = [venue_sub.recv_multipart()[1] for _ in range(3)]
        assert venue_got == [long.encode(), short.encode(), b"OTHER"]
        assert not venue_sub.poll(200)
    finally:
        for sock in (pub, sub, venue_sub):
            sock.close(linger=0)


FIELDS = ("market_id", "yes_bid", "yes_ask", "yes_bid_size", "yes_ask_size", "platform", "status", "last_trade",
          "venue_ts_ms", "recv_ts_ns", "publish_ts_ns", "seq", "epoch")
PRICES, SIZES, COUNTS = (2, 3, 8), (4, 5), (10, 11, 12, 13)
INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(("index", "bad"), [
    *((i, value) for i in PRICES for value in (INF, -INF, NAN, True, False, "0.5", -0.0001, 1.0001, [0.5])),
    *((i, value) for i in SIZES for value in (INF, NAN, True, "1", -1e-9, [1.0])),
    *((i, value) for i in COUNTS for value in (True, -1, 1.0, "1", None, INF)),
    *((9, value) for value in (True, -1, 1.5, "1700000000000", INF)),
    (1, None), (1, 5), (1, b"M"), (6, None), (6, "KALSHI"), (7, None), (7, "LIVE"),
], ids=lambda v: repr(v))
def test_every_field_refuses_a_bad_value_and_names_itself(index: int, bad: object) -> None:
    name = FIELDS[index - 1]
    with pytest.raises(CodecError, match=f"^{name} must" if index not in (6, 7) else "^MarketPrice payload: "):
        decode(_with(index, bad))


@pytest.mark.parametrize("index", PRICES)
@pytest.mark.parametrize("edge", [0.0, 1.0, 0, 1, None])
def test_prices_at_the_edges_of_zero_to_one_decode(index: int, edge: object) -> None:
    assert decode(_with(index, edge))[index - 1] == edge


def test_zero_sizes_and_counts_and_no_venue_stamp_decode() -> None:
    fields = list(GOOD)
    for i in (*SIZES, *COUNTS):
        fields[i] = 0
    fields[9] = None
    price = decode(_payload(*fields))
    assert price.yes_bid_size == 0 and price.seq == 0 and price.venue_ts_ms is None


@pytest.mark.parametrize(("payload", "message"), [
    (msgpack.packb([]), "must be an array, got tuple"), (msgpack.packb({"a": 1}), "got dict"),
    (msgpack.packb("x"), "got str"), (msgpack.packb(None), "got NoneType"),
    (_payload(*GOOD, 1), "14 fields, expected 13"), (_payload(SCHEMA_VERSION), "0 fields")])
def test_payloads_that_are_not_one_record_name_what_they_are(payload: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(payload)


def test_decoded_records_carry_str_and_enum_types() -> None:
    price = decode(_payload(*GOOD))
    assert type(price.market_id) is str and price.platform is Platform.KALSHI and price.status is PriceStatus.LIVE


def test_topic_edges() -> None:
    assert parse_topic(b"kalshi/X|") == (Platform.KALSHI, "X")  # a one-character id
    assert parse_topic(b"kalshi/A/B|") == (Platform.KALSHI, "A/B")  # only the first slash splits
    assert parse_topic(b"kalshi/\xff|") == (Platform.KALSHI, "\ufffd")  # bytes that are not UTF-8
    with pytest.raises(CodecError, match="not a market topic"):
        parse_topic(b"kalshi/|")
    with pytest.raises(CodecError, match="unknown venue in topic"):
        parse_topic(b"nyse/A|")
    with pytest.raises(ValueError, match="may not contain"):
        topic(Platform.KALSHI, "A|B")
