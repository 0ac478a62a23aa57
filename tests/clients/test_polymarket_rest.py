"""PolymarketClient / GammaClient / HybridPolymarketClient against the simulator's REST roots."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from markets.base import VenueError
from markets.models import PriceStatus
from markets.polymarket.client import CURSOR_END, HybridPolymarketClient, PolymarketClient
from markets.polymarket.orders import (
    OrderRequest,
    PolymarketOrderCredentials,
    PolymarketOrderError,
    PolymarketOrdersUnavailable,
)
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.universe import build_universe
from tests.clients.conftest import serve_app

TICKS = 10_000


@pytest.fixture
async def sim() -> AsyncIterator[PolymarketSimulator]:
    async with PolymarketSimulator(build_universe(20, seed=9), rate=0, clob_page_size=7) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: PolymarketSimulator) -> AsyncIterator[PolymarketClient]:
    async with PolymarketClient(clob_url=sim.clob_url, gamma_url=sim.gamma_url, rate=1000,
                                backoff_initial=0.001) as rest:
        yield rest


async def test_gamma_json_string_fields_are_decoded_and_paired(sim: PolymarketSimulator,
                                                               client: PolymarketClient) -> None:
    wanted = sim.universe.markets[:3]
    found = await client.gamma.get_markets(condition_ids=[m.condition_id for m in wanted])
    by_condition = {info.condition_id: info for info in found}
    assert set(by_condition) == {m.condition_id for m in wanted}
    for market in wanted:
        info = by_condition[market.condition_id]
        assert [(t.token_id, t.outcome) for t in info.tokens] == [
            (market.yes_token_id, market.outcomes[0]), (market.no_token_id, market.outcomes[1])]
        assert info.yes_token.token_id == market.yes_token_id
        assert sum(t.price or 0 for t in info.tokens) == pytest.approx(1.0)


async def test_gamma_paginates_and_lists_events(sim: PolymarketSimulator, client: PolymarketClient) -> None:
    markets = [info async for info in client.gamma.iter_markets(page_size=6)]
    assert [m.condition_id for m in markets] == [m.condition_id for m in sim.universe.markets]
    events = await client.gamma.get_events(limit=100)
    assert sum(len(e.markets) for e in events) == len(sim.universe.markets)
    assert all(e.title for e in events)


async def test_clob_markets_follow_the_cursor_to_lte(sim: PolymarketSimulator, client: PolymarketClient) -> None:
    first_page, cursor = await client.get_markets_page()
    assert len(first_page) == 7 and cursor != CURSOR_END
    listed = [m async for m in client.iter_markets()]
    assert [m.condition_id for m in listed] == [m.condition_id for m in sim.universe.markets]
    assert client.request_count == 1 + 3  # 20 markets in pages of 7
    _, last = await client.get_markets_page(cursor="MTQ=")  # offset 14: the last page
    assert last == CURSOR_END


async def test_books_match_the_simulator(sim: PolymarketSimulator, client: PolymarketClient) -> None:
    market = sim.universe.markets[0]
    book = await client.get_order_book(market.no_token_id)
    bids, asks = sim.true_book(market.no_token_id)
    assert book.bids == {p: s * 10_000 for p, s in bids.items()}
    assert book.asks == {p: s * 10_000 for p, s in asks.items()}
    assert book.tick_size == sim.tick_size(market.no_token_id)
    tokens = [m.yes_token_id for m in sim.universe.markets] + ["123"]
    books = await client.get_books(tokens)
    assert [b["asset_id"] for b in books] == tokens[:-1]  # the venue leaves out unknown tokens


async def test_prices_midpoint_and_history(sim: PolymarketSimulator, client: PolymarketClient) -> None:
    market = sim.universe.markets[1]
    bids, asks = sim.true_book(market.yes_token_id)
    # BUY is the best bid and SELL the best ask (docs: get-market-price), not the reverse.
    assert await client.get_price(market.yes_token_id, "BUY") == max(bids) / TICKS
    assert await client.get_price(market.yes_token_id, "SELL") == min(asks) / TICKS
    assert await client.get_midpoint(market.yes_token_id) == pytest.approx((max(bids) + min(asks)) // 2 / TICKS)
    history = await client.get_prices_history(market.yes_token_id, interval="1h", fidelity=1)
    assert history and all(0 < p < 1 for _, p in history)
    with pytest.raises(ValueError, match="mutually exclusive"):
        await client.get_prices_history(market.yes_token_id, interval="1h", start_ts=1)


async def test_market_price_by_condition_id_quotes_the_yes_token(sim: PolymarketSimulator,
                                                                 client: PolymarketClient) -> None:
    market = sim.universe.markets[2]
    price = await client.get_market_price(market.condition_id)
    bids, asks = sim.true_book(market.yes_token_id)
    assert price.market_id == market.condition_id and price.status is PriceStatus.LIVE
    assert (price.yes_bid, price.yes_ask) == (max(bids) / TICKS, min(asks) / TICKS)
    by_token = await client.get_market_price(market.no_token_id)
    assert by_token.yes_bid == pytest.approx(1 - price.yes_ask)
    gamma_quote = await client.gamma.get_market_price(market.condition_id)
    assert (gamma_quote.yes_bid, gamma_quote.yes_ask) == (price.yes_bid, price.yes_ask)


async def test_unknown_ids_get_clear_errors(client: PolymarketClient) -> None:
    with pytest.raises(ValueError, match="unknown Polymarket condition id"):
        await client.resolve_markets(["0x" + "00" * 32])
    with pytest.raises(VenueError, match="404") as caught:
        await client.get_book("42")
    assert "No orderbook exists" in str(caught.value)


async def test_place_order_without_the_extra_says_how_to_install_it(client: PolymarketClient,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "py_clob_client_v2", None)  # as if not installed
    with pytest.raises(PolymarketOrdersUnavailable, match=r"pip install 'arbees\[polymarket-orders\]'"):
        await client.place_order("1042", "BUY", "0.40", "10")


@pytest.mark.parametrize(("args", "message"), [
    (("0xabc", "BUY", "0.4", "10"), "decimal token id"),
    (("1042", "HOLD", "0.4", "10"), "side must be"),
    (("1042", "BUY", "1.0", "10"), "strictly between 0 and 1"),
    (("1042", "BUY", "0.4", "0"), "size must be positive"),
])
def test_orders_are_validated_before_signing(args: tuple[str, str, str, str], message: str) -> None:
    with pytest.raises(PolymarketOrderError, match=message):
        OrderRequest.build(*args)


async def test_hybrid_streams_over_websocket_and_answers_from_the_live_book(sim: PolymarketSimulator) -> None:
    market = sim.universe.markets[3]
    hybrid = HybridPolymarketClient(clob_url=sim.clob_url, gamma_url=sim.gamma_url, ws_url=sim.ws_url,
                                    rest_options={"rate": 1000},
                                    ws_options={"backoff_initial": 0.01, "ping_interval": 0.2})
    try:
        prices = hybrid.stream_prices([market.condition_id])
        async with asyncio.timeout(5):
            first = await anext(prices)
            while first.status is not PriceStatus.LIVE:
                first = await anext(prices)
        assert first.market_id == market.condition_id
        before = hybrid.request_count
        served = await hybrid.get_market_price(market.condition_id)
        assert served == hybrid.ws.latest_price(market.condition_id)
        assert hybrid.request_count == before  # no REST call for a streamed, live market
        other = sim.universe.markets[4]
        rest_price = await hybrid.get_market_price(other.condition_id)
        assert rest_price.market_id == other.condition_id and hybrid.request_count > before
        await prices.aclose()
    finally:
        await hybrid.close()


async def test_an_undecodable_listed_market_is_skipped_not_fatal() -> None:
    """Real listings hold legacy markets with empty token ids; one must not hide the rest."""
    good = {"condition_id": "0x" + "11" * 32, "tokens": [{"token_id": "1", "outcome": "Yes"},
                                                          {"token_id": "2", "outcome": "No"}]}
    legacy = {"condition_id": "0x" + "22" * 32, "tokens": [{"token_id": "", "outcome": "Yes"},
                                                            {"token_id": "", "outcome": "No"}]}

    async def markets(_: web.Request) -> web.Response:
        return web.json_response({"data": [legacy, good], "next_cursor": CURSOR_END, "limit": 2, "count": 2})

    async def one_market(_: web.Request) -> web.Response:
        return web.json_response(legacy)

    app = web.Application()
    app.router.add_get("/markets", markets)
    app.router.add_get("/markets/{condition_id}", one_market)
    async with serve_app(app) as root, PolymarketClient(clob_url=root, gamma_url=root) as rest:
        listed = [m async for m in rest.iter_markets()]
        assert [m.condition_id for m in listed] == [good["condition_id"]] and rest.undecodable == 1
        with pytest.raises(VenueError, match="token id #0"):  # asked for by id: an error, not a skip
            await rest.get_clob_market(legacy["condition_id"])


async def test_a_wrong_answer_shape_names_the_path_and_the_problem() -> None:
    """A 200 whose body cannot be used is a VenueError naming the path, never a KeyError/TypeError."""
    answers = {"/price": [1], "/midpoint": {}, "/prices-history": {"history": [{"t": 1}]}}

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(answers[request.path])

    app = web.Application()
    for path in answers:
        app.router.add_get(path, answer)
    async with serve_app(app) as root, PolymarketClient(clob_url=root, gamma_url=root, max_retries=0) as rest:
        with pytest.raises(VenueError, match=r"GET /price failed: unexpected response: expected an object, got list"):
            await rest.get_price("1", "BUY")
        with pytest.raises(VenueError, match=r"GET /midpoint failed: unexpected response: no 'mid' field"):
            await rest.get_midpoint("1")
        with pytest.raises(VenueError, match=r"GET /prices-history failed: unexpected response: bad history point"):
            await rest.get_prices_history("1")


def gamma_market(n: int, *, decodable: bool = True) -> dict[str, object]:
    return {"id": str(n), "conditionId": f"0x{n:064x}", "outcomes": '["Yes", "No"]',
            "clobTokenIds": f'["{2 * n}", "{2 * n + 1}"]' if decodable else "not json"}


async def test_gamma_listing_goes_on_past_a_page_with_an_undecodable_market() -> None:
    """A skipped entry makes a full page look short; only the listed count may end the walk."""
    listed = [gamma_market(n, decodable=n != 2) for n in range(1, 8)]

    async def markets(request: web.Request) -> web.Response:
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        return web.json_response(listed[offset:offset + limit])

    app = web.Application()
    app.router.add_get("/markets", markets)
    async with serve_app(app) as root, PolymarketClient(clob_url=root, gamma_url=root) as rest:
        found = [m.gamma_id async for m in rest.gamma.iter_markets(page_size=3)]
        assert found == ["1", "3", "4", "5", "6", "7"] and rest.gamma.undecodable == 1
        with pytest.raises(ValueError, match=r"page_size must be an integer in \[1, 100\]"):
            _ = [m async for m in rest.gamma.iter_markets(page_size=200)]  # Gamma caps pages at 100


async def test_gamma_listing_that_ignores_the_offset_is_an_error_not_an_endless_walk() -> None:
    async def markets(_: web.Request) -> web.Response:
        return web.json_response([gamma_market(n) for n in range(1, 4)])

    app = web.Application()
    app.router.add_get("/markets", markets)
    async with serve_app(app) as root, PolymarketClient(clob_url=root, gamma_url=root, rate=1000) as rest:
        async with asyncio.timeout(10):
            with pytest.raises(VenueError, match="offset 3 returned the previous page again"):
                _ = [m async for m in rest.gamma.iter_markets(page_size=3)]


async def test_an_unusable_book_is_a_venue_error_naming_the_path() -> None:
    async def book(_: web.Request) -> web.Response:
        return web.json_response({"bids": [["0.5", "10"]], "asks": []})  # levels must be objects

    app = web.Application()
    app.router.add_get("/book", book)
    async with serve_app(app) as root, PolymarketClient(clob_url=root, gamma_url=root) as rest:
        with pytest.raises(VenueError, match=r"polymarket GET /book failed: unexpected response: unusable order book"):
            await rest.get_market_price("123")


def test_order_credentials_from_env_name_a_bad_signature_type_and_hide_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("POLYMARKET_PRIVATE_KEY", "0xwalletsecret"), ("POLYMARKET_API_KEY", "key-id"),
                        ("POLYMARKET_API_SECRET", "hmacsecret"), ("POLYMARKET_API_PASSPHRASE", "passsecret")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POLYMARKET_SIGNATURE_TYPE", "proxy")
    with pytest.raises(PolymarketOrdersUnavailable, match="POLYMARKET_SIGNATURE_TYPE must be one of 0, 1, 2, 3"):
        PolymarketOrderCredentials.from_env()
    monkeypatch.setenv("POLYMARKET_SIGNATURE_TYPE", "2")
    credentials = PolymarketOrderCredentials.from_env()
    assert credentials.signature_type == 2
    assert not any(secret in repr(credentials) for secret in ("walletsecret", "hmacsecret", "passsecret"))
