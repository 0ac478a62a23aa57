"""Polymarket books that disagree with the venue's best prices for a moment, and tick
changes with no fresh book after them.

The venue reports post-trade `best_bid`/`best_ask` a few messages before it removes a
swept level (protocols/polymarket.md appendix), so one mismatch is counted and the
book published STALE, never LIVE, until a frame agrees; only a persistent mismatch
resyncs. After a `tick_size_change` the venue may send no `book`: the client asks for
one after a short grace instead of waiting out `resync_timeout`.
"""

from __future__ import annotations

import pytest

from markets.book import PolymarketOrderBook
from markets.models import PriceStatus
from markets.polymarket import market_channel as mc
from markets.polymarket.disputes import Disputes
from markets.polymarket.ws_client import PolymarketWebSocketClient
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.universe import build_universe
from tests.clients.conftest import wsk_eventually
from tests.clients.test_polymarket_channel import (
    CONDITION,
    NO,
    YES,
    change,
    dump,
    price_change,
)
from tests.clients.test_polymarket_ws import collect, converged, step

pytestmark = pytest.mark.timeout(60)
SECOND = 1_000_000_000


@pytest.fixture
def channel() -> mc.MarketChannel:
    books = {YES: PolymarketOrderBook(YES, CONDITION), NO: PolymarketOrderBook(NO)}
    return mc.MarketChannel(books, disputes=Disputes(max_frames=3, max_seconds=2.0))


def test_a_transient_mismatch_is_counted_published_stale_and_cleared_by_agreement(
        channel: mc.MarketChannel) -> None:
    dump(channel)  # YES: best bid 0.50, best ask 0.52
    # The venue already reports the ask at 0.52 swept (best ask 0.53) before removing it.
    outcome = channel.apply_frame(price_change(change(YES, "0.51", "9", "BUY", "0.51", "0.53")), 1 * SECOND)
    book = channel.books[YES]
    assert outcome.resync == [] and outcome.disputed == [YES]
    assert book.status is PriceStatus.STALE and YES in outcome.changed  # never LIVE while it disagrees
    assert book.best_bid == (5100, 9_000_000)  # the update itself was applied
    outcome = channel.apply_frame(price_change(change(YES, "0.52", "0", "SELL", "0.51", "0.53")), 2 * SECOND)
    assert outcome.disputed == [] and outcome.resync == []
    assert book.status is PriceStatus.LIVE and YES in outcome.changed
    assert YES not in channel.disputes


def test_a_mismatch_that_outlasts_the_frame_limit_resyncs(channel: mc.MarketChannel) -> None:
    dump(channel)
    wrong = price_change(change(YES, "0.40", "5", "BUY", "0.51", "0.52"))
    for k in range(3):
        outcome = channel.apply_frame(wrong, k)
        assert outcome.disputed == [YES] and outcome.resync == []
    outcome = channel.apply_frame(wrong, 3)
    assert outcome.resync == [(YES, mc.BEST_MISMATCH)] and outcome.disputed == []
    assert channel.books[YES].status is PriceStatus.RESYNCING and YES not in channel.disputes


def test_a_mismatch_that_outlasts_the_time_limit_resyncs(channel: mc.MarketChannel) -> None:
    dump(channel)
    wrong = price_change(change(YES, "0.40", "5", "BUY", "0.51", "0.52"))
    assert channel.apply_frame(wrong, 10 * SECOND).disputed == [YES]
    assert channel.apply_frame(wrong, 12 * SECOND).resync == [(YES, mc.BEST_MISMATCH)]


def test_a_quiet_dispute_expires_and_a_book_settles_one(channel: mc.MarketChannel) -> None:
    dump(channel)
    channel.apply_frame(price_change(change(YES, "0.40", "5", "BUY", "0.51", "0.52"),
                                     change(NO, "0.40", "5", "BUY", "0.48", "0.51")), 10 * SECOND)
    assert YES in channel.disputes and NO in channel.disputes
    dump(channel)  # a fresh book replaces both: nothing is in dispute any more
    assert YES not in channel.disputes and NO not in channel.disputes
    channel.apply_frame(price_change(change(YES, "0.40", "5", "BUY", "0.51", "0.52")), 20 * SECOND)
    assert channel.disputes.expired(21 * SECOND) == []
    assert channel.disputes.expired(22 * SECOND) == [YES]


@pytest.fixture
async def sweepy() -> PolymarketSimulator:
    """Every removal of a top level reported late, and no trade resending books."""
    async with PolymarketSimulator(build_universe(6, seed=11), rate=0, trade_share=0.0, sweep_lag_share=1.0,
                                   sweep_lag_frames=3, sweep_lag_seconds=0.05, ping_timeout=5.0) as sim:
        yield sim


def make(sim: PolymarketSimulator, **options: object) -> PolymarketWebSocketClient:
    return PolymarketWebSocketClient(url=sim.ws_url, **{"backoff_initial": 0.01, "backoff_max": 0.1,
                                                        "resync_timeout": 1.0, "ping_interval": 0.2, **options})


def mid_tokens(sim: PolymarketSimulator) -> list[str]:
    return [m.yes_token_id for m in sim.universe.markets if m.price_level_structure == "linear_cent"]


async def test_late_sweep_removals_are_ridden_out_without_a_resync(sweepy: PolymarketSimulator) -> None:
    tokens = mid_tokens(sweepy)
    client = make(sweepy)
    seen = collect(client)
    try:
        await client.subscribe(tokens)
        await converged(client, sweepy, tokens)
        await step(sweepy, [m for m in sweepy.universe.markets if m.yes_token_id in tokens], 40)
        await converged(client, sweepy, tokens)
        assert client.stats.disagreements > 0, "the simulator sent no late removal"
        assert client.stats.gaps == 0 and client.stats.resyncs == 0  # all transient: none acted on
        statuses = [p.status for p in seen]
        assert PriceStatus.STALE in statuses and PriceStatus.RESYNCING not in statuses
    finally:
        await client.close()


async def test_a_disagreement_left_standing_by_a_quiet_token_is_resynced(sweepy: PolymarketSimulator) -> None:
    sweepy.sweep_lag_seconds = 3600.0  # the late removal never comes while the market is quiet
    market = next(m for m in sweepy.universe.markets if m.yes_token_id in mid_tokens(sweepy))
    client = make(sweepy, mismatch_seconds=0.3, mismatch_frames=100)
    try:
        await client.subscribe([market.yes_token_id])
        await converged(client, sweepy, [market.yes_token_id])
        while client.stats.disagreements == 0:
            await step(sweepy, [market], 1)
        # No more steps: only the housekeeping clock can end this dispute.
        await wsk_eventually(lambda: client.stats.gaps >= 1, what="the standing dispute to expire")
        await converged(client, sweepy, [market.yes_token_id])
        assert client.stats.resyncs >= 1
    finally:
        await client.close()


async def test_tick_change_without_a_book_is_repaired_promptly() -> None:
    """The venue sends no `book` after the change: the client resubscribes after
    `tick_book_grace`, long before `resync_timeout` (30 s here) would have."""
    async with PolymarketSimulator(build_universe(4, seed=11), rate=0, book_after_tick_share=0.0,
                                   ping_timeout=5.0) as sim:
        market = sim.universe.markets[0]
        client = make(sim, resync_timeout=30.0, tick_book_grace=0.2)
        seen = collect(client)
        try:
            await client.subscribe([market.yes_token_id])
            await converged(client, sim, [market.yes_token_id])
            new_tick = 10 if sim.tick_size(market.yes_token_id) == 100 else 100
            sim.change_tick_size(market.condition_id, new_tick)
            await wsk_eventually(lambda: any(p.status is PriceStatus.RESYNCING for p in seen),
                                 what="the tick epoch to start")
            await converged(client, sim, [market.yes_token_id], timeout=10.0)
            book = client.book(market.yes_token_id)
            assert isinstance(book, PolymarketOrderBook) and book.tick_size == new_tick
            assert client.stats.reconnects == 0
        finally:
            await client.close()


def test_only_a_frame_naming_both_best_prices_ends_a_dispute(channel: mc.MarketChannel) -> None:
    """An entry without (or with unreadable) best prices proves nothing: the book stays STALE."""
    dump(channel)
    channel.apply_frame(price_change(change(YES, "0.51", "9", "BUY", "0.51", "0.53")), 1)
    unchecked = change(YES, "0.45", "1", "BUY", "0.51", "0.52")
    del unchecked["best_ask"]
    assert channel.apply_frame(price_change(unchecked), 2).disputed == [YES]
    unreadable = change(YES, "0.45", "2", "BUY", "0.51", "0.52")
    unreadable["best_bid"] = ["0.51"]
    outcome = channel.apply_frame(price_change(unreadable), 3)
    assert outcome.disputed == [YES] and mc.BAD_FIELD in outcome.rejected
    assert channel.books[YES].status is PriceStatus.STALE
