"""Simulator controls: pause/resume, scripted cross-venue gaps, the hidden fair value,
and the HTTP routes that let another process drive them.

Books are checked as a client sees them, over loopback with the plain wire clients
of tests/sim/conftest.py, and the fee is Kalshi's published taker rule written out
here, so a gap is proven to be an arbitrage a real subscriber could act on.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from markets.sim.faults import FaultPlan
from markets.sim.gaps import GapNotPossibleError, SimControlError, UnknownGameError
from markets.sim.universe import SimMarket
from markets.sim.venues import SimulatedVenues
from tests.clients.conftest import wsk_eventually
from tests.sim.conftest import ClientBook, ConnectKalshi, ConnectPoly, DemoKey, KalshiWire
from tests.sim.test_polymarket_sim_support import ClientBooks, PolyClient

DOLLAR = 10_000
"""Ticks of $0.0001 in a dollar."""
BOOK_CHANGES = {"orderbook_snapshot", "orderbook_delta", "price_change", "tick_size_change",
                "last_trade_price"}


@dataclass(frozen=True)
class Quote:
    """The YES top of one venue's book: prices in ticks, sizes in hundredths."""

    bid: int
    bid_size: int
    ask: int
    ask_size: int


class WireBooks:
    """Every book of both venues as a subscriber rebuilds it from the wire."""

    def __init__(self, kalshi: KalshiWire, poly: PolyClient) -> None:
        self.kalshi = kalshi
        self.poly = poly
        self.kalshi_books = ClientBook()
        self.poly_books = ClientBooks()

    async def sync(self) -> list[str]:
        """Apply everything sent so far (a round trip on each socket); the frame kinds seen."""
        kinds = []
        for frame in await self.kalshi.drain():
            kinds.append(frame["type"])
            self.kalshi_books.apply(frame)
        for event in await self.poly.barrier():
            kinds.extend(e["event_type"] for e in (event if isinstance(event, list) else [event]))
            self.poly_books.apply(event)
        return kinds

    def quote(self, venue: str, market: SimMarket) -> Quote:
        if venue == "kalshi":
            yes_bids, no_bids = self.kalshi_books.books[market.kalshi_ticker]
            no_bid = max(no_bids)
            bid = max(yes_bids)
            return Quote(bid, yes_bids[bid], DOLLAR - no_bid, no_bids[no_bid])
        bids, asks = self.poly_books.books[market.yes_token_id]
        return Quote(max(bids), bids[max(bids)], min(asks), asks[min(asks)])

    def snapshot(self) -> object:
        return ({t: (dict(y), dict(n)) for t, (y, n) in self.kalshi_books.books.items()},
                {t: (dict(b), dict(a)) for t, (b, a) in self.poly_books.books.items()})


ConnectBooks = Callable[[SimulatedVenues], Awaitable[WireBooks]]


@pytest.fixture
def connect_books(kalshi_ws: ConnectKalshi, poly_ws: ConnectPoly, demo_key: DemoKey) -> ConnectBooks:
    """Factory: `await connect_books(venues)` -> every market of both venues subscribed and synced."""

    async def connect(venues: SimulatedVenues) -> WireBooks:
        venues.kalshi.register_key(demo_key.key_id, demo_key.public_pem)
        books = WireBooks(await kalshi_ws(venues.kalshi), await poly_ws(venues.polymarket))
        markets = venues.universe.markets
        replies, data = await books.kalshi.subscribe(
            channels=["orderbook_delta"], market_tickers=[m.kalshi_ticker for m in markets])
        assert [reply["type"] for reply in replies] == ["subscribed"], replies
        for frame in data:
            books.kalshi_books.apply(frame)
        await books.poly.initial([token for m in markets for token in (m.yes_token_id, m.no_token_id)])
        await books.sync()
        assert len(books.kalshi_books.books) == len(books.poly_books.books) // 2 == len(markets)
        return books

    return connect


def kalshi_fee_ticks(contracts: int, price: int) -> int:
    """Kalshi's taker fee, ceil(0.07 x C x P x (1 - P)) rounded up to the cent, in ticks."""
    cents = -(-7 * contracts * price * (DOLLAR - price) // 10**8)
    return cents * 100


def net_arbitrage(cheap: str, cheap_quote: Quote, rich_quote: Quote) -> tuple[int, int]:
    """(whole contracts, net edge in ticks) of buying YES at the cheap venue's ask and NO
    at the other's (1 - its YES bid), after the Kalshi fee on whichever leg is Kalshi's."""
    contracts = min(cheap_quote.ask_size, rich_quote.bid_size) // 100
    yes_price, no_price = cheap_quote.ask, DOLLAR - rich_quote.bid
    kalshi_leg = yes_price if cheap == "kalshi" else no_price
    cost = contracts * (yes_price + no_price) + kalshi_fee_ticks(contracts, kalshi_leg)
    return contracts, contracts * DOLLAR - cost


def mid_range_market(venues: SimulatedVenues) -> SimMarket:
    """A game priced away from the tails, where a gap of several cents fits on both grids."""
    return next(m for m in venues.universe.markets if 0.3 <= venues.universe.fair(m.game.game_id) <= 0.7)


async def test_pause_freezes_every_book_and_resume_moves_them_again(connect_books: ConnectBooks) -> None:
    async with SimulatedVenues(n_markets=4, seed=3, rate=40.0) as venues:
        books = await connect_books(venues)
        venues.pause()
        assert venues.paused
        await books.sync()  # what was on its way when the pause began
        frozen = books.snapshot()
        truth = [(venues.kalshi.book_levels(m.kalshi_ticker), venues.polymarket.true_book(m.yes_token_id))
                 for m in venues.universe.markets]
        rounds = (venues.kalshi.fairs.rounds, venues.polymarket.fairs.rounds)
        # The drivers keep running (the fair walk moves on), so every market was due
        # several times while paused: none of those updates may reach a book.
        await wsk_eventually(lambda: min(venues.kalshi.fairs.rounds - rounds[0],
                                         venues.polymarket.fairs.rounds - rounds[1]) >= 3,
                             what="both drivers to run three rounds while paused")
        kinds = await books.sync()
        assert not BOOK_CHANGES & set(kinds), f"book changes while paused: {kinds}"
        assert books.snapshot() == frozen
        assert truth == [(venues.kalshi.book_levels(m.kalshi_ticker),
                          venues.polymarket.true_book(m.yes_token_id)) for m in venues.universe.markets]
        assert venues.kalshi.connection_count == venues.polymarket.connection_count == 1

        venues.resume()
        seen: set[str] = set()

        async def moved() -> None:
            while not {"orderbook_delta", "price_change"} <= seen:
                seen.update(await books.sync())

        await asyncio.wait_for(moved(), 10)
        assert books.snapshot() != frozen


@pytest.mark.parametrize("cheap", ["kalshi", "polymarket"])
async def test_a_gap_is_an_arbitrage_after_fees_until_it_is_closed(connect_books: ConnectBooks, cheap: str) -> None:
    """Both venues keep moving (stepped by hand, round after round); after every round
    the gapped game offers YES on `cheap` + NO on the other for less than $1 after fees."""
    rich = "polymarket" if cheap == "kalshi" else "kalshi"
    async with SimulatedVenues(n_markets=6, seed=2, rate=0.0) as venues:
        books = await connect_books(venues)
        market = mid_range_market(venues)
        gap = venues.open_gap(market.game.game_id, cheap, 5)
        assert (gap.cheap, gap.rich, gap.cents) == (cheap, rich, 5)
        cheap_tops = set()
        for _ in range(30):
            await books.sync()
            cheap_quote, rich_quote = books.quote(cheap, market), books.quote(rich, market)
            assert cheap_quote.ask <= rich_quote.bid - 500, (cheap_quote, rich_quote)
            contracts, edge = net_arbitrage(cheap, cheap_quote, rich_quote)
            assert contracts >= 1 and edge > 0, (cheap_quote, rich_quote, contracts, edge)
            for ladder in (venues.kalshi.ladders[market.kalshi_ticker],
                           venues.polymarket.ladders[market.condition_id]):
                assert ladder.best_bid() < ladder.best_ask(), "a venue's own book never crosses"
            cheap_tops.add((cheap_quote.bid, cheap_quote.ask))
            venues.kalshi.step_round()
            venues.polymarket.step_round()
        assert len(cheap_tops) > 3, "the gapped book must keep moving"

        assert venues.close_gap(market.game.game_id) is True
        assert venues.close_gap(market.game.game_id) is False
        # Polymarket reports some sweeps' removals a little late: wait until the wire agrees.
        async with asyncio.timeout(10):
            while True:
                await books.sync()
                if books.poly_books.books[market.yes_token_id] == venues.polymarket.true_book(
                        market.yes_token_id):
                    break
        assert books.kalshi_books.books[market.kalshi_ticker] == venues.kalshi.book_levels(market.kalshi_ticker)
        contracts, edge = net_arbitrage(cheap, books.quote(cheap, market), books.quote(rich, market))
        assert edge <= 0 or contracts == 0, "the arbitrage must end with the gap"


async def test_gap_requests_that_cannot_be_met_are_refused_by_name() -> None:
    venues = SimulatedVenues(n_markets=6, seed=2, rate=0.0)
    game = mid_range_market(venues).game.game_id
    with pytest.raises(UnknownGameError, match="no-such-game"):
        venues.open_gap("no-such-game", "kalshi", 5)
    with pytest.raises(SimControlError, match="unknown venue 'betfair'"):
        venues.open_gap(game, "betfair", 5)
    for cents in (0, 51, True, 2.5):
        with pytest.raises(SimControlError, match="cents must be a whole number"):
            venues.open_gap(game, "kalshi", cents)  # type: ignore[arg-type]
    tail = next(m for m in venues.universe.markets if venues.universe.fair(m.game.game_id) < 0.1)
    with pytest.raises(GapNotPossibleError, match="too low"):
        venues.open_gap(tail.game.game_id, "polymarket", 20)
    with pytest.raises(UnknownGameError):
        venues.fair("no-such-game")


async def test_fair_is_the_value_both_venues_quote_around() -> None:
    venues = SimulatedVenues(n_markets=20, seed=1, rate=0.0)
    start = venues.fairs()
    for _ in range(60):
        venues.kalshi.step_round()
        venues.polymarket.step_round()
    venues.kalshi.step_round()  # one venue a round ahead: its walk holds the current value
    fairs = venues.fairs()
    assert set(fairs) == {m.game.game_id for m in venues.universe.markets}
    assert fairs != start, "the hidden probabilities walk"
    distances = []
    for market in venues.universe.markets:
        game = market.game.game_id
        assert venues.fair(game) == fairs[game] == venues.kalshi.fairs.fair(game)
        for ladder in (venues.kalshi.ladders[market.kalshi_ticker],
                       venues.polymarket.ladders[market.condition_id]):
            bid, ask = ladder.best_bid(), ladder.best_ask()
            if bid is not None and ask is not None:
                distances.append(abs((bid + ask) / 2 - fairs[game] * DOLLAR))
    assert len(distances) >= 30
    assert statistics.median(distances) < 100 and max(distances) < 300, sorted(distances)


# -- the HTTP control surface ---------------------------------------------------------------

async def test_control_routes_drive_the_simulators(http: aiohttp.ClientSession) -> None:
    async with SimulatedVenues(n_markets=6, seed=2, rate=0.0, control_port=0) as venues:
        url = venues.control_url
        assert url.startswith("http://127.0.0.1:") and url.endswith("/_sim")
        async with http.post(f"{url}/pause") as response:
            assert (response.status, await response.json()) == (200, {"paused": True})
        assert venues.paused
        async with http.post(f"{url}/resume") as response:
            assert (response.status, await response.json()) == (200, {"paused": False})
        assert not venues.paused

        market = mid_range_market(venues)
        game = market.game.game_id
        async with http.post(f"{url}/gap", json={"game_id": game, "venue": "polymarket", "cents": 4}) as response:
            assert response.status == 200
            assert await response.json() == {"game_id": game, "venue": "polymarket",
                                             "other_venue": "kalshi", "cents": 4}
        kalshi_bid = venues.kalshi.ladders[market.kalshi_ticker].best_bid()
        poly_ask = venues.polymarket.ladders[market.condition_id].best_ask()
        assert kalshi_bid is not None and poly_ask is not None and poly_ask <= kalshi_bid - 400
        for closed in (True, False):
            async with http.delete(f"{url}/gap/{game}") as response:
                assert (response.status, await response.json()) == (200, {"game_id": game, "closed": closed})

        async with http.get(f"{url}/fair") as response:
            assert response.status == 200
            assert await response.json() == venues.fairs()


GAME = "<game>"
BAD_REQUESTS = [
    ("POST", "/gap", {"game_id": "no-such-game", "venue": "kalshi", "cents": 5}, 404, "unknown game"),
    ("POST", "/gap", {"game_id": GAME, "venue": "betfair", "cents": 5}, 400, "unknown venue"),
    ("POST", "/gap", {"game_id": GAME, "venue": "kalshi", "cents": "5"}, 400, "cents must be"),
    ("POST", "/gap", {"game_id": GAME, "venue": "kalshi", "cents": 0}, 400, "cents must be"),
    ("POST", "/gap", {"game_id": GAME, "venue": "kalshi"}, 400, "missing ['cents']"),
    ("POST", "/gap", {"game_id": GAME, "venue": "kalshi", "cents": 5, "size": 9}, 400, "unexpected ['size']"),
    ("POST", "/gap", {"game_id": 7, "venue": "kalshi", "cents": 5}, 400, "game_id must be a string"),
    ("POST", "/gap", [GAME, "kalshi", 5], 400, "JSON object"),
    ("POST", "/gap", "game=x", 400, "body must be JSON"),
    ("POST", "/gap", {"game_id": "<tail>", "venue": "kalshi", "cents": 30}, 409, "too low"),
    ("DELETE", "/gap/no-such-game", None, 404, "unknown game"),
    ("POST", "/faults", {"faults": "nonsense=1"}, 400, "unknown fault 'nonsense'"),
    ("POST", "/faults", {"faults": "drop_after=0"}, 400, "drop_after must be an integer >= 1"),
    ("POST", "/faults", {"faults": "drop_after=5", "venue": "betfair"}, 400, "unknown venue 'betfair'"),
    ("POST", "/faults", {"faults": 5}, 400, 'needs "faults"'),
    ("POST", "/faults", {"faults": "", "delay": 1}, 400, 'needs "faults"'),
    ("GET", "/pause", None, 405, "Method Not Allowed"),
    ("GET", "/nowhere", None, 404, "Not Found"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS,
                         ids=[f"{r[3]}-{r[4]}" for r in BAD_REQUESTS])
async def test_control_routes_answer_bad_requests_with_json_errors(
        http: aiohttp.ClientSession, method: str, path: str, body: Any, status: int, message: str) -> None:
    async with SimulatedVenues(n_markets=6, seed=2, rate=0.0, control_port=0) as venues:
        games = {"<game>": mid_range_market(venues),
                 "<tail>": next(m for m in venues.universe.markets if venues.universe.fair(m.game.game_id) < 0.1)}
        if isinstance(body, dict) and body.get("game_id") in games:
            body = body | {"game_id": games[body["game_id"]].game.game_id}
        options = {"data": body} if isinstance(body, str) else {"json": body} if body is not None else {}
        before = venues.kalshi.book_levels(games["<game>"].kalshi_ticker)
        async with http.request(method, venues.control_url + path, **options) as response:
            assert response.status == status
            assert response.content_type == "application/json"
            error = (await response.json())["error"]
        assert message in error, error
        assert venues.kalshi.book_levels(games["<game>"].kalshi_ticker) == before


async def test_tops_route_is_the_top_every_subscriber_rebuilds_from_the_wire(
        http: aiohttp.ClientSession, connect_books: ConnectBooks) -> None:
    """`GET /_sim/tops` is the truth a runtime test compares workers' records with: after
    real moves it must equal, market by market, the top a wire subscriber rebuilt."""
    async with SimulatedVenues(n_markets=4, seed=5, rate=0.0, control_port=0) as venues:
        books = await connect_books(venues)
        for _ in range(20):
            venues.kalshi.step_round()
            venues.polymarket.step_round()
        await books.sync()
        async with http.get(f"{venues.control_url}/tops") as response:
            assert response.status == 200
            tops = await response.json()
        markets = venues.universe.markets
        assert set(tops) == {"kalshi", "polymarket"}
        assert set(tops["kalshi"]) == {m.kalshi_ticker for m in markets}
        assert set(tops["polymarket"]) == {m.condition_id for m in markets}
        for market in markets:
            for venue, key in (("kalshi", market.kalshi_ticker), ("polymarket", market.condition_id)):
                quote = books.quote(venue, market)
                assert tops[venue][key] == [quote.bid, quote.ask, quote.bid_size, quote.ask_size], (venue, key)

        ladder = venues.kalshi.ladders[markets[0].kalshi_ticker]
        ladder.asks.clear()
        bid = ladder.best_bid()
        assert venues.tops()["kalshi"][markets[0].kalshi_ticker] == [bid, None, ladder.bids[bid], None]


async def test_faults_route_switches_one_venue_live_connections_included(
        http: aiohttp.ClientSession, connect_books: ConnectBooks) -> None:
    async with SimulatedVenues(n_markets=4, seed=5, rate=0.0, control_port=0) as venues:
        await connect_books(venues)
        assert venues.kalshi.connection_count == venues.polymarket.connection_count == 1
        async with http.post(f"{venues.control_url}/faults",
                             json={"venue": "kalshi", "faults": "drop_after=1,snapshot_delay=0.25"}) as response:
            assert (response.status, await response.json()) == (
                200, {"venue": "kalshi", "faults": "drop_after=1,snapshot_delay=0.25"})
        assert (venues.kalshi.faults.drop_after, venues.kalshi.faults.snapshot_delay) == (1, 0.25)
        assert venues.polymarket.faults == FaultPlan()
        # The already open Kalshi socket counts under the new plan: its next data frame is its last.
        venues.kalshi.step_round()
        venues.polymarket.step_round()
        await wsk_eventually(lambda: venues.kalshi.connection_count == 0, what="the Kalshi socket to be dropped")
        assert venues.polymarket.connection_count == 1

        async with http.post(f"{venues.control_url}/faults", json={"faults": ""}) as response:
            assert response.status == 200
        for sim in (venues.kalshi, venues.polymarket):
            assert not sim.faults.frame_faults_enabled and sim.faults.snapshot_delay == 0, sim.faults
