"""The Polymarket simulator's market channel, checked with a plain aiohttp client."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

from markets.sim.ladder import LevelChange
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.universe import SimMarket
from tests.conftest import StartPoly
from tests.sim.conftest import ConnectPoly
from tests.sim.test_polymarket_sim_support import ClientBooks, PolyClient, parse_levels
from tests.sim.units import ticks

HASH = re.compile(r"^[0-9a-f]{40}$")


def tokens(*markets: SimMarket) -> list[str]:
    return [t for m in markets for t in (m.yes_token_id, m.no_token_id)]


def mid_range(sim: PolymarketSimulator) -> list[SimMarket]:
    """Markets that start away from the tails, so no tick size change interferes."""
    return [m for m in sim.universe.markets if m.price_level_structure == "linear_cent"]


async def subscribed(sim: PolymarketSimulator, connect: ConnectPoly, assets: list[str],
                     books: ClientBooks | None = None, **options: object) -> PolyClient:
    """A client subscribed to `assets` whose initial dump has been applied to `books`."""
    client = await connect(sim)
    await client.initial(assets, **options)
    if books is not None:
        books.apply(await client.recv())
    return client


async def step_everything(sim: PolymarketSimulator, connect: ConnectPoly, rounds: int
                          ) -> tuple[ClientBooks, list[Any]]:
    """Subscribe to every token, step every market `rounds` times; (books after the
    initial dump, every event sent up to a barrier)."""
    books = ClientBooks()
    client = await subscribed(sim, connect, tokens(*sim.universe.markets), books)
    for _ in range(rounds):
        for market in sim.universe.markets:
            sim.step_market(market)
    return books, await client.barrier()


def assert_rebuilt(sim: PolymarketSimulator, books: ClientBooks, events: list[Any]) -> None:
    """Applying `events` leaves every token's book equal to the truth, with no best bid/ask mismatch."""
    for event in events:
        books.apply(event)
    assert books.mismatches == []
    for token in tokens(*sim.universe.markets):
        assert books.books[token] == sim.true_book(token)


async def test_initial_dump_is_one_array_of_books_worst_to_best(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=2)
    a, b = sim.universe.markets
    client = await poly_ws(sim)
    await client.initial(tokens(a, b), initial_dump=True)
    dump = await client.recv()
    assert isinstance(dump, list) and [book["event_type"] for book in dump] == ["book"] * 4
    assert [book["asset_id"] for book in dump] == tokens(a, b)
    for book in dump:
        market = sim.universe.by_token[book["asset_id"]]
        assert book["market"] == market.condition_id
        assert book["timestamp"].isdigit() and len(book["timestamp"]) == 13
        assert HASH.match(book["hash"])
        # The AsyncAPI schema's fields, plus the last trade only the initial dump carries.
        assert set(book) <= {"event_type", "asset_id", "market", "bids", "asks", "timestamp", "hash",
                             "last_trade_price"}
        got = (parse_levels(book["bids"], bids=True), parse_levels(book["asks"], bids=False))
        assert got == sim.true_book(book["asset_id"])
        assert max(got[0]) < min(got[1]), "book crossed"
    yes_bids, yes_asks = sim.true_book(a.yes_token_id)
    no_bids, no_asks = sim.true_book(a.no_token_id)
    assert no_bids == {10_000 - p: s for p, s in yes_asks.items()}
    assert no_asks == {10_000 - p: s for p, s in yes_bids.items()}


async def test_price_changes_mirror_tokens_and_rebuild_the_true_books(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    # No late sweep removals here: they disagree on purpose (test_polymarket_sim_sweeps.py).
    sim = await start_poly(n_markets=3, trade_share=0.3, book_after_tick_delay=0.0, sweep_lag_share=0)
    books, events = await step_everything(sim, poly_ws, rounds=60)
    changes = [e for e in events if e["event_type"] == "price_change"]
    assert len(changes) > 100
    hashes: list[str] = []
    for event in changes:
        market = sim.universe.by_condition[event["market"]]
        entries = event["price_changes"]
        assert event["timestamp"].isdigit()
        yes = [e for e in entries if e["asset_id"] == market.yes_token_id]
        no = [e for e in entries if e["asset_id"] == market.no_token_id]
        assert len(yes) == len(no) == len(entries) // 2 > 0
        for y, n in zip(yes, no, strict=True):
            assert ticks(n["price"]) == 10_000 - ticks(y["price"])
            assert n["size"] == y["size"] and {y["side"], n["side"]} == {"BUY", "SELL"}
            assert (ticks(n["best_bid"]), ticks(n["best_ask"])) == (
                10_000 - ticks(y["best_ask"]), 10_000 - ticks(y["best_bid"]))
        hashes.extend(e["hash"] for e in entries)
    assert_rebuilt(sim, books, events)
    assert len(set(hashes)) == len(hashes) and all(HASH.match(h) for h in hashes)
    logged = {record.key for record in sim.send_log.records()}
    assert set(hashes) <= logged
    assert sim.send_log.lookup(hashes[-1], venue="polymarket") is not None


async def test_only_subscribed_tokens_get_events(start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=2)
    a, b = sim.universe.markets
    client = await subscribed(sim, poly_ws, [a.no_token_id], ClientBooks())
    for _ in range(20):
        sim.step_market(a)
        sim.step_market(b)
    events = await client.barrier()
    assets = {e["asset_id"] for ev in events if ev["event_type"] == "price_change"
              for e in ev["price_changes"]}
    assert assets == {a.no_token_id}
    assert {ev["asset_id"] for ev in events if "asset_id" in ev} <= {a.no_token_id}


async def test_repeated_initial_message_is_an_invalid_operation(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=1)
    market = sim.universe.markets[0]
    client = await subscribed(sim, poly_ws, [market.yes_token_id], ClientBooks())
    await client.initial([market.no_token_id])
    assert await client.recv() == "INVALID OPERATION"
    await client.ws.send_str("not json")
    assert await client.recv() == "INVALID OPERATION"
    await client.send({"assets_ids": "x", "operation": "subscribe"})
    assert await client.recv() == "INVALID OPERATION"
    assert await client.barrier() == []  # the connection is still fine


async def test_operation_before_the_initial_message_is_invalid(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=1)
    client = await poly_ws(sim)
    await client.send({"assets_ids": [sim.universe.markets[0].yes_token_id], "operation": "subscribe"})
    assert await client.recv() == "INVALID OPERATION"


async def test_dynamic_subscribe_sends_books_and_unsubscribe_stops_events(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=3, trade_share=0.0)
    a, b = mid_range(sim)
    books = ClientBooks()
    client = await subscribed(sim, poly_ws, [a.yes_token_id], books)
    await client.send({"assets_ids": [b.yes_token_id, a.yes_token_id], "operation": "subscribe"})
    dump = await client.recv()
    assert [book["asset_id"] for book in dump] == [b.yes_token_id]  # no new book for a
    books.apply(dump)
    sim.step_market(b)
    events = await client.barrier()
    assert events and all(e["asset_id"] == b.yes_token_id
                          for ev in events for e in ev["price_changes"])
    for event in events:
        books.apply(event)
    await client.send({"assets_ids": [a.yes_token_id], "operation": "unsubscribe"})
    await client.barrier()
    for _ in range(10):
        sim.step_market(a)
    sim.step_market(b)
    events = await client.barrier()
    assert {e["asset_id"] for ev in events for e in ev["price_changes"]} == {b.yes_token_id}
    for event in events:
        books.apply(event)
    assert books.books[b.yes_token_id] == sim.true_book(b.yes_token_id)


async def test_initial_dump_can_be_declined(start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=1, trade_share=0.0)
    market = sim.universe.markets[0]
    client = await poly_ws(sim)
    await client.initial([market.yes_token_id], initial_dump=False)
    assert await client.barrier() == []
    sim.step_market(market)
    assert [e["event_type"] for e in await client.barrier()] == ["price_change"]


async def test_snapshots_past_the_asset_limit_are_silently_missing(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=2, max_assets_per_connection=3, trade_share=0.0)
    a, b = sim.universe.markets
    books = ClientBooks()
    client = await subscribed(sim, poly_ws, tokens(a, b), books)
    assert set(books.books) == set(tokens(a, b)[:3])
    sim.step_market(b)
    events = await client.barrier()
    assets = {e["asset_id"] for ev in events for e in ev["price_changes"]}
    assert b.no_token_id in assets, "updates still flow for assets past the limit"
    for event in events:
        books.apply(event)
    assert books.skipped > 0  # entries for the token that never got a book


async def test_ping_keeps_the_socket_open_and_silence_gets_it_dropped(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=1, ping_timeout=0.4)
    pinger, silent = await poly_ws(sim), await poly_ws(sim)

    async def keep_alive() -> None:
        for _ in range(8):
            await pinger.ws.send_str("PING")
            assert await pinger.recv() == "PONG"
            await asyncio.sleep(0.1)

    closed = asyncio.create_task(asyncio.wait_for(silent.ws.receive(), 3.0))
    await keep_alive()  # 0.8 s: twice the timeout
    assert not pinger.ws.closed
    message = await closed
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert silent.ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_tick_size_change_is_followed_by_a_fresh_book(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=1, book_after_tick_delay=0.05, book_after_tick_share=1.0)
    market = sim.universe.markets[0]
    books = ClientBooks()
    client = await subscribed(sim, poly_ws, tokens(market), books)
    ladder = sim.states[market.condition_id].ladder
    old_tick = sim.tick_size(market.yes_token_id)
    # The truth walks into the tail: the best bid falls to 0.03 and the best ask to 0.035.
    ladder.bids.clear()
    ladder.asks.clear()
    ladder.bids[300] = 1_000
    ladder.asks.update({350: 900, 400: 500, 500: 700})
    sim.publish(market, [LevelChange("ask", 350, 0, 900)])
    first = await client.recv()
    assert first["event_type"] == "price_change"
    changes = [await client.recv(), await client.recv()]
    assert old_tick == 100
    assert [c["event_type"] for c in changes] == ["tick_size_change"] * 2
    assert {c["asset_id"] for c in changes} == set(tokens(market))
    assert all((c["old_tick_size"], c["new_tick_size"]) == ("0.01", "0.001") for c in changes)
    for event in (first, *changes):
        books.apply(event)
    assert market.yes_token_id not in books.books  # dropped until the next book
    fresh = [await client.recv(), await client.recv()]
    assert [f["event_type"] for f in fresh] == ["book", "book"]
    assert sim.tick_size(market.yes_token_id) == 10
    for event in fresh:
        books.apply(event)
    for token in tokens(market):
        assert books.books[token] == sim.true_book(token)


async def test_trades_send_last_trade_price_then_books(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=2, trade_share=1.0, book_after_tick_delay=0.0, sweep_lag_share=0)
    books, events = await step_everything(sim, poly_ws, rounds=40)
    kinds = [e["event_type"] for e in events]
    assert "last_trade_price" in kinds
    first = kinds.index("last_trade_price")
    assert kinds[first: first + 4] == ["last_trade_price", "last_trade_price", "book", "book"]
    yes_trade, no_trade = events[first], events[first + 1]
    assert ticks(no_trade["price"]) == 10_000 - ticks(yes_trade["price"])
    assert {yes_trade["side"], no_trade["side"]} == {"BUY", "SELL"}
    assert yes_trade["size"] == no_trade["size"] and float(yes_trade["size"]) > 0
    assert_rebuilt(sim, books, events)


async def test_custom_features_add_best_bid_ask_and_no_new_assets(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=1, no_new_assets_interval=0.05, ping_timeout=5.0)
    market = sim.universe.markets[0]
    client = await subscribed(sim, poly_ws, [market.yes_token_id], ClientBooks(),
                              custom_feature_enabled=True)
    for _ in range(20):
        sim.step_market(market)
    events: list[Any] = []
    async with asyncio.timeout(5):  # the notice comes on the venue's own timer: wait for it, not for a time
        while "NO NEW ASSETS" not in events:
            events += await client.barrier()
    quotes = [e for e in events if isinstance(e, dict) and e["event_type"] == "best_bid_ask"]
    assert quotes, "top-of-book moves produce best_bid_ask events"
    bid, ask = sim.states[market.condition_id].yes_top()
    assert (ticks(quotes[-1]["best_bid"]), ticks(quotes[-1]["best_ask"])) == (bid, ask)


async def test_tick_widens_again_and_off_grid_levels_move_in_the_fresh_book(
        start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=3, book_after_tick_delay=0.0, trade_share=0.0, sweep_lag_share=0,
                           book_after_tick_share=1.0)
    market = mid_range(sim)[0]
    sim.change_tick_size(market.condition_id, 10)  # as if it had been in a tail
    ladder = sim.states[market.condition_id].ladder
    ladder.bids.update({4_990: 700, 4_980: 300})  # sub-cent levels, legal on the 0.001 grid
    books = ClientBooks()
    client = await subscribed(sim, poly_ws, tokens(market), books)
    assert books.books[market.yes_token_id] == sim.true_book(market.yes_token_id)
    sim.step_market(market)  # back in the middle: the rule widens the tick to 0.01
    events = await client.barrier()
    kinds = [e["event_type"] for e in events]
    assert kinds[:3] == ["price_change", "tick_size_change", "tick_size_change"]
    assert (events[1]["old_tick_size"], events[1]["new_tick_size"]) == ("0.001", "0.01")
    events += await client.barrier()  # the fresh books follow the change
    assert [e["event_type"] for e in events].count("book") == 2
    for event in events:
        books.apply(event)
    for token in tokens(market):
        assert books.books[token] == sim.true_book(token)
        assert all(price % 100 == 0 for side in books.books[token] for price in side)


async def test_a_client_that_does_not_read_is_cut_off(start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=1, outbound_limit=5, trade_share=0.0)
    market = sim.universe.markets[0]
    client = await subscribed(sim, poly_ws, tokens(market), ClientBooks())
    await client.barrier()
    for _ in range(20):  # synchronous: the writer cannot drain meanwhile
        sim.step_market(market)
    async with asyncio.timeout(3):
        while (message := await client.ws.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
