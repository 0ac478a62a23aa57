"""GameShard's evaluation without sockets: what reaches the signal PUB for a game's latest prices.

The rules themselves are tested in test_signals.py; here the shard's side is: which
records it hands them (only confirmed, non-awaiting ones; a quiet market's age is
when it was last confirmed, not when it last changed), and that a signal is
published once when it appears or changes, not again while it merely persists.
Prices are put straight into the subscriber's `MarketState`s, as the bus would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from broker.universe import Game, MarketRef
from markets.models import MarketPrice, Platform, PriceStatus
from shard.game_shard import GameShard, signal_topic
from shard.market_state import MarketState
from shard.signals import kalshi_taker_fee
from shard.subscriber import Directory

K, P = Platform.KALSHI, Platform.POLYMARKET
MAX_AGE = 30.0
OLD_NS = 120 * 1_000_000_000
GAME = Game("nfl-kc-buf", "KC at BUF", (MarketRef(K, "KX-KCBUF-KC", "KC"), MarketRef(P, "0xkcbuf", "KC")))
KALSHI_ONLY = Game("nhl-bos-tor", "BOS at TOR", (MarketRef(K, "KX-BOSTOR-BOS", "BOS"),))


class FakePub:
    """Stands in for the shard's PUB socket: keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, Any]]] = []

    def send_multipart(self, parts: tuple[bytes, bytes], flags: int = 0) -> None:
        topic, payload = parts
        self.sent.append((topic, msgpack.unpackb(payload)))


@pytest.fixture
def shard() -> GameShard:
    shard = GameShard("s0", "ipc:///nonexistent/broker", "ipc:///nonexistent/signals", max_age=MAX_AGE)
    shard._pub = FakePub()  # type: ignore[assignment]
    shard._on_directory(Directory(games=[GAME, KALSHI_ONLY]))
    return shard


def price(platform: Platform, bid: float | None, ask: float | None, *, game: Game = GAME, size: float = 100.0,
          status: PriceStatus = PriceStatus.LIVE, age_ns: int = 0) -> MarketPrice:
    """`game`'s market on `platform`, received `age_ns` ago."""
    ref = game.market(platform)
    assert ref is not None
    return MarketPrice(ref.market_id, bid, ask, size, size, platform, status, recv_ts_ns=time.time_ns() - age_ns,
                       seq=1, epoch=1)


def feed(shard: GameShard, record: MarketPrice, *, market_id: str | None = None, awaiting: bool = False,
         confirmed_age_ns: int | None = None) -> None:
    """Make `record` the subscriber's latest for its market, confirmed `confirmed_age_ns` ago, and mark it changed."""
    key = (record.platform, market_id or record.market_id)
    state = MarketState(record.epoch)
    state.latest, state.awaiting = record, awaiting
    state.confirmed_ns = record.recv_ts_ns if confirmed_age_ns is None else time.time_ns() - confirmed_age_ns
    shard.subscriber.states[key] = state
    shard._on_change(key, record)


def published(shard: GameShard) -> list[tuple[bytes, dict[str, Any]]]:
    shard._evaluate()
    return shard._pub.sent  # type: ignore[union-attr]


def crossed() -> tuple[MarketPrice, MarketPrice]:
    """Buy YES on Kalshi at 0.40 and NO on Polymarket at 1 - 0.50: 0.90 for a sure $1, before fees.

    Made fresh by each test: records built at import would be minutes old (past MAX_AGE)
    by the time a long suite reaches them."""
    return price(K, 0.38, 0.40), price(P, 0.50, 0.52)


def test_the_constructor_opens_no_socket() -> None:
    shard = GameShard("s0", "ipc:///nonexistent/broker", "ipc:///nonexistent/signals")
    assert shard._pub is None and shard._fair_sub is None
    assert shard.subscriber._ctx is None and shard.subscriber._sub is None and shard.subscriber._snap == {}


def test_crossed_books_after_fees_publish_one_arbitrage(shard: GameShard) -> None:
    for record in crossed():
        feed(shard, record)
    [(topic, body)] = published(shard)
    assert topic == signal_topic("nfl-kc-buf") == b"signal/nfl-kc-buf|"
    assert body["kind"] == "arbitrage" and body["game_id"] == "nfl-kc-buf"
    assert [(leg["platform"], leg["side"], leg["price"]) for leg in body["legs"]] == [
        ("kalshi", "yes", 0.40), ("polymarket", "no", 0.50)]
    assert body["contracts"] == 100
    fee_cents = kalshi_taker_fee(100, 4_000)
    assert body["fees_dollars"] == fee_cents / 100 == 1.68
    assert body["edge_dollars"] == pytest.approx(100 * 0.10 - 1.68)
    assert shard.counters["signals_arbitrage"] == 1


def test_a_cross_smaller_than_the_fee_is_no_signal(shard: GameShard) -> None:
    feed(shard, price(K, 0.47, 0.49))  # 1 cent gross per contract, Kalshi fee ~1.75 cents
    feed(shard, price(P, 0.50, 0.52))
    assert published(shard) == []


def stale(record: MarketPrice) -> MarketPrice:
    return record._replace(status=PriceStatus.STALE)


def resyncing(record: MarketPrice) -> MarketPrice:
    return record._replace(status=PriceStatus.RESYNCING)


def closed(record: MarketPrice) -> MarketPrice:
    return record._replace(status=PriceStatus.CLOSED)


def ask_empty(record: MarketPrice) -> MarketPrice:
    return record._replace(yes_ask=None, yes_ask_size=None)


@pytest.mark.parametrize("spoil", [stale, resyncing, closed, ask_empty], ids=lambda f: f.__name__)
def test_no_arbitrage_from_a_side_that_cannot_be_traded(
        shard: GameShard, spoil: Callable[[MarketPrice], MarketPrice]) -> None:
    kalshi, poly = crossed()
    feed(shard, spoil(kalshi))
    feed(shard, poly)
    assert published(shard) == []


def test_no_arbitrage_while_a_side_awaits_its_snapshot(shard: GameShard) -> None:
    kalshi, poly = crossed()
    feed(shard, kalshi, awaiting=True)
    feed(shard, poly)
    assert published(shard) == []


def test_no_arbitrage_from_a_price_not_confirmed_within_max_age(shard: GameShard) -> None:
    feed(shard, price(K, 0.38, 0.40, age_ns=OLD_NS))
    feed(shard, crossed()[1])
    assert published(shard) == []


def test_a_quiet_market_confirmed_recently_still_signals(shard: GameShard) -> None:
    """Quiet is not stale: unchanged for two minutes, but the owner's snapshot just showed the same record."""
    feed(shard, price(K, 0.38, 0.40, age_ns=OLD_NS), confirmed_age_ns=0)
    feed(shard, crossed()[1])
    [(_, body)] = published(shard)
    assert body["kind"] == "arbitrage"


def test_a_persisting_signal_is_published_once_and_again_when_it_changes_or_returns(shard: GameShard) -> None:
    kalshi, poly = crossed()
    feed(shard, kalshi)
    feed(shard, poly)
    assert len(published(shard)) == 1
    feed(shard, kalshi._replace(seq=2))  # a new record, the same prices: the same signal
    assert len(published(shard)) == 1
    feed(shard, kalshi._replace(seq=3, yes_ask_size=50.0))  # smaller: a different signal
    assert len(published(shard)) == 2
    assert shard._pub.sent[-1][1]["contracts"] == 50  # type: ignore[union-attr]
    feed(shard, stale(kalshi))  # gone...
    assert len(published(shard)) == 2
    feed(shard, kalshi._replace(seq=4, yes_ask_size=50.0))  # ...and back: published again
    assert len(published(shard)) == 3


def test_nothing_is_evaluated_for_a_game_that_did_not_change(shard: GameShard) -> None:
    for record in crossed():
        feed(shard, record)
    published(shard)
    shard._pub.sent.clear()  # type: ignore[union-attr]
    shard._last_signal.clear()  # forget it was published: only a change may bring it back
    assert published(shard) == []


def test_a_fair_value_far_from_the_price_is_a_model_edge(shard: GameShard) -> None:
    feed(shard, price(K, 0.38, 0.40, game=KALSHI_ONLY))
    shard.fair[KALSHI_ONLY.game_id] = (0.70, time.time_ns())
    [(topic, body)] = published(shard)
    assert topic == signal_topic(KALSHI_ONLY.game_id)
    assert body["kind"] == "model_edge"
    assert (body["platform"], body["market_id"], body["side"]) == ("kalshi", "KX-BOSTOR-BOS", "yes")
    assert body["price"] == 0.40
    assert body["fair"] == 0.70
    assert body["edge_dollars"] == pytest.approx(100 * 0.30 - kalshi_taker_fee(100, 4_000) / 100)


def test_no_model_edge_from_a_fair_value_older_than_max_age(shard: GameShard) -> None:
    feed(shard, price(K, 0.38, 0.40, game=KALSHI_ONLY))
    shard.fair[KALSHI_ONLY.game_id] = (0.70, time.time_ns() - OLD_NS)
    assert published(shard) == []


def test_a_market_outside_the_shards_games_marks_nothing_dirty(shard: GameShard) -> None:
    feed(shard, price(K, 0.38, 0.40), market_id="KX-SOMEONE-ELSES")
    assert shard._dirty == set()
