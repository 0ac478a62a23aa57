"""Clients survive markets ending (issue 9, item 1), against the simulators over loopback.

A closed, settled, resolved or paused market is published CLOSED once, is no longer
subscribed or resynced, and is LIVE again only when the venue reopens it, through a
fresh snapshot. A Kalshi close has no event, so the client closes a market itself
when the close time it learned passes. Discovery skips markets that cannot trade.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.price_sources import _discover_kalshi_markets, _discover_polymarket_markets
from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.client import HybridKalshiClient
from markets.kalshi.lifecycle import is_streamable, market_closure
from markets.market_lifecycle import Closure, MarketLifecycle
from markets.models import MarketPrice, PriceStatus
from markets.polymarket.catalog import (
    OutcomeToken,
    PolymarketMarketInfo,
    why_not_streamable,
)
from markets.polymarket.client import HybridPolymarketClient, PolymarketClient
from markets.polymarket.ws_client import PolymarketWebSocketClient
from markets.sim.kalshi import KalshiSimulator
from markets.sim.lifecycle import LifecycleConfig, Phase
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.universe import SimMarket
from tests.clients.conftest import (
    WSK_FAST_OPTIONS,
    WskMakeClient,
    WskScriptedVenue,
    wsk_eventually,
)
from tests.clients.test_kalshi_ws_frames import start
from tests.conftest import StartKalshi, StartPoly

pytestmark = pytest.mark.timeout(60)

BOOK = "orderbook_delta"
QUIET = {"early_close_share": 0.0, "pause_share": 0.0, "listing_lag": 0.0}
POLY_FAST = {"backoff_initial": 0.01, "backoff_max": 0.1, "resync_timeout": 1.0, "ping_interval": 0.5}


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    """Clients a test opened; closed at teardown."""
    opened: list[Any] = []
    yield opened
    for client in opened:
        await client.close()


def record(client: Any) -> dict[str, list[PriceStatus]]:
    """Every status published, per market, in order."""
    seen: dict[str, list[PriceStatus]] = {}
    client.add_listener(lambda price: seen.setdefault(price.market_id, []).append(price.status))
    return seen


def status_of(client: Any, market_id: str) -> PriceStatus | None:
    price: MarketPrice | None = client.latest_price(market_id)
    return None if price is None else price.status


async def phase(sim: KalshiSimulator | PolymarketSimulator, market: SimMarket, wanted: Phase) -> None:
    await wsk_eventually(lambda: sim.universe.lifecycle.phase(market) is wanted, 20.0, f"{market} {wanted}")


# -- Kalshi ---------------------------------------------------------------------------------------------


async def test_kalshi_client_closes_a_market_when_its_close_time_passes_without_any_event(
        wsk_start_sim: StartKalshi, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(2, lifecycle=LifecycleConfig(close_after=(2.0, 60.0), determine_after=60,
                                                           settle_after=60, **QUIET))
    ending, other = (m.kalshi_ticker for m in sim.universe.markets)
    client = wsk_make_client(sim.ws_url)  # no lifecycle channel: nothing but the close time says it ended
    seen = record(client)
    client.set_close_time(ending, sim.universe.lifecycle.close_time(sim.universe.markets[0]))
    await client.subscribe([ending, other])
    await wsk_eventually(lambda: status_of(client, ending) is PriceStatus.CLOSED, 10.0, "the close")
    assert seen[ending][0] is PriceStatus.LIVE and seen[ending][-1] is PriceStatus.CLOSED
    await wsk_eventually(lambda: sim.subscribers(BOOK, ending) == 0, 5.0, "the unsubscribe on the wire")

    resyncs = client.stats.resyncs
    client.connections[0].request_reconnect("test")
    await wsk_eventually(lambda: client.stats.reconnects >= 1 and status_of(client, other) is PriceStatus.LIVE,
                         10.0, "the other market LIVE after a reconnect")
    assert sim.subscribers(BOOK, ending) == 0, "a reconnect does not resubscribe a closed market"
    assert seen[ending].count(PriceStatus.CLOSED) == 1 and seen[ending][-1] is PriceStatus.CLOSED
    assert client.stats.resyncs == resyncs and client.book(ending).status is PriceStatus.CLOSED  # type: ignore[union-attr]
    await client.unsubscribe([ending])
    assert client.book(ending) is None, "a closed market can still be unsubscribed"


async def test_kalshi_client_follows_pause_reactivation_and_determination_from_the_lifecycle_channel(
        wsk_start_sim: StartKalshi, wsk_make_client: WskMakeClient) -> None:
    sim = await wsk_start_sim(3, lifecycle=LifecycleConfig(  # paused 1.8-2.8 s, determined at 6.5 s
        close_after=(6.0, 6.0), pause_share=1.0, pause_for=1.0, determine_after=0.5, settle_after=60,
        early_close_share=0.0, listing_lag=0.0))
    market = sim.universe.markets[0]
    ticker = market.kalshi_ticker
    client = wsk_make_client(sim.ws_url, lifecycle=True)
    seen = record(client)
    await client.subscribe([ticker])
    await wsk_eventually(lambda: status_of(client, ticker) is PriceStatus.LIVE, 10.0, "the first snapshot")
    await wsk_eventually(lambda: status_of(client, ticker) is PriceStatus.CLOSED, 10.0, "the pause")
    await wsk_eventually(lambda: sim.subscribers(BOOK, ticker) == 0, 5.0, "the unsubscribe on the wire")
    await wsk_eventually(lambda: seen[ticker][-1] is PriceStatus.LIVE and len(seen[ticker]) > 2, 10.0,
                         "the reactivation")
    assert seen[ticker] == [PriceStatus.LIVE, PriceStatus.CLOSED, PriceStatus.RESYNCING, PriceStatus.LIVE], \
        "back only through a fresh snapshot"
    assert sim.subscribers(BOOK, ticker) == 1
    book = client.book(ticker)
    assert book is not None and (book.yes_bids, book.no_bids) == sim.book_levels(ticker)  # type: ignore[attr-defined]

    await wsk_eventually(lambda: status_of(client, ticker) is PriceStatus.CLOSED, 15.0, "the determination")
    client.connections[0].request_reconnect("test")
    # The lifecycle subscription goes after the books' on a new session: once the venue has it,
    # it has every book subscription the client sent.
    await wsk_eventually(lambda: client.stats.reconnects >= 1 and sim.connection_count == 1
                         and sim.subscribers("market_lifecycle_v2", ticker) == 1,
                         10.0, "the new session's lifecycle subscription")
    assert seen[ticker][4:] == [PriceStatus.CLOSED] and sim.subscribers(BOOK, ticker) == 0, "never LIVE again"
    assert all(client.book(m.kalshi_ticker) is None for m in sim.universe.markets[1:]), \
        "other markets' events on the shared channel are not ours"


async def test_kalshi_hybrid_learns_close_times_from_rest_and_never_streams_a_closed_market(
        wsk_start_sim: StartKalshi, wsk_credentials: KalshiCredentials, closing: list[Any]) -> None:
    sim = await wsk_start_sim(3, lifecycle=LifecycleConfig(  # closes at 0.3, 3.15 and 6 s; no event before 60 s
        close_after=(0.3, 6.0), determine_after=60, settle_after=60, **QUIET))
    closed, closing_soon, _ = sim.universe.markets
    await phase(sim, closed, Phase.CLOSED)
    hybrid = HybridKalshiClient(wsk_credentials, rest_url=sim.rest_url, ws_url=sim.ws_url,
                                ws_options=WSK_FAST_OPTIONS)
    closing.append(hybrid)
    seen = record(hybrid.ws)
    tickers = [closed.kalshi_ticker, closing_soon.kalshi_ticker]
    prices = hybrid.stream_prices(tickers)
    try:
        first = await anext(prices)
        assert (first.market_id, first.status) == (closed.kalshi_ticker, PriceStatus.CLOSED)
        await wsk_eventually(lambda: status_of(hybrid.ws, closing_soon.kalshi_ticker) is PriceStatus.CLOSED, 15.0,
                             "the silent close of the second market")
    finally:
        await prices.aclose()  # type: ignore[attr-defined]
    assert seen[closed.kalshi_ticker] == [PriceStatus.CLOSED], "a closed market is never LIVE"
    assert seen[closing_soon.kalshi_ticker] == [PriceStatus.LIVE, PriceStatus.CLOSED]
    assert sim.subscribers(BOOK, closed.kalshi_ticker) == 0, "never subscribed"
    await wsk_eventually(lambda: sim.subscribers(BOOK, closing_soon.kalshi_ticker) == 0, 5.0, "the unsubscribe")


async def test_kalshi_lifecycle_frames_are_checked_counted_and_filtered(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    a, b = "KXNBAGAME-26NOV25BOSLAL-BOS", "KXNBAGAME-26NOV25BOSLAL-LAL"
    client, server, prices = await start(wsk_venue, wsk_make_client, [a, b], lifecycle=True)
    command = await server.command("subscribe")
    assert command["params"] == {"channels": ["market_lifecycle_v2"]}, "no ticker filter: the channel takes none"
    await server.ack(command["id"], 9, "market_lifecycle_v2")

    async def lifecycle(seq: int, msg: Any, frame_type: str = "market_lifecycle_v2") -> None:
        await server.conn.send({"type": frame_type, "sid": 9, "seq": seq, "msg": msg})

    await lifecycle(1, {"market_ticker": "KXOTHER-26NOV25-X", "event_type": "determined", "result": "yes"})
    await lifecycle(2, {"event_ticker": "KXNBAGAME-26NOV25BOSLAL"}, "event_lifecycle")
    await lifecycle(3, {"market_ticker": a})  # no event_type
    await lifecycle(4, {"market_ticker": a, "event_type": "close_date_updated", "close_ts": "soon"})
    await lifecycle(7, {"market_ticker": a, "event_type": "metadata_updated"})
    await wsk_eventually(lambda: client.stats.gaps == 1, what="the gap (seq 4 -> 7) to be counted")
    assert client.stats.rejected["bad_lifecycle"] == 2
    assert status_of(client, a) is PriceStatus.LIVE and status_of(client, b) is PriceStatus.LIVE

    await lifecycle(8, {"market_ticker": a, "event_type": "close_date_updated", "close_ts": int(time.time()) - 1})
    await wsk_eventually(lambda: status_of(client, a) is PriceStatus.CLOSED, what="the early close")
    unsubscribe = await server.command("unsubscribe")
    assert unsubscribe["params"] == {"sids": [1]}, "its sid (one market per sid here) is dropped"
    assert status_of(client, b) is PriceStatus.LIVE
    assert [p.status for p in prices if p.market_id == a].count(PriceStatus.CLOSED) == 1

    await lifecycle(9, {"market_ticker": a, "event_type": "close_date_updated", "close_ts": int(time.time()) + 3600})
    resubscribe = await server.command("subscribe")  # the venue moved the close back: it trades again
    assert resubscribe["params"]["market_tickers"] == [a]
    await wsk_eventually(lambda: status_of(client, a) is PriceStatus.RESYNCING, what="the reopening")
    await server.ack(resubscribe["id"], 10)
    await server.snapshot(10, 1, a, yes=[["0.30", "1.00"]], no=[["0.60", "2.00"]])
    await wsk_eventually(lambda: status_of(client, a) is PriceStatus.LIVE, what="the fresh snapshot")
    assert [p.status for p in prices if p.market_id == a] == [
        PriceStatus.LIVE, PriceStatus.CLOSED, PriceStatus.RESYNCING, PriceStatus.LIVE]
    assert client.book(a).best_bid == (3000, 100)  # type: ignore[union-attr]


# -- Polymarket -------------------------------------------------------------------------------------------


async def test_polymarket_client_closes_a_resolved_market_once_and_never_subscribes_a_closed_listing(
        start_poly: StartPoly, closing: list[Any]) -> None:
    sim = await start_poly(2, lifecycle=LifecycleConfig(close_after=(1.5, 60.0), determine_after=0.5,
                                                        settle_after=60, **QUIET))
    ending, other = sim.universe.markets

    def client() -> tuple[PolymarketWebSocketClient, dict[str, list[PriceStatus]]]:
        rest = PolymarketClient(clob_url=sim.clob_url, gamma_url=sim.gamma_url, rate=1000)
        ws = PolymarketWebSocketClient(url=sim.ws_url, resolver=rest, **POLY_FAST)
        closing.extend((ws, rest))
        return ws, record(ws)

    first, seen = client()
    await first.subscribe([ending.condition_id, other.condition_id])
    await wsk_eventually(lambda: status_of(first, ending.condition_id) is PriceStatus.LIVE, 10.0, "the first book")
    await wsk_eventually(lambda: status_of(first, ending.condition_id) is PriceStatus.CLOSED, 15.0, "the resolution")
    await wsk_eventually(lambda: sim.subscribers(ending.yes_token_id) == 0, 5.0, "the unsubscribe")
    assert seen[ending.condition_id] == [PriceStatus.LIVE, PriceStatus.CLOSED]
    assert status_of(first, other.condition_id) is PriceStatus.LIVE and sim.subscribers(other.yes_token_id) == 1

    late, late_seen = client()
    await late.subscribe([ending.condition_id])
    assert late_seen[ending.condition_id] == [PriceStatus.CLOSED], "listed as closed: CLOSED at once"
    assert sim.subscribers(ending.yes_token_id) == 0, "and never subscribed"


# -- discovery ----------------------------------------------------------------------------------------------


async def test_discovery_skips_markets_that_cannot_trade(
        wsk_start_sim: StartKalshi, start_poly: StartPoly, wsk_credentials: KalshiCredentials,
        closing: list[Any]) -> None:
    config = LifecycleConfig(close_after=(0.3, 60.0), determine_after=60, settle_after=60, early_close_share=0.0,
                             pause_share=0.0, listing_lag=30.0)
    kalshi, poly = await wsk_start_sim(3, lifecycle=config), await start_poly(3, lifecycle=config)
    await phase(kalshi, kalshi.universe.markets[0], Phase.CLOSED)
    await phase(poly, poly.universe.markets[0], Phase.CLOSED)
    hybrid = HybridKalshiClient(wsk_credentials, rest_url=kalshi.rest_url, ws_url=kalshi.ws_url)
    poly_client = HybridPolymarketClient(clob_url=poly.clob_url, gamma_url=poly.gamma_url, ws_url=poly.ws_url)
    closing.extend((hybrid, poly_client))
    assert await _discover_kalshi_markets(hybrid, 10) == tuple(m.kalshi_ticker for m in kalshi.universe.markets[1:]), \
        "the lagging open listing still has the closed market; its close_time gives it away"
    assert await _discover_polymarket_markets(poly_client, 10) == tuple(
        m.condition_id for m in poly.universe.markets[1:]), "a game that is over accepts no orders"


def test_the_discovery_rules() -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    later, earlier = (now + timedelta(hours=2)).isoformat(), (now - timedelta(seconds=1)).isoformat()
    assert is_streamable({"status": "active", "close_time": later}, now)
    assert not is_streamable({"status": "active", "close_time": earlier}, now)
    assert not is_streamable({"status": "initialized", "close_time": later}, now)
    assert market_closure({"status": "inactive", "close_time": later}, now) is Closure.PAUSED
    assert market_closure({"status": "finalized"}, now) is Closure.FINAL
    assert market_closure({"status": "active", "close_time": "tomorrow"}, now) is Closure.FINAL
    assert market_closure({"status": "active", "close_time": "2026-12-01T00:00:00"}, now) is Closure.FINAL, \
        "a close time without a zone is not guessed"
    token = (OutcomeToken("1", "Yes", 0), OutcomeToken("2", "No", 1))
    assert why_not_streamable(PolymarketMarketInfo("0x1", token, active=True, closed=False, accepting_orders=True,
                                                   enable_order_book=True)) is None
    assert why_not_streamable(PolymarketMarketInfo("0x1", token, closed=True)) == "closed"
    assert why_not_streamable(PolymarketMarketInfo("0x1", token, accepting_orders=False)) == "not accepting orders"
    assert why_not_streamable(PolymarketMarketInfo("0x1", token, enable_order_book=False)) == "no order book"
    assert why_not_streamable(PolymarketMarketInfo("0x1", ())) == "no CLOB tokens"


def test_market_lifecycle_bookkeeping() -> None:
    lifecycle = MarketLifecycle()
    lifecycle.set_close_time("A", 10.0)
    lifecycle.set_close_time("B", 20.0)
    lifecycle.set_close_time("A", 30.0)  # moved: the entry at 10 s no longer counts
    assert lifecycle.due(25 * 10**9) == ["B"] and lifecycle.due(25 * 10**9) == []
    assert lifecycle.due(30 * 10**9) == ["A"]
    lifecycle.record_close("C", Closure.FINAL)
    lifecycle.record_close("C", Closure.PAUSED)
    assert lifecycle.closure("C") is Closure.FINAL and not lifecycle.reopen("C", Closure.PAUSED, 0)
    lifecycle.forget("C")
    assert lifecycle.closure("C") is None and lifecycle.closed_reason("C", 0) is None
    lifecycle.record_close("D", Closure.PAUSED)
    lifecycle.set_close_time("D", 5.0)
    assert not lifecycle.reopen("D", Closure.PAUSED, 6 * 10**9), "its close time passed while it was paused"
    assert lifecycle.closure("D") is Closure.CLOSE_TIME
    assert lifecycle.closed_reason("E", 0) is None
    with pytest.raises(ValueError, match="no timezone"):
        lifecycle.set_close_time("E", datetime(2026, 11, 30))
