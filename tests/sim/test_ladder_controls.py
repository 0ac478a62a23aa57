"""`SimLadder.shift` and `cap_ask`, the ladder moves behind a scripted gap: every
change they report replays onto a client's copy of the book without that copy ever
being crossed, one change at a time (a Kalshi client sees each as its own delta)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from markets.sim.ladder import LevelChange, SimLadder

Book = tuple[dict[int, int], dict[int, int]]


def moved_ladder(seed: int, fair: float, tapered: bool, steps: int) -> SimLadder:
    rng = random.Random(seed)
    ladder = SimLadder(100, rng, fair, tail_tick=10 if tapered else None)
    for _ in range(steps):
        ladder.step(fair)
    return ladder


def replay(book: Book, changes: list[LevelChange]) -> Book:
    """Apply changes one by one as a client would, checking each against the copy."""
    bids, asks = dict(book[0]), dict(book[1])
    for change in changes:
        side = bids if change.side == "bid" else asks
        assert side.get(change.price, 0) == change.old_size, change
        if change.new_size:
            side[change.price] = change.new_size
        else:
            side.pop(change.price)
        assert not (bids and asks and max(bids) >= min(asks)), f"crossed after {change}"
    return bids, asks


ladders = st.builds(moved_ladder, st.integers(0, 10_000), st.floats(0.05, 0.95), st.booleans(),
                    st.integers(0, 40))


@given(ladders, st.integers(-3_000, 3_000))
def test_shift_moves_the_whole_book_and_replays_uncrossed(ladder: SimLadder, delta: int) -> None:
    before = ladder.snapshot()
    changes = ladder.shift(delta)
    assert replay(before, changes) == ladder.snapshot()
    for side in ladder.snapshot():
        assert all(ladder.grid.contains(price) for price in side)
    kept = [p for p in before[0] if ladder.grid.contains(ladder.grid.floor(p + delta))]
    if len(kept) == len(before[0]):  # no bid fell off the price range
        assert sum(ladder.bids.values()) == sum(before[0].values())


@given(ladders, st.integers(0, 10_000), st.integers(1, 5_000))
def test_cap_ask_offers_the_size_at_or_below_the_price_and_replays_uncrossed(
        ladder: SimLadder, price_hint: int, min_size: int) -> None:
    price = max(ladder.grid.floor(price_hint), ladder.grid.min_price)
    before = ladder.snapshot()
    changes = ladder.cap_ask(price, min_size)
    assert replay(before, changes) == ladder.snapshot()
    best = ladder.best_ask()
    assert best is not None and best <= price and ladder.asks[best] >= min_size
    if before[1] and min(before[1]) <= price and before[1][min(before[1])] >= min_size:
        assert changes == []
