"""KalshiClient against the Kalshi simulator (and, for endpoints it lacks, a small signed stub)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from markets.base import RateLimited, VenueError
from markets.kalshi.auth import KalshiAuthError, KalshiCredentials
from markets.kalshi.client import KalshiClient, OrderValidationError
from markets.models import TICKS_PER_DOLLAR
from markets.sim.faults import FaultPlan
from markets.sim.kalshi.auth import KeyRegistry
from markets.sim.kalshi.rest import RateLimit
from markets.sim.kalshi.simulator import KalshiSimulator
from markets.sim.keys import generate_demo_keypair
from markets.sim.universe import LINEAR_CENT, build_universe
from tests.clients.conftest import serve_app

FAST: dict[str, Any] = {"backoff_initial": 0.001, "backoff_max": 0.01, "timeout": 5.0}


@pytest.fixture
async def static_sim(rest_kalshi_keys: tuple[str, Path, bytes]) -> AsyncIterator[KalshiSimulator]:
    """A simulator whose books do not move (rate 0), so REST answers can be compared with its truth."""
    key_id, _, public_pem = rest_kalshi_keys
    unlimited = RateLimit(read_refill=1e6, read_capacity=1e6, write_refill=1e6, write_capacity=1e6)
    async with KalshiSimulator(build_universe(7, seed=3), rate=0, rate_limit=unlimited) as sim:
        sim.register_key(key_id, public_pem)
        yield sim


@pytest.fixture
async def client(static_sim: KalshiSimulator,
                 rest_kalshi_credentials: KalshiCredentials) -> AsyncIterator[KalshiClient]:
    async with KalshiClient(rest_kalshi_credentials, base_url=static_sim.rest_url,
                            read_rate=1000, write_rate=1000, **FAST) as c:
        yield c


def linear_ticker(sim: KalshiSimulator) -> str:
    return next(m.kalshi_ticker for m in sim.universe.markets if m.price_level_structure == LINEAR_CENT)


# -- discovery ----------------------------------------------------------------------


async def test_pagination_walks_every_page(client: KalshiClient, static_sim: KalshiSimulator) -> None:
    expected = [m.kalshi_ticker for m in static_sim.universe.markets]
    tickers = [m["ticker"] async for m in client.iter_markets(page_size=3, status="open")]
    assert tickers == expected
    assert client.request_count == 3  # 3 + 3 + 1

    first = await client.get_markets_page(limit=3)
    assert len(first.items) == 3 and first.cursor
    second = await client.get_markets_page(limit=3, cursor=first.cursor)
    assert [m["ticker"] for m in second.items] == expected[3:6]
    last = await client.get_markets_page(limit=3, cursor=(await client.get_markets_page(limit=6)).cursor)
    assert [m["ticker"] for m in last.items] == expected[6:] and last.cursor is None


async def test_pagination_bounds_and_filters(client: KalshiClient, static_sim: KalshiSimulator) -> None:
    assert len([m async for m in client.iter_markets(page_size=2, max_pages=2)]) == 4
    wanted = [m.kalshi_ticker for m in static_sim.universe.markets[1:3]]
    assert [m["ticker"] async for m in client.iter_markets(tickers=wanted)] == wanted
    with pytest.raises(ValueError, match="page limit"):
        client.iter_markets(page_size=0)


async def test_market(client: KalshiClient, static_sim: KalshiSimulator) -> None:
    ticker = static_sim.universe.markets[0].kalshi_ticker
    market = await client.get_market(ticker)
    assert market["ticker"] == ticker and market["status"] == "active"


async def test_unknown_market_is_a_clear_error(client: KalshiClient) -> None:
    with pytest.raises(VenueError) as info:
        await client.get_market("KXNOPE-1")
    err = info.value
    assert (err.status, err.code) == (404, "not_found")
    assert "kalshi GET /trade-api/v2/markets/KXNOPE-1" in str(err)


async def test_orderbook_matches_simulator_truth(client: KalshiClient, static_sim: KalshiSimulator) -> None:
    for market in static_sim.universe.markets:
        ticker = market.kalshi_ticker
        yes_truth, no_truth = static_sim.book_levels(ticker)
        book = await client.get_orderbook(ticker)
        assert book.yes_bids == yes_truth and book.no_bids == no_truth
        price = await client.get_market_price(ticker)
        best_yes, best_no = max(yes_truth), max(no_truth)
        assert price.market_id == ticker
        assert price.yes_bid == best_yes / TICKS_PER_DOLLAR
        assert price.yes_ask == (TICKS_PER_DOLLAR - best_no) / TICKS_PER_DOLLAR
        assert price.yes_bid_size == yes_truth[best_yes] / 100
        assert price.yes_ask_size == no_truth[best_no] / 100
        assert price.recv_ts_ns > 0


async def test_events(client: KalshiClient, static_sim: KalshiSimulator) -> None:
    events = [e async for e in client.iter_events(page_size=4)]
    assert [e["event_ticker"] for e in events] == [m.event_ticker for m in static_sim.universe.markets]
    page = await client.get_events_page(limit=2, with_nested_markets=True)
    assert page.cursor and [m["ticker"] for m in page.items[0]["markets"]] == [
        static_sim.universe.markets[0].kalshi_ticker]


# -- signed endpoints ---------------------------------------------------------------------


async def test_balance_is_signed(client: KalshiClient) -> None:
    balance = await client.get_balance()
    assert balance["balance"] == 100_000


async def test_balance_without_credentials_is_refused_locally(static_sim: KalshiSimulator) -> None:
    async with KalshiClient(base_url=static_sim.rest_url, **FAST) as anonymous:
        with pytest.raises(KalshiAuthError, match="credentials are required"):
            await anonymous.get_balance()
        assert anonymous.request_count == 0


async def test_unknown_key_is_rejected_by_the_venue(static_sim: KalshiSimulator, tmp_path: Path) -> None:
    key_id, path, _ = generate_demo_keypair(tmp_path / "other")  # never registered
    async with KalshiClient(KalshiCredentials.from_files(key_id, path), base_url=static_sim.rest_url, **FAST) as c:
        with pytest.raises(VenueError) as info:
            await c.get_balance()
    assert (info.value.status, info.value.code) == (401, "authentication_error")


async def test_order_is_accepted_and_recorded(client: KalshiClient, static_sim: KalshiSimulator,
                                              rest_kalshi_keys: tuple[str, Path, bytes]) -> None:
    ticker = linear_ticker(static_sim)
    reply = await client.place_order(ticker, "bid", "0.56", 10, time_in_force="immediate_or_cancel",
                                     post_only=False, subaccount=0)
    recorded = static_sim.rest.orders[-1]
    assert reply["order_id"] == recorded.order_id and reply["client_order_id"] == recorded.client_order_id
    assert reply["remaining_count"] == "10.00"
    assert (recorded.ticker, recorded.side, recorded.price, recorded.count) == (ticker, "bid", 5600, 1000)
    assert recorded.time_in_force == "immediate_or_cancel"
    assert recorded.self_trade_prevention_type == "taker_at_cross"
    assert recorded.key_id == rest_kalshi_keys[0]
    assert recorded.body["price"] == "0.5600" and recorded.body["count"] == "10.00"
    assert recorded.body["post_only"] is False and recorded.body["subaccount"] == 0

    await client.place_order(ticker, "ask", 0.44, Decimal("2.5"))
    assert (static_sim.rest.orders[-1].price, static_sim.rest.orders[-1].count) == (4400, 250)

    cancelled = await client.cancel_order(reply["order_id"], market_ticker=ticker)
    assert cancelled["order_id"] == reply["order_id"] and cancelled["reduced_by"] == "10.00"
    assert static_sim.rest.cancelled == {reply["order_id"]}
    with pytest.raises(VenueError) as info:
        await client.cancel_order(reply["order_id"])
    assert (info.value.status, info.value.code) == (404, "not_found")


async def test_duplicate_client_order_id_surfaces_nested_error(client: KalshiClient,
                                                                static_sim: KalshiSimulator) -> None:
    ticker = linear_ticker(static_sim)
    await client.place_order(ticker, "bid", "0.50", 1, client_order_id="dup-1")
    with pytest.raises(VenueError) as info:
        await client.place_order(ticker, "bid", "0.50", 1, client_order_id="dup-1")
    assert (info.value.status, info.value.code) == (409, "order_already_exists")
    assert "order already exists" in str(info.value)


async def test_off_grid_price_is_refused_by_the_venue(client: KalshiClient, static_sim: KalshiSimulator) -> None:
    with pytest.raises(VenueError) as info:
        await client.place_order(linear_ticker(static_sim), "bid", "0.5650", 1)
    assert (info.value.status, info.value.code) == (400, "invalid_parameters")
    assert "grid" in str(info.value)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"side": "buy"}, "side must be one of"),
    ({"side": "yes"}, "side must be one of"),
    ({"price": 0}, "strictly between 0 and 1"),
    ({"price": "1.00"}, "strictly between 0 and 1"),
    ({"price": 1.5}, "strictly between 0 and 1"),
    ({"price": "-0.10"}, "strictly between 0 and 1"),
    ({"price": "0.56001"}, "more than 4 decimal places"),
    ({"price": "abc"}, "not a decimal number"),
    ({"price": True}, "must be a decimal number"),
    ({"price": None}, "must be a decimal number"),
    ({"count": 0}, "count must be positive"),
    ({"count": "-3"}, "count must be positive"),
    ({"count": "1.001"}, "more than 2 decimal places"),
    ({"count": float("nan")}, "finite"),
    ({"ticker": " "}, "ticker must be a non-empty string"),
    ({"time_in_force": "gtc"}, "time_in_force must be one of"),
    ({"self_trade_prevention_type": "none"}, "self_trade_prevention_type must be one of"),
    ({"post_only": "yes"}, "post_only must be a boolean"),
    ({"subaccount": 33}, "subaccount must be an integer"),
    ({"exchange_index": -2}, "exchange_index must be an integer"),
    ({"expiration_time": 60, "time_in_force": "fill_or_kill"}, "expiration_time is only valid"),
])
async def test_order_validation_happens_before_sending(client: KalshiClient, static_sim: KalshiSimulator,
                                                       overrides: dict, message: str) -> None:
    args = {"ticker": linear_ticker(static_sim), "side": "bid", "price": "0.50", "count": 1, **overrides}
    with pytest.raises(OrderValidationError, match=message):
        await client.place_order(**args)
    assert client.request_count == 0 and static_sim.rest.orders == []


async def test_legacy_order_endpoint_410(client: KalshiClient, static_sim: KalshiSimulator) -> None:
    body = {"ticker": linear_ticker(static_sim), "action": "buy", "side": "yes", "count": 1, "type": "limit"}
    with pytest.raises(VenueError) as info:
        await client._request("POST", "/portfolio/orders", json=body, signed=True)
    err = info.value
    assert (err.status, err.code) == (410, "deprecated_v1_order_endpoint")
    assert "POST /trade-api/v2/portfolio/orders" in str(err) and "switch to the V2" in str(err)
    assert client.request_count == 1, "a 410 is final, never retried"


# -- faults -----------------------------------------------------------------------------


async def test_rate_limit_fault_is_retried(client: KalshiClient, static_sim: KalshiSimulator) -> None:
    static_sim.faults = FaultPlan(rest_429_every=2)
    tickers = [m["ticker"] async for m in client.iter_markets(page_size=2)]
    assert len(tickers) == 7
    assert client.retry_count >= 1 and client.request_count == 4 + client.retry_count


async def test_persistent_429_gives_rate_limited(client: KalshiClient, static_sim: KalshiSimulator) -> None:
    static_sim.faults = FaultPlan(rest_429_every=1)
    with pytest.raises(RateLimited) as info:
        await client.get_market(static_sim.universe.markets[0].kalshi_ticker)
    assert info.value.status == 429 and "too many requests" in str(info.value)
    assert client.request_count == client.max_retries + 1


async def test_server_errors_are_retried(client: KalshiClient, static_sim: KalshiSimulator) -> None:
    static_sim.faults = FaultPlan(rest_5xx_every=2)
    prices = [await client.get_market_price(m.kalshi_ticker) for m in static_sim.universe.markets]
    assert len(prices) == 7 and client.retry_count >= 3


async def test_client_bucket_keeps_under_the_venue_limit(rest_kalshi_keys: tuple[str, Path, bytes],
                                                         rest_kalshi_credentials: KalshiCredentials) -> None:
    """The venue allows 20 reads/s with a burst of 2; a client paced at 20/s never sees a 429,
    one that is not paced does and recovers through its own backoff (no Retry-After)."""
    venue_limit = RateLimit(read_refill=200, read_capacity=20, cost=10)
    async with KalshiSimulator(build_universe(3, seed=1), rate=0, rate_limit=venue_limit) as sim:
        sim.register_key(rest_kalshi_keys[0], rest_kalshi_keys[2])
        async with KalshiClient(rest_kalshi_credentials, base_url=sim.rest_url, read_rate=18, **FAST) as paced:
            paced.rate_limiter._tokens = 1  # start without burst credit
            async with asyncio.timeout(10):
                await asyncio.gather(*(paced.get_balance() for _ in range(6)))
            assert paced.retry_count == 0
        await asyncio.sleep(0.2)  # let the venue bucket refill
        async with KalshiClient(rest_kalshi_credentials, base_url=sim.rest_url, read_rate=1000,
                                max_retries=8, backoff_initial=0.02, backoff_max=0.2) as eager:
            async with asyncio.timeout(10):
                books = await asyncio.gather(*(eager.get_balance() for _ in range(6)))
            assert len(books) == 6 and eager.retry_count > 0


# -- endpoints the simulator does not serve: a stub that verifies signatures ----------------


@pytest.fixture
async def stub(rest_kalshi_keys: tuple[str, Path, bytes]) -> AsyncIterator[tuple[str, list[web.Request]]]:
    registry = KeyRegistry(tolerance_ms=5_000)
    registry.register(rest_kalshi_keys[0], rest_kalshi_keys[2])
    seen: list[web.Request] = []
    cursors = iter(["c1", "c1"])

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        path = request.path.removeprefix("/trade-api/v2")
        if path.startswith("/portfolio/"):
            # The signature covers the path exactly as sent (percent-encoding included).
            registry.verify(request.headers, request.method, request.raw_path.split("?", 1)[0])
        if request.method == "DELETE":
            return web.json_response({"order_id": "ord/1", "client_order_id": "c", "reduced_by": "1.00"})
        if path == "/series":
            return web.json_response({"series": [{"ticker": "KXNBAGAME"}]})
        if path == "/series/KXNBAGAME":
            return web.json_response({"series": {"ticker": "KXNBAGAME", "frequency": "custom"}})
        if path == "/events/EV-1":
            return web.json_response({"event": {"event_ticker": "EV-1"}, "markets": [{"ticker": "M-1"}]})
        if path == "/markets":
            return web.json_response({"markets": [{"ticker": "X"}], "cursor": next(cursors)})
        if path == "/markets/DESC/orderbook":  # live-recorded shape: yes descending, no mixed
            return web.json_response({"orderbook_fp": {
                "yes_dollars": [["0.04", "2006.00"], ["0.03", "2000.00"]],
                "no_dollars": [["0.01", "490001.00"], ["0.95", "15.00"]]}})
        if path == "/markets/EMPTY":
            return web.json_response({})
        if path == "/markets/BAD/orderbook":
            return web.json_response({"orderbook_fp": {"yes_dollars": [["0.04", "-1"]], "no_dollars": []}})
        return web.json_response({"code": "not_found", "message": "nope"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/trade-api/v2/{tail:.*}", handler)
    async with serve_app(app) as root:
        yield f"{root}/trade-api/v2", seen


async def test_cancel_series_event_and_book_order(stub: tuple[str, list[web.Request]],
                                                  rest_kalshi_credentials: KalshiCredentials) -> None:
    url, seen = stub
    async with KalshiClient(rest_kalshi_credentials, base_url=url, **FAST) as c:
        cancelled = await c.cancel_order("ord/1", market_ticker="M-1")
        assert cancelled["reduced_by"] == "1.00"
        # The id is one quoted path segment, and the signature (checked by the stub) covers the path.
        assert seen[-1].method == "DELETE"
        assert seen[-1].raw_path == "/trade-api/v2/portfolio/events/orders/ord%2F1?market_ticker=M-1"
        assert [s["ticker"] for s in await c.get_series_list()] == ["KXNBAGAME"]
        assert (await c.get_series("KXNBAGAME"))["frequency"] == "custom"
        assert (await c.get_event("EV-1"))["markets"] == [{"ticker": "M-1"}]

        price = await c.get_market_price("DESC")
        assert (price.yes_bid, price.yes_bid_size) == (0.04, 2006.0)
        assert (price.yes_ask, price.yes_ask_size) == (0.05, 15.0)  # NO bid 0.95 -> YES ask 0.05

        with pytest.raises(VenueError, match=r"unusable order book.*negative"):
            await c.get_orderbook("BAD")
        with pytest.raises(VenueError, match="markets/EMPTY failed: unexpected response: no 'market'"):
            await c.get_market("EMPTY")
        with pytest.raises(VenueError, match="cursor 'c1' repeated"):
            _ = [m async for m in c.iter_markets()]


async def test_a_cursor_of_the_wrong_type_is_an_error_not_the_last_page() -> None:
    """Reading a non-string cursor as "no more pages" would end a listing early without a word."""
    async def markets(_: web.Request) -> web.Response:
        return web.json_response({"markets": [{"ticker": "A"}], "cursor": 12345})

    app = web.Application()
    app.router.add_get("/trade-api/v2/markets", markets)
    async with serve_app(app) as root, KalshiClient(base_url=f"{root}/trade-api/v2", **FAST) as c:
        with pytest.raises(VenueError, match="'cursor' is not a string: 12345"):
            _ = [m async for m in c.iter_markets()]


async def test_a_wrong_typed_object_is_an_error_naming_the_path() -> None:
    """`{"market": "gone"}` is a 200 a caller cannot use: fail here, not at `market["ticker"]` later."""
    answers = {"/trade-api/v2/markets/T": {"market": "gone"}, "/trade-api/v2/series": {"series": {"a": 1}},
               "/trade-api/v2/events/E": {"event": []}}

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(answers[request.path])

    app = web.Application()
    for path in answers:
        app.router.add_get(path, answer)
    async with serve_app(app) as root, KalshiClient(base_url=f"{root}/trade-api/v2", **FAST) as c:
        with pytest.raises(VenueError, match="GET /trade-api/v2/markets/T failed: .*expected an object, got str"):
            await c.get_market("T")
        with pytest.raises(VenueError, match="GET /trade-api/v2/series failed: .*expected a list, got dict"):
            await c.get_series_list()
        with pytest.raises(VenueError, match="GET /trade-api/v2/events/E failed: .*expected an object, got list"):
            await c.get_event("E")


async def test_dot_segments_are_refused_before_anything_is_sent(stub: tuple[str, list[web.Request]],
                                                                rest_kalshi_credentials: KalshiCredentials) -> None:
    """URL normalization turns `/orders/..` into another endpoint than the one named and signed."""
    url, seen = stub
    async with KalshiClient(rest_kalshi_credentials, base_url=url, **FAST) as c:
        with pytest.raises(ValueError, match="order_id cannot be '..'"):
            await c.cancel_order("..")
        with pytest.raises(ValueError, match="ticker cannot be '.'"):
            await c.get_market(" . ")
    assert seen == []
