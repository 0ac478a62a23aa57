"""Simulated books carry realistic depth: 100 levels per side by default, configurable.

Real venue books hold 100+ levels per side (protocols/polymarket.md appendix); the
simulators used to start with 6, so every benchmark and client test measured a toy.
A side holds fewer only where the price grid runs out (a cent grid has 99 prices).
"""

from __future__ import annotations

from markets.sim.kalshi import KalshiSimulator
from markets.sim.ladder import VENUE_DEPTH, SimLadder
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.universe import build_universe
from tests.conftest import StartPoly
from tests.sim.conftest import ConnectPoly
from tests.sim.test_polymarket_sim import subscribed
from tests.sim.test_polymarket_sim_support import ClientBooks


def grid_room(ladder: SimLadder, side: str) -> int:
    """Grid prices from the side's best outward to the end of the price range."""
    grid, count = ladder.grid, 0
    price = ladder.best_bid() if side == "bid" else ladder.best_ask()
    while price is not None and grid.min_price <= price <= grid.max_price:
        count += 1
        price = grid.down(price) if side == "bid" else grid.up(price)
    return count


def assert_depth(ladders: dict[str, SimLadder], depth: int) -> None:
    for ladder in ladders.values():
        assert len(ladder.bids) == min(depth, grid_room(ladder, "bid"))
        assert len(ladder.asks) == min(depth, grid_room(ladder, "ask"))


def test_venue_books_start_100_levels_deep_where_the_grid_allows() -> None:
    universe = build_universe(12, seed=4)
    for sim in (KalshiSimulator(universe, rate=0), PolymarketSimulator(universe, rate=0)):
        assert sim.depth == VENUE_DEPTH == 100
        assert_depth(sim.ladders, VENUE_DEPTH)
        assert max(max(len(l.bids), len(l.asks)) for l in sim.ladders.values()) >= 100


def test_depth_is_configurable_and_stays_bounded_as_markets_move() -> None:
    sim = PolymarketSimulator(build_universe(6, seed=4), rate=0, depth=5)
    assert_depth(sim.ladders, 5)
    for _ in range(300):
        for ladder in sim.ladders.values():
            ladder.step(0.5)
    for ladder in sim.ladders.values():
        assert 0 < len(ladder.bids) <= ladder.max_depth and 0 < len(ladder.asks) <= ladder.max_depth


async def test_the_initial_dump_carries_the_whole_depth(start_poly: StartPoly, poly_ws: ConnectPoly) -> None:
    sim = await start_poly(n_markets=6)
    tokens = [m.yes_token_id for m in sim.universe.markets]
    books = ClientBooks()
    await subscribed(sim, poly_ws, tokens, books)
    assert all(books.books[t] == sim.true_book(t) for t in tokens)
    assert max(max(len(books.books[t][0]), len(books.books[t][1])) for t in tokens) >= 100
