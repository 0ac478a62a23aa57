"""The simulator's true order book for one market on one venue.

A `SimLadder` is two-sided and on the YES scale (bids to buy YES, asks to sell
YES), in integer ticks of $0.0001 and integer hundredths of a contract/share.
Venue servers translate it into their own wire shapes (Kalshi: YES bids and NO
bids; Polymarket: per-token two-sided books).  It is the truth a test compares
a client's book against, so every mutation goes through methods that return
the `LevelChange`s they made — the broadcaster never has to diff books.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from markets.models import TICKS_PER_DOLLAR

# Tapered grids use the fine tail tick below 0.10 and above 0.90 (Kalshi's
# `tapered_deci_cent` price_ranges).
TAIL_LOW = 1_000
TAIL_HIGH = 9_000
# Levels per side a simulated venue book starts with (fewer where the grid runs out:
# a cent grid has 99 prices in all). Real books hold 100+ per side (a recorded
# Polymarket book: 76 bids and 86 asks; protocols/polymarket.md appendix), and
# benchmarks over shallow books measure less work than a client really does.
VENUE_DEPTH = 100

Side = Literal["bid", "ask"]


@dataclass(frozen=True, slots=True)
class LevelChange:
    """One level's size moving from `old_size` to `new_size` (0 = absent)."""

    side: Side
    price: int
    old_size: int
    new_size: int


class PriceGrid:
    """The set of valid prices of a market: a uniform tick, optionally finer in the tails.

    Stepping across a tail boundary uses the tick of the region being entered,
    so a tapered grid walks ..., 0.098, 0.099, 0.10, 0.11, ... .
    """

    def __init__(self, tick: int, tail_tick: int | None = None) -> None:
        if tick <= 0 or TICKS_PER_DOLLAR % tick:
            raise ValueError(f"tick must divide {TICKS_PER_DOLLAR}, got {tick}")
        if tail_tick is not None and (tail_tick <= 0 or tick % tail_tick):
            raise ValueError(f"tail_tick must divide tick {tick}, got {tail_tick}")
        self.tick = tick
        self.tail_tick = tail_tick
        fine = tail_tick or tick
        self.min_price = fine
        self.max_price = TICKS_PER_DOLLAR - fine

    def step_at(self, price: int, upward: bool) -> int:
        """The tick size used when moving from `price` in the given direction."""
        if self.tail_tick is None:
            return self.tick
        if upward:
            return self.tail_tick if price < TAIL_LOW or price >= TAIL_HIGH else self.tick
        return self.tail_tick if price <= TAIL_LOW or price > TAIL_HIGH else self.tick

    def contains(self, price: int) -> bool:
        if not self.min_price <= price <= self.max_price:
            return False
        if self.tail_tick is not None and (price <= TAIL_LOW or price >= TAIL_HIGH):
            return price % self.tail_tick == 0
        return price % self.tick == 0

    def up(self, price: int) -> int:
        return price + self.step_at(price, True)

    def down(self, price: int) -> int:
        return price - self.step_at(price, False)

    def floor(self, price: int) -> int:
        """Largest grid price <= `price` (may fall below `min_price` for tiny inputs)."""
        in_tail = self.tail_tick is not None and (price <= TAIL_LOW or price >= TAIL_HIGH)
        step = self.tail_tick if in_tail and self.tail_tick is not None else self.tick
        return price - price % step

    def ceil(self, price: int) -> int:
        """Smallest grid price >= `price`."""
        f = self.floor(price)
        return f if f == price else self.up(f)

    def ranges(self) -> list[tuple[int, int, int]]:
        """(start, end, step) triples in ticks, the shape of Kalshi's `price_ranges`."""
        if self.tail_tick is None:
            return [(0, TICKS_PER_DOLLAR, self.tick)]
        return [(0, TAIL_LOW, self.tail_tick), (TAIL_LOW, TAIL_HIGH, self.tick),
                (TAIL_HIGH, TICKS_PER_DOLLAR, self.tail_tick)]


class SimLadder:
    """A never-crossed two-sided book that drifts toward a moving fair value."""

    def __init__(self, tick: int, rng: random.Random, fair: float, *,
                 tail_tick: int | None = None, depth: int = 6) -> None:
        """`depth` levels per side to start with (the grid permitting); moves keep each
        side within a fifth of that (at least 4 levels) above it, trimming the deepest."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1 level per side, got {depth!r}")
        self.grid = PriceGrid(tick, tail_tick)
        self.max_depth = depth + max(4, depth // 5)
        self._rng = rng
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        mid = round(fair * TICKS_PER_DOLLAR)
        price = self.grid.floor(mid - 1)
        for _ in range(depth):
            if price < self.grid.min_price:
                break
            self.bids[price] = self._random_size()
            price = self.grid.down(price)
        price = self.grid.ceil(mid + 1)
        for _ in range(depth):
            if price > self.grid.max_price:
                break
            self.asks[price] = self._random_size()
            price = self.grid.up(price)

    # -- views -------------------------------------------------------------
    def best_bid(self) -> int | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> int | None:
        return min(self.asks) if self.asks else None

    def snapshot(self) -> tuple[dict[int, int], dict[int, int]]:
        """Copies of (bids, asks), so callers can hold them across later steps."""
        return dict(self.bids), dict(self.asks)

    # -- mutations ---------------------------------------------------------
    def step(self, fair: float) -> list[LevelChange]:
        """One market move: 1-3 level changes, biased to pull the top toward `fair`."""
        changes: list[LevelChange] = []
        for _ in range(self._rng.choice((1, 1, 2, 3))):
            r = self._rng.random()
            if len(self.bids) > self.max_depth or len(self.asks) > self.max_depth:
                change = self._trim()
            elif r < 0.4:
                change = self._chase(fair)
            elif r < 0.75:
                change = self._resize_near_top()
            elif r < 0.9:
                change = self._add_deep()
            else:
                change = self._remove_deep()
            if change is not None:
                changes.append(change)
        if not changes:
            changes.append(self._chase(fair) or self._resize_near_top() or self._add_deep())
        return [c for c in changes if c is not None]

    def set_tick(self, tick: int) -> list[LevelChange]:
        """Re-grid to a uniform `tick`; off-grid levels move outward (bids down, asks up).

        Moving outward keeps the book uncrossed; sizes that land on an existing
        level merge into it, levels pushed off the price range disappear.
        """
        self.grid = PriceGrid(tick)
        changes: list[LevelChange] = []
        for side, book, snap in (("bid", self.bids, self.grid.floor),
                                 ("ask", self.asks, self.grid.ceil)):
            for price in sorted(p for p in book if not self.grid.contains(p)):
                size = book.pop(price)
                changes.append(LevelChange(side, price, size, 0))
                target = snap(price)
                if self.grid.contains(target):
                    old = book.get(target, 0)
                    book[target] = old + size
                    changes.append(LevelChange(side, target, old, old + size))
        return _net(changes)

    def clear_side(self, side: Side) -> list[LevelChange]:
        """Empty one side (a one-sided book near a tail, or a test's edge case)."""
        book = self.bids if side == "bid" else self.asks
        changes = [LevelChange(side, p, s, 0) for p, s in sorted(book.items())]
        book.clear()
        return changes

    def shift(self, delta: int) -> list[LevelChange]:
        """Reprice the whole book by `delta` ticks: every level moves, sizes travel with it.

        Shifted prices snap outward onto the grid (bids down, asks up), which keeps
        the book uncrossed; levels pushed off the price range disappear. The side
        moving away from the other is rewritten first and, within a side, levels are
        added before old ones are removed, so no intermediate state a client sees
        (one Kalshi delta at a time) is crossed or needlessly empty.
        """
        if delta == 0:
            return []
        bids = self._shifted(self.bids, delta, self.grid.floor)
        asks = self._shifted(self.asks, delta, self.grid.ceil)
        sides: list[tuple[Side, dict[int, int]]] = [("bid", bids), ("ask", asks)]
        if delta > 0:
            sides.reverse()
        return [change for side, levels in sides for change in self._replace_side(side, levels)]

    def cap_ask(self, price: int, min_size: int) -> list[LevelChange]:
        """Offer at least `min_size` at `price` or below, moving the best ask down if needed.

        Holds a scripted cross-venue gap open: the best ask level moves to `price`
        (a grid price) with its size, raised to `min_size`, after removing bids at
        or above `price` so the book never crosses. An already compliant book is
        left alone.
        """
        best = self.best_ask()
        if best is not None and best <= price:
            return [] if self.asks[best] >= min_size else [self._set("ask", best, min_size)]
        changes = [self._set("bid", p, 0) for p in sorted(self.bids, reverse=True) if p >= price]
        size = self.asks[best] if best is not None else 0
        changes.append(self._set("ask", price, max(size, min_size)))
        if best is not None:
            changes.append(self._set("ask", best, 0))
        return changes

    # -- internals -----------------------------------------------------------
    def _shifted(self, book: dict[int, int], delta: int, snap: Callable[[int], int]) -> dict[int, int]:
        moved: dict[int, int] = {}
        for price, size in book.items():
            target = snap(price + delta)
            if self.grid.contains(target):
                moved[target] = moved.get(target, 0) + size
        return moved

    def _replace_side(self, side: Side, levels: dict[int, int]) -> list[LevelChange]:
        """Make one side equal `levels`: new and resized levels first, then removals."""
        book = self.bids if side == "bid" else self.asks
        changes = [self._set(side, p, s) for p, s in levels.items() if book.get(p) != s]
        changes.extend(self._set(side, p, 0) for p in [p for p in book if p not in levels])
        return changes

    def _random_size(self) -> int:
        if self._rng.random() < 0.5:
            return self._rng.randint(1, 500) * 100
        return self._rng.randint(100, 50_000)

    def _set(self, side: Side, price: int, size: int) -> LevelChange:
        book = self.bids if side == "bid" else self.asks
        old = book.get(price, 0)
        if size > 0:
            book[price] = size
        else:
            book.pop(price, None)
        return LevelChange(side, price, old, max(size, 0))

    def _chase(self, fair: float) -> LevelChange | None:
        """Move the top of book one step toward a noisy view of `fair`."""
        grid = self.grid
        target = fair * TICKS_PER_DOLLAR + self._rng.gauss(0.0, grid.tick * 0.7)
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None:
            price = grid.floor(int(min(target, ask if ask is not None else target)) - 1)
            price = max(price, grid.min_price)
            if ask is not None and price >= ask:
                return None
            return self._set("bid", price, self._random_size())
        if ask is None:
            price = min(max(grid.ceil(int(max(target, bid)) + 1), grid.min_price), grid.max_price)
            if price <= bid:
                return None
            return self._set("ask", price, self._random_size())
        if target <= bid:
            return self._pull("bid", bid)
        if target >= ask:
            return self._pull("ask", ask)
        # Jump straight to the grid price next to the target rather than one
        # tick at a time, so fine grids keep up with the fair-value walk.
        if target - bid >= ask - target:
            side: Side = "bid"
            price = max(grid.floor(int(target)), grid.up(bid))
        else:
            side = "ask"
            price = min(grid.ceil(int(target) + 1), grid.down(ask))
        if bid < price < ask:
            return self._set(side, price, self._random_size())
        return self._resize_near_top()

    def _pull(self, side: Side, price: int) -> LevelChange | None:
        """Remove the top level; the last level of a side goes only occasionally."""
        book = self.bids if side == "bid" else self.asks
        if len(book) == 1 and self._rng.random() > 0.2:
            return self._resize_near_top()
        return self._set(side, price, 0)

    def _resize_near_top(self) -> LevelChange | None:
        side: Side = self._rng.choice(("bid", "ask"))
        book = self.bids if side == "bid" else self.asks
        if not book:
            side = "ask" if side == "bid" else "bid"
            book = self.bids if side == "bid" else self.asks
            if not book:
                return None
        near = (heapq.nlargest if side == "bid" else heapq.nsmallest)(3, book)  # O(depth), not a sort
        price = self._rng.choice(near)
        old = book[price]
        new = old + self._rng.randint(-old // 2, max(old // 2, 100))
        return self._set(side, price, max(new, 1))

    def _add_deep(self) -> LevelChange | None:
        side: Side = self._rng.choice(("bid", "ask"))
        book = self.bids if side == "bid" else self.asks
        if not book:
            return None
        if len(book) >= self.max_depth:
            return self._remove_deep()
        if side == "bid":
            price = self.grid.down(min(book))
            if price < self.grid.min_price:
                return None
        else:
            price = self.grid.up(max(book))
            if price > self.grid.max_price:
                return None
        return self._set(side, price, self._random_size())

    def _trim(self) -> LevelChange:
        """Drop the deepest level of the deeper side (chasing fair adds at the top)."""
        side: Side = "bid" if len(self.bids) >= len(self.asks) else "ask"
        book = self.bids if side == "bid" else self.asks
        return self._set(side, min(book) if side == "bid" else max(book), 0)

    def _remove_deep(self) -> LevelChange | None:
        side: Side = self._rng.choice(("bid", "ask"))
        book = self.bids if side == "bid" else self.asks
        if len(book) < 2:
            return None
        price = min(book) if side == "bid" else max(book)
        return self._set(side, price, 0)


def _net(changes: list[LevelChange]) -> list[LevelChange]:
    """Collapse several changes of one level into one (first old -> last new)."""
    merged: dict[tuple[str, int], LevelChange] = {}
    for c in changes:
        key = (c.side, c.price)
        first = merged.get(key)
        merged[key] = c if first is None else LevelChange(c.side, c.price, first.old_size, c.new_size)
    return [c for c in merged.values() if c.old_size != c.new_size]
