"""HybridKalshiClient against the Kalshi simulator: WebSocket prices, REST for the rest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from markets.kalshi.auth import KalshiCredentials
from markets.kalshi.client import HybridKalshiClient
from markets.models import TICKS_PER_DOLLAR, MarketPrice, PriceStatus
from markets.sim.kalshi.rest import RateLimit
from markets.sim.kalshi.simulator import KalshiSimulator
from markets.sim.universe import build_universe

UNLIMITED = RateLimit(read_refill=1e6, read_capacity=1e6, write_refill=1e6, write_capacity=1e6)


@pytest.fixture
async def sim(rest_kalshi_keys: tuple[str, Path, bytes]) -> AsyncIterator[KalshiSimulator]:
    """Books move only when the test steps them (rate 0), so each change is known."""
    async with KalshiSimulator(build_universe(4, seed=5), rate=0, rate_limit=UNLIMITED) as s:
        s.register_key(rest_kalshi_keys[0], rest_kalshi_keys[2])
        yield s


@pytest.fixture
async def hybrid(sim: KalshiSimulator, rest_kalshi_credentials: KalshiCredentials) -> AsyncIterator[HybridKalshiClient]:
    client = HybridKalshiClient(rest_kalshi_credentials, rest_url=sim.rest_url, ws_url=sim.ws_url,
                                rest_options={"read_rate": 1000, "backoff_initial": 0.001},
                                ws_options={"backoff_initial": 0.01, "backoff_max": 0.1})
    try:
        yield client
    finally:
        await client.close()


def truth(sim: KalshiSimulator, ticker: str) -> tuple[float, float]:
    yes, no = sim.book_levels(ticker)
    return max(yes) / TICKS_PER_DOLLAR, (TICKS_PER_DOLLAR - max(no)) / TICKS_PER_DOLLAR


async def next_live(prices: AsyncIterator[MarketPrice], wanted: set[str]) -> dict[str, MarketPrice]:
    """Read the stream until every wanted market has a LIVE price."""
    seen: dict[str, MarketPrice] = {}
    async with asyncio.timeout(10):
        async for price in prices:
            if price.status is PriceStatus.LIVE and price.market_id in wanted:
                seen[price.market_id] = price
                if wanted <= seen.keys():
                    return seen
    raise AssertionError("stream ended")


async def test_prices_come_from_the_stream_without_rest(hybrid: HybridKalshiClient, sim: KalshiSimulator) -> None:
    streamed = [m.kalshi_ticker for m in sim.universe.markets[:2]]
    prices = hybrid.stream_prices(streamed)
    try:
        first = await next_live(prices, set(streamed))
        assert hybrid.request_count == 1, "streaming uses no REST past one listing for the close times"
        for ticker in streamed:
            assert (first[ticker].yes_bid, first[ticker].yes_ask) == truth(sim, ticker)
            assert await hybrid.get_market_price(ticker) == first[ticker]
        assert hybrid.request_count == 1, "get_market_price was served from the WebSocket book"

        # Move one market until its top changes: the stream and get_market_price follow it.
        market = sim.universe.markets[0]
        before = truth(sim, market.kalshi_ticker)
        for _ in range(200):
            sim.step_market(market)
            if truth(sim, market.kalshi_ticker) != before:
                break
        expected = truth(sim, market.kalshi_ticker)
        assert expected != before
        async with asyncio.timeout(10):
            async for moved in prices:
                if moved.market_id == market.kalshi_ticker and (moved.yes_bid, moved.yes_ask) == expected:
                    break
        assert await hybrid.get_market_price(market.kalshi_ticker) == moved
        assert hybrid.request_count == 1
    finally:
        await prices.aclose()


async def test_unstreamed_or_stale_markets_fall_back_to_rest(hybrid: HybridKalshiClient, sim: KalshiSimulator) -> None:
    streamed, other = sim.universe.markets[0].kalshi_ticker, sim.universe.markets[3].kalshi_ticker
    prices = hybrid.stream_prices([streamed])
    try:
        await next_live(prices, {streamed})
        price = await hybrid.get_market_price(other)
        assert hybrid.request_count == 2, "a market that is not streamed costs one REST request"
        assert (price.market_id, (price.yes_bid, price.yes_ask)) == (other, truth(sim, other))

        book = hybrid.ws.book(streamed)
        assert book is not None
        book.mark_stale()  # as the watchdog does when the feed goes quiet
        price = await hybrid.get_market_price(streamed)
        assert hybrid.request_count == 3, "a book that is not LIVE is not trusted"
        assert price.status is PriceStatus.LIVE and (price.yes_bid, price.yes_ask) == truth(sim, streamed)
    finally:
        await prices.aclose()


async def test_queries_and_orders_use_rest(hybrid: HybridKalshiClient, sim: KalshiSimulator) -> None:
    assert len([m async for m in hybrid.iter_markets(page_size=3)]) == 4
    assert (await hybrid.get_balance())["balance"] > 0
    reply = await hybrid.place_order(sim.universe.markets[0].kalshi_ticker, "bid", "0.10", 1)
    assert sim.rest.orders[-1].order_id == reply["order_id"]


async def test_close_closes_both_transports(sim: KalshiSimulator, rest_kalshi_credentials: KalshiCredentials) -> None:
    client = HybridKalshiClient(rest_kalshi_credentials, rest_url=sim.rest_url, ws_url=sim.ws_url)
    ticker = sim.universe.markets[0].kalshi_ticker
    prices = client.stream_prices([ticker])
    await next_live(prices, {ticker})
    await client.get_market(ticker)
    session = client.session
    await client.close()
    assert session.closed and client.ws.closed
    async with asyncio.timeout(5):
        rest = [p async for p in prices]  # ends (no exception) once the client is closed
    assert all(p.status is PriceStatus.STALE for p in rest), "only the closing STALE marks may follow"
