"""Late removals of swept levels: the Polymarket simulator's briefly self-inconsistent frames.

Live data shows `price_change` entries whose `best_bid`/`best_ask` already reflect a
trade that swept a level while the entry removing that level arrives a few messages
later (protocols/polymarket.md appendix). The simulator does the same, on by default;
a client rebuilding the books sees the disagreement for a bounded number of frames,
and then the books equal the truth again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from markets.sim.polymarket import PolymarketSimulator
from tests.conftest import StartPoly
from tests.sim.conftest import ConnectPoly
from tests.sim.test_polymarket_sim import mid_range, subscribed, tokens
from tests.sim.test_polymarket_sim_support import ClientBooks

pytestmark = pytest.mark.timeout(30)


def mismatch_runs(events: list[Any], books: ClientBooks) -> dict[str, int]:
    """Apply `events`; per token, the longest run of consecutive `price_change` frames
    after which its book disagreed with the frame's own best prices."""
    longest: dict[str, int] = {}
    current: dict[str, int] = {}
    for event in events:
        before = len(books.mismatches)
        books.apply(event)
        if not isinstance(event, dict) or event.get("event_type") != "price_change":
            continue
        last = {e["asset_id"]: e for e in event["price_changes"]}
        bad = {e["asset_id"] for e in books.mismatches[before:] if last[e["asset_id"]] is e}
        for token in last:
            current[token] = current.get(token, 0) + 1 if token in bad else 0
            longest[token] = max(longest.get(token, 0), current[token])
    return longest


async def converge(sim: PolymarketSimulator, client: Any, books: ClientBooks, assets: list[str]) -> None:
    """Read until every book equals the truth (the simulator's timer sends what it still holds)."""
    async with asyncio.timeout(10):
        while any(books.books.get(a) != sim.true_book(a) for a in assets):
            for event in await client.barrier():
                books.apply(event)


async def test_swept_levels_are_removed_late_and_the_disagreement_is_bounded(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=4, trade_share=0.0, sweep_lag_share=1.0, sweep_lag_frames=3,
                           sweep_lag_seconds=0.05)
    markets = mid_range(sim)
    assets = tokens(*markets)
    books = ClientBooks()
    client = await subscribed(sim, poly_ws, assets, books)
    for _ in range(60):
        for market in markets:
            sim.step_market(market)
    events = await client.barrier()
    runs = mismatch_runs(events, books)
    assert books.mismatches, "no sweep was reported late"
    assert max(runs.values()) <= 3  # never longer than sweep_lag_frames frames
    assert books.trades, "a sweep is a trade: last_trade_price comes first"
    await converge(sim, client, books, assets)


async def test_a_quiet_market_gets_the_held_removal_by_the_timer(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=2, trade_share=0.0, sweep_lag_share=1.0, sweep_lag_frames=3,
                           sweep_lag_seconds=0.05)
    market = mid_range(sim)[0]
    assets = tokens(market)
    books = ClientBooks()
    client = await subscribed(sim, poly_ws, assets, books)
    while not books.mismatches:  # step until a sweep is held back, then go quiet
        sim.step_market(market)
        for event in await client.barrier():
            books.apply(event)
    await converge(sim, client, books, assets)


async def test_late_removals_can_be_turned_off(start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=3, trade_share=0.0, sweep_lag_share=0)
    books = ClientBooks()
    client = await subscribed(sim, poly_ws, tokens(*mid_range(sim)), books)
    for _ in range(60):
        for market in mid_range(sim):
            sim.step_market(market)
    for event in await client.barrier():
        books.apply(event)
    assert books.mismatches == []
