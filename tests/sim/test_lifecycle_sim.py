"""Games end in the simulators (issue 9, item 1): the shared timetable, Kalshi's silent close,
lifecycle channel and REST statuses, Polymarket's `market_resolved` and listing flags.

Timetables here run in seconds; every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import click
import pytest
from click.testing import CliRunner

from broker.sim_command import _parse_close_after
from broker.sim_command import sim as sim_command
from markets.sim.kalshi import KalshiSimulator
from markets.sim.lifecycle import Change, LifecycleConfig, Phase
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.universe import SimMarket, build_universe
from tests.conftest import RunningSimulators, StartKalshi, StartPoly
from tests.sim.conftest import ConnectKalshi, ConnectPoly

pytestmark = pytest.mark.timeout(60)

FAST = {"early_close_share": 0.0, "pause_share": 0.0, "listing_lag": 0.0}
"""A timetable with nothing but closes, determinations and settlements (tests add the rest)."""


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


async def get(http: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any]:
    async with http.get(url, params=params) as response:
        return response.status, await response.json()


async def kalshi_market(http: aiohttp.ClientSession, sim: KalshiSimulator, market: SimMarket) -> dict[str, Any]:
    status, body = await get(http, f"{sim.rest_url}/markets/{market.kalshi_ticker}")
    assert status == 200
    return body["market"]  # type: ignore[no-any-return]


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# -- the timetable ---------------------------------------------------------------------------------


def test_default_timetable_keeps_a_demo_open_for_hours_and_tests_can_make_it_seconds() -> None:
    universe = build_universe(20, seed=0)
    lifecycle = universe.lifecycle
    lifecycle.start(now=1_000_000.0)
    hour = 3600.0
    one_hour_in = [lifecycle.phase(m, now=1_000_000.0 + hour) for m in universe.markets]
    assert Phase.CLOSED not in one_hour_in and one_hour_in.count(Phase.OPEN) >= 17, one_hour_in
    assert all(lifecycle.phase(m, now=1_000_000.0 + 7 * hour) is Phase.SETTLED for m in universe.markets)

    fast_universe = build_universe(4, seed=0, lifecycle=LifecycleConfig(
        close_after=(1.0, 2.5), early_close_share=1.0, early_by=0.25, pause_share=1.0, pause_for=0.1,
        determine_after=0.5, settle_after=0.5))
    fast = fast_universe.lifecycle
    changes = fast.transitions()
    assert [t.at for t in changes] == sorted(t.at for t in changes)
    for market in fast_universe.markets:
        mine = [t.change for t in changes if t.market is market]
        assert mine == [Change.PAUSED, Change.RESUMED, Change.CLOSE_MOVED, Change.CLOSED,
                        Change.DETERMINED, Change.SETTLED]
        table = fast.timetable(market)
        assert table.close == table.advertised_close - 0.25 and table.settled <= 3.5
        assert table.close_known_at(0.0) == table.advertised_close and table.close_known_at(table.close) == table.close
    with pytest.raises(ValueError, match="close_after"):
        LifecycleConfig(close_after=(2.0, 1.0))


def test_both_venues_on_one_universe_share_one_timetable() -> None:
    universe = build_universe(3, seed=1, lifecycle=LifecycleConfig(close_after=(5.0, 9.0)))
    kalshi, poly = KalshiSimulator(universe), PolymarketSimulator(universe)
    universe.lifecycle.start(now=100.0)
    universe.lifecycle.start(now=500.0)  # a second simulator starting later keeps the first epoch
    assert kalshi.universe.lifecycle is poly.universe.lifecycle and universe.lifecycle.epoch == 100.0


# -- Kalshi --------------------------------------------------------------------------------------


async def test_kalshi_close_is_silent_on_the_book_channel_and_lifecycle_and_rest_follow(
        start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi, http: aiohttp.ClientSession) -> None:
    sim = await start_kalshi(2, lifecycle=LifecycleConfig(close_after=(2.5, 2.5), determine_after=0.5,
                                                          settle_after=0.5, **FAST), rate=20.0)
    market, other = sim.universe.markets
    wire = await kalshi_ws(sim)
    replies, _ = await wire.subscribe(channels=["orderbook_delta"], market_tickers=[market.kalshi_ticker])
    book_sid = replies[0]["msg"]["sid"]
    replies, _ = await wire.subscribe(channels=["market_lifecycle_v2"])
    assert replies[0]["type"] == "subscribed"
    lifecycle_sid = replies[0]["msg"]["sid"]
    opened = await kalshi_market(http, sim, market)
    assert opened["status"] == "active" and opened["result"] == ""
    assert unix(opened["close_time"]) == int(sim.universe.lifecycle.close_time(market))

    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while sum(f["type"] == "market_lifecycle_v2" for f in frames) < 4:  # both markets: determined, settled
            frames.append(await wire.recv(timeout=20))
    events = [(f["msg"]["market_ticker"], f["msg"]["event_type"]) for f in frames if f["type"] == "market_lifecycle_v2"]
    assert sorted(events) == sorted((m.kalshi_ticker, kind) for m in (market, other) for kind in ("determined", "settled")), \
        "every market's events, none for the close itself"
    lifecycle_frames = [f for f in frames if f["sid"] == lifecycle_sid]
    assert [f["seq"] for f in lifecycle_frames] == list(range(1, 5))
    determined = next(f for f in lifecycle_frames if f["msg"]["event_type"] == "determined"
                      and f["msg"]["market_ticker"] == market.kalshi_ticker)
    outcome = "yes" if sim.universe.lifecycle.timetable(market).yes_wins else "no"
    assert determined["msg"]["result"] == outcome
    deltas = [i for i, f in enumerate(frames) if f["sid"] == book_sid and f["type"] == "orderbook_delta"]
    assert deltas, "the book moved while the game was open"
    assert max(deltas) < frames.index(determined), "no book frame after the close"
    assert sim.step_market(market) == [], "a closed market's book never moves"
    settled = await kalshi_market(http, sim, market)
    assert settled["status"] == "finalized" and settled["result"] == outcome


async def test_kalshi_pause_and_reactivation_are_announced_and_rest_shows_inactive(
        start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi, http: aiohttp.ClientSession) -> None:
    sim = await start_kalshi(1, lifecycle=LifecycleConfig(  # paused from 3 s to 4 s
        close_after=(10.0, 10.0), determine_after=60, settle_after=60, early_close_share=0.0, pause_share=1.0,
        pause_for=1.0, listing_lag=0.0))
    market = sim.universe.markets[0]
    wire = await kalshi_ws(sim)
    await wire.subscribe(channels=["market_lifecycle_v2"])
    first = await wire.recv(timeout=10)
    assert first["msg"] == {"market_ticker": market.kalshi_ticker, "event_type": "deactivated", "is_deactivated": True}
    assert (await kalshi_market(http, sim, market))["status"] == "inactive"
    assert sim.step_market(market) == [], "a paused market's book never moves"
    _, listed = await get(http, f"{sim.rest_url}/markets", status="paused")
    assert [m["ticker"] for m in listed["markets"]] == [market.kalshi_ticker]
    second = await wire.recv(timeout=10)
    assert second["msg"]["event_type"] == "activated" and second["seq"] == first["seq"] + 1
    assert (await kalshi_market(http, sim, market))["status"] == "active"


async def test_kalshi_early_close_is_announced_with_the_new_close_time(
        start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi, http: aiohttp.ClientSession) -> None:
    sim = await start_kalshi(1, lifecycle=LifecycleConfig(
        close_after=(4.0, 4.0), early_close_share=1.0, early_by=1.5, pause_share=0.0, determine_after=60,
        settle_after=60, listing_lag=0.0))
    market = sim.universe.markets[0]
    advertised = sim.universe.lifecycle.close_time(market)
    assert unix((await kalshi_market(http, sim, market))["close_time"]) == int(advertised)
    wire = await kalshi_ws(sim)
    await wire.subscribe(channels=["market_lifecycle_v2"])
    frame = await wire.recv(timeout=10)
    assert frame["msg"]["event_type"] == "close_date_updated"
    lifecycle = sim.universe.lifecycle
    assert frame["msg"]["close_ts"] == int(lifecycle.at(lifecycle.timetable(market).close)) < advertised
    now = await kalshi_market(http, sim, market)
    assert now["status"] == "closed" and unix(now["close_time"]) == frame["msg"]["close_ts"]


async def test_kalshi_lifecycle_takes_no_market_filter(start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi(2, lifecycle=LifecycleConfig(close_after=(60.0, 60.0)))
    wire = await kalshi_ws(sim)
    replies, _ = await wire.subscribe(channels=["market_lifecycle_v2"],
                                      market_tickers=[sim.universe.markets[0].kalshi_ticker])
    assert replies[0]["type"] == "error" and "not supported" in replies[0]["msg"]["msg"]


async def test_kalshi_open_listing_lags_a_just_closed_market(
        start_kalshi: StartKalshi, http: aiohttp.ClientSession) -> None:
    sim = await start_kalshi(2, lifecycle=LifecycleConfig(
        close_after=(0.3, 60.0), determine_after=60, settle_after=60, early_close_share=0.0, pause_share=0.0,
        listing_lag=30.0))
    closed, still_open = sim.universe.markets
    await until(lambda: sim.universe.lifecycle.phase(closed) is Phase.CLOSED, "the first close")
    _, listing = await get(http, f"{sim.rest_url}/markets", status="open")
    lagging = {m["ticker"]: m for m in listing["markets"]}
    assert set(lagging) == {closed.kalshi_ticker, still_open.kalshi_ticker}, "the open listing still has it"
    assert lagging[closed.kalshi_ticker]["status"] == "active"
    assert unix(lagging[closed.kalshi_ticker]["close_time"]) <= time.time(), "only its close_time gives it away"
    assert (await kalshi_market(http, sim, closed))["status"] == "closed"
    _, closed_listing = await get(http, f"{sim.rest_url}/markets", status="closed")
    assert [m["ticker"] for m in closed_listing["markets"]] == [closed.kalshi_ticker]


async def test_kalshi_serves_an_event_by_ticker_and_the_series(
        start_kalshi: StartKalshi, http: aiohttp.ClientSession) -> None:
    sim = await start_kalshi(5, lifecycle=LifecycleConfig())
    market = sim.universe.markets[0]
    status, body = await get(http, f"{sim.rest_url}/events/{market.event_ticker}")
    assert status == 200 and body["event"]["event_ticker"] == market.event_ticker
    assert "markets" not in body["event"] and [m["ticker"] for m in body["markets"]] == [market.kalshi_ticker]
    _, nested = await get(http, f"{sim.rest_url}/events/{market.event_ticker}", with_nested_markets="true")
    assert [m["ticker"] for m in nested["event"]["markets"]] == [market.kalshi_ticker]
    assert (await get(http, f"{sim.rest_url}/events/NO-SUCH-EVENT"))[0] == 404

    _, listing = await get(http, f"{sim.rest_url}/series")
    tickers = [s["ticker"] for s in listing["series"]]
    assert tickers == list(dict.fromkeys(m.series_ticker for m in sim.universe.markets))
    _, basketball = await get(http, f"{sim.rest_url}/series", tags="Basketball")
    assert [s["ticker"] for s in basketball["series"]] == ["KXNBAGAME"]
    assert (await get(http, f"{sim.rest_url}/series", category="Politics"))[1] == {"series": []}
    status, one = await get(http, f"{sim.rest_url}/series/{market.series_ticker}")
    assert status == 200 and one["series"]["ticker"] == market.series_ticker and one["series"]["category"] == "Sports"
    assert (await get(http, f"{sim.rest_url}/series/KXNOPE"))[0] == 404


# -- Polymarket ------------------------------------------------------------------------------------


async def test_polymarket_resolution_reaches_custom_feature_sockets_and_listings_follow(
        start_poly: StartPoly, poly_ws: ConnectPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(2, lifecycle=LifecycleConfig(close_after=(2.0, 60.0), determine_after=1.0,
                                                        settle_after=60, **FAST))
    market = sim.universe.markets[0]
    listed = await gamma_market(http, sim, market)
    assert (listed["closed"], listed["acceptingOrders"], listed["active"]) == (False, True, True)
    custom, plain = await poly_ws(sim), await poly_ws(sim)
    await custom.initial([market.yes_token_id], custom_feature_enabled=True)
    await plain.initial([market.yes_token_id])
    await custom.barrier()
    await plain.barrier()

    await until(lambda: sim.universe.lifecycle.phase(market) is Phase.CLOSED, "the game to end")
    over = await gamma_market(http, sim, market)
    assert (over["closed"], over["acceptingOrders"]) == (False, False), "game over: no orders, not yet resolved"
    assert sim.step_market(market) == [], "no book changes once the game is over"
    resolved = await custom.recv(timeout=10)
    assert resolved["event_type"] == "market_resolved" and resolved["market"] == market.condition_id
    assert resolved["assets_ids"] == [market.yes_token_id, market.no_token_id]
    yes_wins = sim.universe.lifecycle.timetable(market).yes_wins
    assert resolved["winning_asset_id"] == (market.yes_token_id if yes_wins else market.no_token_id)
    assert await plain.barrier() == [], "without custom_feature_enabled nothing announces the resolution"

    done = await gamma_market(http, sim, market, closed="true")
    assert (done["closed"], done["acceptingOrders"]) == (True, False)
    _, default_listing = await get(http, f"{sim.gamma_url}/markets")
    assert market.condition_id not in {m["conditionId"] for m in default_listing}, "closed=false by default"
    status, clob = await get(http, f"{sim.clob_url}/markets/{market.condition_id}")
    assert status == 200 and clob["closed"] is True and clob["accepting_orders"] is False
    assert [t["winner"] for t in clob["tokens"]] == [yes_wins, not yes_wins]
    assert (await get(http, f"{sim.clob_url}/book", token_id=market.yes_token_id))[0] == 404


async def gamma_market(http: aiohttp.ClientSession, sim: PolymarketSimulator, market: SimMarket,
                       **params: str) -> dict[str, Any]:
    status, docs = await get(http, f"{sim.gamma_url}/markets", condition_ids=market.condition_id, **params)
    assert status == 200 and len(docs) == 1, docs
    return docs[0]  # type: ignore[no-any-return]


async def test_polymarket_ignores_a_kalshi_pause(running_simulators: RunningSimulators) -> None:
    universe = build_universe(1, seed=5, lifecycle=LifecycleConfig(
        close_after=(30.0, 30.0), pause_share=1.0, pause_for=20.0, early_close_share=0.0))
    universe.lifecycle.start(now=time.time() - 10.0)  # inside the pause (9 s to 29 s); the simulator keeps it
    sim = await running_simulators.start(PolymarketSimulator(universe, seed=5, rate=0.0))
    market = universe.markets[0]
    assert universe.lifecycle.phase(market) is Phase.PAUSED
    assert any(sim.step_market(market) for _ in range(50)), "Polymarket has no exchange pause"


def test_arbees_sim_takes_the_close_window() -> None:
    refused = CliRunner().invoke(sim_command, ["--close-after", "9,3"])
    assert refused.exit_code == 2 and "FIRST,LAST seconds with 0 < FIRST <= LAST" in refused.output
    ctx = click.Context(sim_command)
    assert _parse_close_after(ctx, sim_command.params[0], "5,10") == LifecycleConfig(close_after=(5.0, 10.0))
