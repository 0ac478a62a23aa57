"""The Polymarket simulator's CLOB and Gamma REST endpoints, with a plain aiohttp client."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import aiohttp

from markets.sim.polymarket import PolymarketSimulator
from tests.conftest import StartPoly
from tests.sim.test_polymarket_sim_support import parse_levels
from tests.sim.units import ticks


async def get(http: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any]:
    async with http.get(url, params=params) as response:
        return response.status, await response.json()


async def test_book_is_worst_to_best_and_matches_the_truth(
        start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=2)
    for market in sim.universe.markets:
        for token in (market.yes_token_id, market.no_token_id):
            status, book = await get(http, f"{sim.clob_url}/book", token_id=token)
            assert status == 200
            assert book["market"] == market.condition_id and book["asset_id"] == token
            assert book["timestamp"].isdigit() and re.fullmatch(r"[0-9a-f]{40}", book["hash"])
            assert book["tick_size"] in ("0.01", "0.001") and book["min_order_size"] == "5"
            assert (parse_levels(book["bids"], bids=True),
                    parse_levels(book["asks"], bids=False)) == sim.true_book(token)


async def test_book_errors_match_the_venue(start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=1)
    assert await get(http, f"{sim.clob_url}/book") == (400, {"error": "Invalid token id"})
    assert await get(http, f"{sim.clob_url}/book", token_id="12345") == (
        404, {"error": "No orderbook exists for the requested token id"})


async def test_book_hash_and_timestamp_move_with_the_book(
        start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=1)
    market = sim.universe.markets[0]
    _, first = await get(http, f"{sim.clob_url}/book", token_id=market.yes_token_id)
    _, again = await get(http, f"{sim.clob_url}/book", token_id=market.yes_token_id)
    assert again["hash"] == first["hash"]
    sim.step_market(market)
    _, moved = await get(http, f"{sim.clob_url}/book", token_id=market.yes_token_id)
    assert moved["hash"] != first["hash"]


async def test_books_batch_leaves_out_unknown_tokens(
        start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=2)
    a, b = sim.universe.markets
    body = [{"token_id": a.no_token_id}, {"token_id": "999"}, {"token_id": b.yes_token_id}]
    async with http.post(f"{sim.clob_url}/books", json=body) as response:
        assert response.status == 200
        books = await response.json()
    assert [book["asset_id"] for book in books] == [a.no_token_id, b.yes_token_id]
    for bad in (b"not json", b'{"token_id": "1"}', b'[{"id": "1"}]'):
        async with http.post(f"{sim.clob_url}/books", data=bad) as response:
            assert response.status == 400
            assert "Invalid payload" in (await response.json())["error"]


async def test_price_and_midpoint(start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=1)
    market = sim.universe.markets[0]
    bid, ask = sim.states[market.condition_id].yes_top()
    assert bid is not None and ask is not None
    _, buy = await get(http, f"{sim.clob_url}/price", token_id=market.yes_token_id, side="BUY")
    _, sell = await get(http, f"{sim.clob_url}/price", token_id=market.yes_token_id, side="sell")
    # docs get-market-price: "the best bid price for BUY side or best ask price for SELL side"
    assert (ticks(buy["price"]), ticks(sell["price"])) == (bid, ask)
    _, mid = await get(http, f"{sim.clob_url}/midpoint", token_id=market.no_token_id)
    assert ticks(mid["mid"]) == 10_000 - (bid + ask) // 2
    status, body = await get(http, f"{sim.clob_url}/price", token_id=market.yes_token_id)
    assert status == 400 and "side" in body["error"]


async def test_markets_paginate_to_the_end_cursor(start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=7, clob_page_size=3)
    cursor, seen, pages = "MA==", [], 0
    while cursor != "LTE=":
        status, page = await get(http, f"{sim.clob_url}/markets", next_cursor=cursor)
        assert status == 200 and page["count"] == len(page["data"]) and page["limit"] == 3
        seen.extend(page["data"])
        cursor, pages = page["next_cursor"], pages + 1
        assert cursor == "LTE=" or int(base64.b64decode(cursor)) == len(seen)
    assert pages == 3
    assert [m["condition_id"] for m in seen] == [m.condition_id for m in sim.universe.markets]
    for doc, market in zip(seen, sim.universe.markets, strict=True):
        assert [(t["token_id"], t["outcome"]) for t in doc["tokens"]] == [
            (market.yes_token_id, market.outcomes[0]), (market.no_token_id, market.outcomes[1])]
        assert abs(sum(t["price"] for t in doc["tokens"]) - 1.0) < 1e-9
    status, single = await get(http, f"{sim.clob_url}/markets/{sim.universe.markets[4].condition_id}")
    assert status == 200 and single["condition_id"] == sim.universe.markets[4].condition_id
    assert (await get(http, f"{sim.clob_url}/markets/0xdead"))[0] == 404
    assert (await get(http, f"{sim.clob_url}/markets", next_cursor="%%%"))[0] == 400


async def test_prices_history_comes_from_recorded_mids(
        start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=1)
    market = sim.universe.markets[0]
    mid = sim.states[market.condition_id].yes_mid()
    assert mid is not None
    status, body = await get(http, f"{sim.clob_url}/prices-history", market=market.no_token_id,
                             interval="1h", fidelity="1")
    assert status == 200 and len(body["history"]) == 1
    point = body["history"][0]
    assert isinstance(point["t"], int) and abs(point["p"] - (10_000 - mid) / 10_000) < 1e-9
    status, body = await get(http, f"{sim.clob_url}/prices-history", market=market.yes_token_id,
                             interval="1h", startTs="0")
    assert status == 400 and "mutually exclusive" in body["error"]


def decoded(doc: dict[str, Any], field: str) -> list[str]:
    """Gamma's list fields are JSON text inside JSON; they must be decoded twice."""
    assert isinstance(doc[field], str), f"{field} should be a JSON-encoded string"
    value = json.loads(doc[field])
    assert isinstance(value, list)
    return value


async def test_gamma_markets_have_json_string_fields(
        start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=3)
    status, docs = await get(http, f"{sim.gamma_url}/markets")
    assert status == 200 and len(docs) == 3
    for doc, market in zip(docs, sim.universe.markets, strict=True):
        assert doc["conditionId"] == market.condition_id
        assert decoded(doc, "clobTokenIds") == [market.yes_token_id, market.no_token_id]
        assert decoded(doc, "outcomes") == list(market.outcomes)
        yes, no = decoded(doc, "outcomePrices")
        assert ticks(yes) + ticks(no) == 10_000
        assert doc["active"] is True and doc["closed"] is False and doc["events"]


async def test_gamma_market_filters_and_pagination(
        start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=30)
    markets = sim.universe.markets
    _, first = await get(http, f"{sim.gamma_url}/markets")
    assert len(first) == 20  # the default page: a client must paginate
    _, rest = await get(http, f"{sim.gamma_url}/markets", limit="500", offset="20")
    assert len(rest) == 10
    assert [d["conditionId"] for d in first + rest] == [m.condition_id for m in markets]
    assert (await get(http, f"{sim.gamma_url}/markets", closed="true")) == (200, [])
    _, by_token = await get(http, f"{sim.gamma_url}/markets",
                            clob_token_ids=f"{markets[3].no_token_id},{markets[5].yes_token_id}")
    assert [d["conditionId"] for d in by_token] == [markets[3].condition_id, markets[5].condition_id]
    _, newest = await get(http, f"{sim.gamma_url}/markets", order="id", ascending="false", limit="1")
    assert newest[0]["conditionId"] == markets[-1].condition_id
    for bad in ({"limit": "ten"}, {"offset": "10001"}, {"closed": "maybe"}, {"order": "volume"}):
        status, body = await get(http, f"{sim.gamma_url}/markets", **bad)
        assert status == 422 and next(iter(bad)) in body["error"]


async def test_gamma_limit_is_capped_at_100(start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim: PolymarketSimulator = await start_poly(n_markets=105)
    _, docs = await get(http, f"{sim.gamma_url}/markets", limit="1000")
    assert len(docs) == 100


async def test_gamma_events_embed_their_markets(start_poly: StartPoly, http: aiohttp.ClientSession) -> None:
    sim = await start_poly(n_markets=4)
    status, events = await get(http, f"{sim.gamma_url}/events", limit="2", offset="1")
    assert status == 200 and len(events) == 2
    for event, market in zip(events, sim.universe.markets[1:3], strict=True):
        assert [m["conditionId"] for m in event["markets"]] == [market.condition_id]
        assert decoded(event["markets"][0], "clobTokenIds")[0] == market.yes_token_id
    _, by_slug = await get(http, f"{sim.gamma_url}/events", slug=events[0]["slug"])
    assert [e["id"] for e in by_slug] == [events[0]["id"]]
