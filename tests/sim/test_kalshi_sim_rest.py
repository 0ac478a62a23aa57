"""The Kalshi simulator's REST v2, checked with plain aiohttp requests."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from markets.sim.kalshi import RateLimit

if TYPE_CHECKING:
    from tests.conftest import StartKalshi
    from tests.sim.conftest import ClientBook, DemoKey

pytestmark = pytest.mark.timeout(30)
ROOT = "/trade-api/v2"
UNLIMITED = RateLimit(read_refill=1e6, read_capacity=1e6, write_refill=1e6, write_capacity=1e6)


async def _get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.get(url, **kw) as resp:
        return resp.status, await resp.json()


def _order(ticker: str, /, **overrides: Any) -> dict[str, Any]:
    body = {"ticker": ticker, "client_order_id": str(uuid.uuid4()), "side": "bid", "count": "10.00",
            "price": "0.5600", "time_in_force": "good_till_canceled",
            "self_trade_prevention_type": "taker_at_cross"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def _post_order(http: aiohttp.ClientSession, sim: Any, key: DemoKey, body: dict[str, Any],
                      path: str = "/portfolio/events/orders") -> tuple[int, Any]:
    headers = key.headers("POST", ROOT + path)
    async with http.post(sim.rest_url + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


# -- discovery -------------------------------------------------------------------------

async def test_markets_paginate_with_cursor(start_kalshi: StartKalshi, http: aiohttp.ClientSession) -> None:
    sim = await start_kalshi(n_markets=7, rate_limit=UNLIMITED)
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        params = {"limit": "3", "status": "open"} | ({"cursor": cursor} if cursor else {})
        status, body = await _get(http, sim.rest_url + "/markets", params=params)
        assert status == 200
        pages += 1
        seen += [m["ticker"] for m in body["markets"]]
        cursor = body["cursor"]
        if not cursor:
            break
    assert pages == 3
    assert seen == [m.kalshi_ticker for m in sim.universe.markets]


async def test_last_page_cursor_is_empty_or_null(start_kalshi: StartKalshi, http: aiohttp.ClientSession) -> None:
    """The schema says the last cursor is empty, the pagination guide says null: both occur."""
    sim = await start_kalshi(n_markets=2, rate_limit=UNLIMITED)
    ends = set()
    for path in ["/markets", "/events"] * 8:
        status, body = await _get(http, sim.rest_url + path)
        assert status == 200 and "cursor" in body
        ends.add(body["cursor"])
    assert ends == {"", None}


async def test_market_filters(start_kalshi: StartKalshi, http: aiohttp.ClientSession) -> None:
    sim = await start_kalshi(n_markets=6, rate_limit=UNLIMITED)
    markets = sim.universe.markets
    url = sim.rest_url + "/markets"
    _, body = await _get(http, url, params={"status": "closed"})
    assert body["markets"] == [] and not body["cursor"]
    _, body = await _get(http, url, params={"event_ticker": markets[2].event_ticker})
    assert [m["ticker"] for m in body["markets"]] == [markets[2].kalshi_ticker]
    _, body = await _get(http, url, params={"series_ticker": markets[0].series_ticker})
    assert {m["ticker"] for m in body["markets"]} == {
        m.kalshi_ticker for m in markets if m.series_ticker == markets[0].series_ticker}
    wanted = f"{markets[1].kalshi_ticker},{markets[4].kalshi_ticker}"
    _, body = await _get(http, url, params={"tickers": wanted})
    assert [m["ticker"] for m in body["markets"]] == [markets[1].kalshi_ticker, markets[4].kalshi_ticker]
    for bad in ({"status": "active"}, {"limit": "0"}, {"limit": "1001"}, {"limit": "x"},
                {"cursor": "%%%"}):
        status, body = await _get(http, url, params=bad)
        assert status == 400, bad
        assert set(body) == {"code", "message", "details"} and body["message"]


async def test_market_object(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                             new_book: type[ClientBook]) -> None:
    sim = await start_kalshi(rate_limit=UNLIMITED)
    for market in sim.universe.markets[:2]:
        status, body = await _get(http, f"{sim.rest_url}/markets/{market.kalshi_ticker}")
        assert status == 200
        m = body["market"]
        assert m["ticker"] == market.kalshi_ticker and m["status"] == "active"
        assert m["price_level_structure"] == market.price_level_structure
        assert "yes_bid" not in m and "tick_size" not in m  # cent integer fields are gone
        yes_bids, no_bids = sim.book_levels(market.kalshi_ticker)
        assert new_book.ticks(m["yes_bid_dollars"]) == max(yes_bids)
        assert new_book.ticks(m["yes_ask_dollars"]) == 10_000 - max(no_bids)
        steps = {r["step"] for r in m["price_ranges"]}
        if market.price_level_structure == "tapered_deci_cent":
            assert steps == {"0.0010", "0.0100"} and len(m["price_ranges"]) == 3
        else:
            assert m["price_ranges"] == [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}]
    status, body = await _get(http, f"{sim.rest_url}/markets/KXNOPE-1")
    assert status == 404 and body["code"] == "not_found"


async def test_orderbook_matches_truth_and_depth(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                                                 new_book: type[ClientBook]) -> None:
    sim = await start_kalshi(rate_limit=UNLIMITED)
    ticker = sim.universe.markets[0].kalshi_ticker
    status, body = await _get(http, f"{sim.rest_url}/markets/{ticker}/orderbook")
    assert status == 200 and set(body) == {"orderbook_fp"}
    book = body["orderbook_fp"]
    yes = {new_book.ticks(p): new_book.hundredths(c) for p, c in book["yes_dollars"]}
    no = {new_book.ticks(p): new_book.hundredths(c) for p, c in book["no_dollars"]}
    assert (yes, no) == sim.book_levels(ticker)
    _, body = await _get(http, f"{sim.rest_url}/markets/{ticker}/orderbook", params={"depth": "2"})
    top = body["orderbook_fp"]["yes_dollars"]
    assert sorted(new_book.ticks(p) for p, _ in top) == sorted(yes)[-2:], "depth keeps the best levels"
    status, _ = await _get(http, f"{sim.rest_url}/markets/{ticker}/orderbook", params={"depth": "101"})
    assert status == 400


async def test_events_listing(start_kalshi: StartKalshi, http: aiohttp.ClientSession) -> None:
    sim = await start_kalshi(n_markets=5, rate_limit=UNLIMITED)
    status, body = await _get(http, sim.rest_url + "/events",
                              params={"limit": "2", "with_nested_markets": "true"})
    assert status == 200 and body["cursor"]
    assert [e["event_ticker"] for e in body["events"]] == [m.event_ticker for m in sim.universe.markets[:2]]
    assert body["events"][0]["markets"][0]["ticker"] == sim.universe.markets[0].kalshi_ticker
    status, body = await _get(http, sim.rest_url + "/events", params={"cursor": body["cursor"]})
    assert len(body["events"]) == 3 and not body["cursor"] and "markets" not in body["events"][0]


# -- portfolio and auth --------------------------------------------------------------------

async def test_portfolio_requires_signature(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                                            demo_key: DemoKey, other_key: DemoKey) -> None:
    sim = await start_kalshi(rate_limit=UNLIMITED)
    url = sim.rest_url + "/portfolio/balance"
    status, body = await _get(http, url)
    assert status == 401 and body["code"] == "authentication_error"
    status, _ = await _get(http, url, headers=other_key.headers("GET", ROOT + "/portfolio/balance"))
    assert status == 401
    # The signature covers the path without the query string.
    status, body = await _get(http, url, params={"subaccount": "0"},
                              headers=demo_key.headers("GET", ROOT + "/portfolio/balance"))
    assert status == 200 and isinstance(body["balance"], int) and "portfolio_value" in body
    status, _ = await _get(http, url, params={"subaccount": "0"},
                           headers=demo_key.headers("GET", ROOT + "/portfolio/balance?subaccount=0"))
    assert status == 401
    status, _ = await _get(http, url, headers=demo_key.headers(
        "GET", ROOT + "/portfolio/balance", ts_ms=time.time_ns() // 1_000_000 - 60_000))
    assert status == 401
    status, _ = await _get(http, sim.rest_url + "/markets")  # market data needs no auth
    assert status == 200


async def test_order_accepted_and_recorded(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                                           demo_key: DemoKey) -> None:
    sim = await start_kalshi(rate_limit=UNLIMITED)
    ticker = sim.universe.markets[0].kalshi_ticker
    body = _order(ticker, count="2.5", price="0.4400", side="ask")
    status, reply = await _post_order(http, sim, demo_key, body)
    assert status == 201
    assert set(reply) == {"order_id", "client_order_id", "fill_count", "remaining_count", "ts_ms"}
    assert reply["client_order_id"] == body["client_order_id"] and reply["remaining_count"] == "2.50"
    recorded = sim.rest.orders[-1]
    assert (recorded.order_id, recorded.ticker, recorded.side, recorded.price, recorded.count) == (
        reply["order_id"], ticker, "ask", 4400, 250)
    assert recorded.key_id == demo_key.key_id


async def test_order_cancel_is_signed_and_once_only(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                                                    demo_key: DemoKey) -> None:
    sim = await start_kalshi(rate_limit=UNLIMITED)
    _, placed = await _post_order(http, sim, demo_key, _order(sim.universe.markets[0].kalshi_ticker, count="3"))
    path = f"/portfolio/events/orders/{placed['order_id']}"
    async with http.delete(sim.rest_url + path) as resp:
        assert resp.status == 401  # portfolio calls are signed
    for expected in (200, 404):
        async with http.delete(sim.rest_url + path, headers=demo_key.headers("DELETE", ROOT + path)) as resp:
            assert resp.status == expected
            reply = await resp.json()
    assert reply["code"] == "not_found"
    assert sim.rest.cancelled == {placed["order_id"]}


@pytest.mark.parametrize(("overrides", "field"), [
    ({"time_in_force": None}, "time_in_force"),
    ({"self_trade_prevention_type": None}, "self_trade_prevention_type"),
    ({"side": "yes"}, "side"),
    ({"count": "1.234"}, "count"),
    ({"count": "0"}, "count"),
    ({"count": 10}, "count"),
    ({"price": "0.555"}, "price"),
    ({"price": "1.0000"}, "price"),
    ({"price": "0.56001"}, "price"),
    ({"time_in_force": "day"}, "time_in_force"),
    ({"self_trade_prevention_type": "none"}, "self_trade_prevention_type"),
    ({"post_only": "true"}, "post_only"),
    ({"subaccount": 40}, "subaccount"),
    ({"ticker": "KXNOPE-1"}, "ticker"),
])
async def test_order_validation(overrides: dict[str, Any], field: str, start_kalshi: StartKalshi,
                                http: aiohttp.ClientSession, demo_key: DemoKey) -> None:
    sim = await start_kalshi(rate_limit=UNLIMITED)
    linear = next(m.kalshi_ticker for m in sim.universe.markets if m.price_level_structure == "linear_cent")
    status, reply = await _post_order(http, sim, demo_key, _order(linear, **overrides))
    assert status == 400
    assert reply["code"] == "invalid_parameters" and field in reply["message"]
    assert sim.rest.orders == []


async def test_sub_penny_price_only_on_tapered_tails(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                                                     demo_key: DemoKey) -> None:
    sim = await start_kalshi(rate_limit=UNLIMITED)
    tapered = next(m.kalshi_ticker for m in sim.universe.markets
                   if m.price_level_structure == "tapered_deci_cent")
    assert (await _post_order(http, sim, demo_key, _order(tapered, price="0.955")))[0] == 201
    assert (await _post_order(http, sim, demo_key, _order(tapered, price="0.0350")))[0] == 201
    assert (await _post_order(http, sim, demo_key, _order(tapered, price="0.555")))[0] == 400


async def test_duplicate_client_order_id_is_409(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                                                demo_key: DemoKey) -> None:
    sim = await start_kalshi(rate_limit=UNLIMITED)
    body = _order(sim.universe.markets[0].kalshi_ticker)
    assert (await _post_order(http, sim, demo_key, body))[0] == 201
    status, reply = await _post_order(http, sim, demo_key, body)
    assert status == 409 and reply["error"]["code"] == "order_already_exists"
    assert len(sim.rest.orders) == 1


async def test_legacy_order_endpoint_is_gone(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                                             demo_key: DemoKey) -> None:
    sim = await start_kalshi(rate_limit=UNLIMITED)
    legacy = {"ticker": sim.universe.markets[0].kalshi_ticker, "action": "buy", "side": "yes",
              "count": 1, "type": "limit", "yes_price": 56}
    status, reply = await _post_order(http, sim, demo_key, legacy, path="/portfolio/orders")
    assert status == 410
    assert reply["code"] == "deprecated_v1_order_endpoint" and "V2" in reply["message"]
    assert sim.rest.orders == []


async def test_bad_json_body_is_400(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                                    demo_key: DemoKey) -> None:
    sim = await start_kalshi(rate_limit=UNLIMITED)
    headers = demo_key.headers("POST", ROOT + "/portfolio/events/orders")
    async with http.post(sim.rest_url + "/portfolio/events/orders", data=b"{oops",
                         headers=headers) as resp:
        assert resp.status == 400
        assert "JSON" in (await resp.json())["message"]


# -- rate limit ------------------------------------------------------------------------------

async def test_token_bucket_answers_429_without_retry_after(start_kalshi: StartKalshi,
                                                            http: aiohttp.ClientSession,
                                                            demo_key: DemoKey) -> None:
    sim = await start_kalshi(rate_limit=RateLimit(read_refill=1.0, read_capacity=30.0, cost=10.0))
    url = sim.rest_url + "/portfolio/balance"
    statuses = []
    for _ in range(4):
        async with http.get(url, headers=demo_key.headers("GET", ROOT + "/portfolio/balance")) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert "Retry-After" not in resp.headers
                assert await resp.json() == {"error": "too many requests"}
    assert statuses == [200, 200, 200, 429]
    # Unsigned market data draws from the client address's own bucket.
    assert (await _get(http, sim.rest_url + "/markets"))[0] == 200


async def test_orderbook_level_order_is_not_promised(start_kalshi: StartKalshi, http: aiohttp.ClientSession,
                                                    new_book: type[ClientBook]) -> None:
    """Documented ascending, recorded live descending: a client must sort, so both orders occur."""
    sim = await start_kalshi(rate_limit=UNLIMITED)
    ticker = sim.universe.markets[0].kalshi_ticker
    orders = set()
    for _ in range(12):
        _, body = await _get(http, f"{sim.rest_url}/markets/{ticker}/orderbook")
        for levels in body["orderbook_fp"].values():
            prices = [new_book.ticks(p) for p, _ in levels]
            assert prices in (sorted(prices), sorted(prices, reverse=True))
            orders.add("ascending" if prices == sorted(prices) else "descending")
    assert orders == {"ascending", "descending"}
