"""The Kalshi simulator's command limits (errors 27 and 26) and JSON-number spelling.

The venue documents error 27 ("Too many requests") and 26 ("Subscription market
limit exceeded") without numbers (protocols/kalshi.md 7.2 and appendix); the
simulator enforces configurable ones so a client's pacing can be tested. Prices and
counts have also been seen as JSON numbers, which the simulator sends sometimes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from markets.sim.kalshi import CommandLimits

if TYPE_CHECKING:
    from tests.conftest import StartKalshi
    from tests.sim.conftest import ClientBook, ConnectKalshi

pytestmark = pytest.mark.timeout(30)

# A refill this slow adds no token while a test runs, so counts are exact even on a slow machine.
NO_REFILL = 0.001


async def test_commands_past_the_rate_limit_get_error_27_and_are_not_executed(
        start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi(command_limits=CommandLimits(commands_per_second=NO_REFILL, command_burst=3))
    client = await kalshi_ws(sim)
    ticker = sim.universe.markets[0].kalshi_ticker
    ids = [await client.command("subscribe", {"channels": ["orderbook_delta"], "market_ticker": ticker})
           for _ in range(5)]
    replies = {}
    while len(replies) < 5:
        frame = await client.recv()
        if frame.get("id") in ids and frame["type"] in ("subscribed", "error"):
            replies[frame["id"]] = frame
    assert [replies[i]["type"] for i in ids] == ["subscribed"] * 3 + ["error"] * 2
    assert [replies[i]["msg"]["code"] for i in ids[3:]] == [27, 27]
    assert replies[ids[3]]["msg"]["msg"] == "Too many requests"
    assert sim.commands_refused == 2
    assert sim.subscribers("orderbook_delta", ticker) == 3  # the refused ones subscribed nothing


async def test_markets_past_the_connection_limit_get_error_26(
        start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi) -> None:
    sim = await start_kalshi(n_markets=4, command_limits=CommandLimits(max_markets=3))
    tickers = [m.kalshi_ticker for m in sim.universe.markets]
    client = await kalshi_ws(sim)
    replies, _ = await client.subscribe(channels=["orderbook_delta"], market_tickers=tickers[:3])
    assert [r["type"] for r in replies] == ["subscribed"]
    sid = replies[0]["msg"]["sid"]
    refused, _ = await client.subscribe(channels=["orderbook_delta"], market_ticker=tickers[3])
    assert refused[0]["type"] == "error" and refused[0]["msg"]["code"] == 26
    added = await client.command("update_subscription", {"sid": sid, "action": "add_markets",
                                                         "market_tickers": [tickers[3]]})
    _, reply = await client.until_reply(added)
    assert reply["type"] == "error" and reply["msg"]["code"] == 26
    assert sim.subscribers("orderbook_delta", tickers[3]) == 0
    # Room again once a market is dropped: the limit counts what is subscribed now.
    removed = await client.command("update_subscription", {"sid": sid, "action": "delete_markets",
                                                           "market_tickers": [tickers[0]]})
    await client.until_reply(removed)
    again, _ = await client.subscribe(channels=["orderbook_delta"], market_ticker=tickers[3])
    assert again[0]["type"] == "subscribed"


async def test_limits_are_on_by_default_and_can_be_turned_off(start_kalshi: StartKalshi) -> None:
    assert (await start_kalshi()).command_limits == CommandLimits()
    assert (await start_kalshi(command_limits=None)).command_limits is None


async def test_prices_and_counts_sometimes_arrive_as_json_numbers(
        start_kalshi: StartKalshi, kalshi_ws: ConnectKalshi, new_book: type[ClientBook]) -> None:
    sim = await start_kalshi(numeric_share=1.0)
    tickers = [m.kalshi_ticker for m in sim.universe.markets]
    client = await kalshi_ws(sim)
    _, first = await client.subscribe(channels=["orderbook_delta"], market_tickers=tickers, use_yes_price=False)
    for market in sim.universe.markets:
        for _ in range(20):
            sim.step_market(market)
    frames = first + await client.drain()
    book = new_book()
    deltas = 0
    for frame in frames:
        msg = frame["msg"]
        if frame["type"] == "orderbook_delta":
            deltas += 1
            assert isinstance(msg["price_dollars"], float) and isinstance(msg["delta_fp"], float)
        else:
            assert all(isinstance(x, float) for level in msg.get("yes_dollars_fp", []) for x in level)
        book.apply(frame)
    assert deltas > 40
    for ticker in tickers:
        assert book.books[ticker] == sim.book_levels(ticker)
