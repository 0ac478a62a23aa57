"""Issue 8, test 6: a subscription to one market never receives another whose id shares its prefix.

A real `workers.publisher.Publisher` on a real PUB socket (ipc in the test's
directory, loopback only), real SUB sockets subscribed with `markets.codec.topic`
and `venue_prefix`. ZeroMQ matches subscriptions by byte prefix, so this is where
the topic terminator earns its keep. Delivery on one PUB->SUB pipe is in order, so
a sentinel record published last proves everything before it has arrived: no
absence is asserted by waiting.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from broker.protocol import MarketKey
from markets import codec
from markets.models import MarketPrice, Platform
from workers.publisher import Publisher

K, P = Platform.KALSHI, Platform.POLYMARKET
SHORT: MarketKey = (K, "KXNFLGAME-25NOV23KCBUF")
LONG: MarketKey = (K, "KXNFLGAME-25NOV23KCBUF-KC")
OTHER_VENUE: MarketKey = (P, "KXNFLGAME-25NOV23KCBUF")
UNOWNED: MarketKey = (K, "KXNFLGAME-25NOV23KCBUF-BUF")
EPOCHS = {SHORT: 7, LONG: 9, OTHER_VENUE: 11}
ROUNDS = 200
HWM = 100_000
"""Far above what is sent, so nothing is dropped and seq must be continuous."""
DEADLINE = 20.0


def price(key: MarketKey, n: int) -> MarketPrice:
    """A price as a venue client emits it: no seq, no epoch (the publisher stamps them)."""
    return MarketPrice(key[1], n % 100 / 100, None, float(n), None, key[0], recv_ts_ns=time.time_ns())


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[Publisher, zmq.Socket, zmq.Socket]]:
    """A publisher owning SHORT, LONG and OTHER_VENUE; a SUB on SHORT's topic, and one on `kalshi/`."""
    ctx = zmq.Context()
    pub, exact, venue = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
    try:
        for sock in (pub, exact, venue):
            sock.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, HWM)
        endpoint = f"ipc://{tmp_path}/pub.sock"
        pub.bind(endpoint)
        for sock in (exact, venue):
            sock.setsockopt(zmq.RCVHWM, HWM)
            sock.connect(endpoint)
        exact.setsockopt(zmq.SUBSCRIBE, codec.topic(*SHORT))
        venue.setsockopt(zmq.SUBSCRIBE, codec.venue_prefix(K))
        publisher = Publisher(pub)
        for key, epoch in EPOCHS.items():
            assert publisher.own(key, epoch)
        yield publisher, exact, venue
    finally:
        for sock in (pub, exact, venue):
            sock.close(linger=0)
        ctx.term()


def receive_until(sock: zmq.Socket, done: MarketKey, seq: int, epoch: int) -> list[MarketPrice]:
    """Everything `sock` receives up to and including `done`'s record (`epoch`, `seq`)."""
    records: list[MarketPrice] = []
    deadline = time.monotonic() + DEADLINE
    while not records or (records[-1].platform, records[-1].market_id, records[-1].epoch, records[-1].seq) != (
            *done, epoch, seq):
        remaining = deadline - time.monotonic()
        assert remaining > 0 and sock.poll(int(remaining * 1000)), f"{done} seq {seq} never arrived"
        topic, payload = sock.recv_multipart()
        record = codec.decode(payload)
        assert topic == codec.topic(record.platform, record.market_id), "topic and record disagree"
        records.append(record)
    return records


def wait_until_subscribed(publisher: Publisher, socks: tuple[zmq.Socket, ...]) -> None:
    """Slow joiner: publish SHORT until every SUB has received a record (each one also matches SHORT)."""
    waiting = set(socks)
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    deadline = time.monotonic() + DEADLINE
    n = 0
    while waiting:
        assert time.monotonic() < deadline, "the subscriptions never became live"
        publisher.publish(price(SHORT, n))
        n += 1
        waiting -= {sock for sock, _ in poller.poll(20)}


def by_market(records: list[MarketPrice]) -> dict[MarketKey, list[MarketPrice]]:
    grouped: dict[MarketKey, list[MarketPrice]] = {}
    for record in records:
        grouped.setdefault((record.platform, record.market_id), []).append(record)
    return grouped


def assert_continuous(records: list[MarketPrice], epoch: int) -> None:
    seqs = [r.seq for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq must rise by one per record"
    assert {r.epoch for r in records} == {epoch}
    assert all(r.publish_ts_ns >= r.recv_ts_ns > 0 for r in records)


def test_an_exact_topic_receives_only_its_market_and_a_venue_prefix_every_market_of_the_venue(bus) -> None:
    publisher, exact, venue = bus
    wait_until_subscribed(publisher, (exact, venue))
    for n in range(ROUNDS):
        for key in (LONG, SHORT, OTHER_VENUE, UNOWNED):
            publisher.publish(price(key, n))
    publisher.publish(price(SHORT, ROUNDS))  # the sentinel: last on every pipe
    last = publisher.owned[SHORT].seq

    exact_got = by_market(receive_until(exact, SHORT, last, EPOCHS[SHORT]))
    assert set(exact_got) == {SHORT}, "the exact subscription received another market"
    assert_continuous(exact_got[SHORT], EPOCHS[SHORT])
    assert len(exact_got[SHORT]) >= ROUNDS + 1

    venue_got = by_market(receive_until(venue, SHORT, last, EPOCHS[SHORT]))
    assert set(venue_got) == {SHORT, LONG}, "kalshi/ matches both Kalshi markets and nothing else"
    assert_continuous(venue_got[SHORT], EPOCHS[SHORT])
    assert_continuous(venue_got[LONG], EPOCHS[LONG])
    assert [r.seq for r in venue_got[LONG]] == list(range(1, ROUNDS + 1)), "every LONG record, from seq 1"

    assert publisher.counters["unowned_prices"] == ROUNDS, "a market not owned is never published"
    assert publisher.counters["pub_dropped"] == 0


def test_a_new_epoch_restarts_seq_at_one_and_is_stamped_on_every_record(bus) -> None:
    publisher, exact, _ = bus
    wait_until_subscribed(publisher, (exact,))
    assert not publisher.own(SHORT, EPOCHS[SHORT]), "the same epoch again is no new ownership"
    assert publisher.own(SHORT, 20)
    for n in range(5):
        publisher.publish(price(SHORT, n))
    records = receive_until(exact, SHORT, 5, 20)
    fresh = [r for r in records if r.epoch == 20]
    assert [r.seq for r in fresh] == [1, 2, 3, 4, 5]
    assert all(r.epoch == EPOCHS[SHORT] for r in records[: len(records) - 5]), "probes carry the old epoch"
    publisher.disown(SHORT)
    publisher.publish(price(SHORT, 99))
    assert publisher.counters["unowned_prices"] == 1
