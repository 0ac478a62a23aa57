"""One Polymarket market as the simulator sees it: the YES ladder and its two token books.

Polymarket publishes a two-sided book per token, and the NO token's book is the
exact mirror of the YES token's (a NO bid at 1-p is the YES ask at p, same size).
The simulator therefore keeps ONE ladder per market on the YES scale and derives
both token views from it, so the two can never disagree; this module owns that
derivation plus the per-market facts the REST endpoints report (tick size, last
trade, time of the last change, recorded mids for `/prices-history`).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from markets.models import TICKS_PER_DOLLAR
from markets.sim.ladder import LevelChange, SimLadder
from markets.sim.universe import SimMarket

from .wire import TICK_CENT, TICK_DECI_CENT, mirror_price

# The venue narrows the tick from 0.01 to 0.001 when a book's price goes below 0.04
# or above 0.96 (docs, `tick_size_change`); it widens again only once the top is back
# well inside, so a price hovering at the boundary does not flap the grid.
FINE_BELOW = 400
FINE_ABOVE = 9_600
COARSE_FROM = 600
COARSE_TO = 9_400

HISTORY_POINTS = 20_000

Top = tuple[int | None, int | None]


@dataclass(frozen=True, slots=True)
class Trade:
    """A match on the YES book: `buy` means the buyer was the aggressor (took an ask)."""

    price: int
    size: int
    buy: bool

    def mirrored(self) -> Trade:
        """The same match seen from the NO token: at 1 - p, with the opposite aggressor."""
        return Trade(mirror_price(self.price), self.size, not self.buy)


def initial_tick(fair: float) -> int:
    """The grid a market starts on: fine in the tails, cent in the middle."""
    ticks = fair * TICKS_PER_DOLLAR
    return TICK_DECI_CENT if ticks < FINE_BELOW or ticks > FINE_ABOVE else TICK_CENT


def _best(base: Mapping[int, int], overlay: Mapping[int, int], pick: Callable[..., int]) -> int | None:
    """Best price of `base` with some levels' sizes replaced by `overlay` (0 = absent)."""
    if not overlay:
        return pick(base) if base else None
    live = [p for p in base if overlay.get(p, 1) > 0]
    live.extend(p for p, size in overlay.items() if size > 0 and p not in base)
    return pick(live) if live else None


def tops_around(bids: Mapping[int, int], asks: Mapping[int, int],
                changes: Sequence[LevelChange]) -> list[Top]:
    """YES top of book before the first change and after each one.

    The ladder has already applied `changes`; walking them backwards with their
    `old_size`s rebuilds every intermediate state without copying the book, so each
    `price_change` entry can carry the post-change `best_bid`/`best_ask` the venue
    sends for that entry. Returns len(changes) + 1 tops: [before, after c0, after c1, ...].
    """
    overlay_bids: dict[int, int] = {}
    overlay_asks: dict[int, int] = {}
    tops: list[Top] = [(None, None)] * (len(changes) + 1)
    for k in range(len(changes), -1, -1):
        tops[k] = (_best(bids, overlay_bids, max), _best(asks, overlay_asks, min))
        if k:
            change = changes[k - 1]
            (overlay_bids if change.side == "bid" else overlay_asks)[change.price] = change.old_size
    return tops


def mirror_top(top: Top) -> Top:
    """The NO token's top from the YES top: NO bid = 1 - YES ask, NO ask = 1 - YES bid."""
    bid, ask = top
    return (None if ask is None else mirror_price(ask), None if bid is None else mirror_price(bid))


class MarketState:
    """The simulator's truth for one market: ladder, tick, last trade, change time, mids."""

    def __init__(self, market: SimMarket, ladder: SimLadder, tick: int) -> None:
        self.market = market
        self.ladder = ladder
        self.tick = tick
        self.last_trade: Trade | None = None
        self.changed_ms = time.time_ns() // 1_000_000
        self.mids: collections.deque[tuple[int, int]] = collections.deque(maxlen=HISTORY_POINTS)
        self.record_mid()

    def is_yes(self, token_id: str) -> bool:
        return token_id == self.market.yes_token_id

    def token_book(self, token_id: str) -> tuple[dict[int, int], dict[int, int]]:
        """(bids, asks) of one token in ticks -> hundredths; NO is the mirror of YES."""
        bids, asks = self.ladder.bids, self.ladder.asks
        if self.is_yes(token_id):
            return dict(bids), dict(asks)
        return ({mirror_price(p): s for p, s in asks.items()},
                {mirror_price(p): s for p, s in bids.items()})

    def yes_top(self) -> Top:
        return self.ladder.best_bid(), self.ladder.best_ask()

    def token_top(self, token_id: str) -> Top:
        top = self.yes_top()
        return top if self.is_yes(token_id) else mirror_top(top)

    def yes_mid(self) -> int | None:
        bid, ask = self.yes_top()
        if bid is None or ask is None:
            return None
        return (bid + ask) // 2

    def token_mid(self, token_id: str) -> int | None:
        mid = self.yes_mid()
        if mid is None or self.is_yes(token_id):
            return mid
        return mirror_price(mid)

    def token_last_trade(self, token_id: str) -> Trade | None:
        """The last match as seen from one token."""
        trade = self.last_trade
        if trade is None or self.is_yes(token_id):
            return trade
        return trade.mirrored()

    def touch(self) -> None:
        self.changed_ms = time.time_ns() // 1_000_000

    def record_mid(self) -> None:
        """Keep at most one mid per second: enough for `/prices-history` buckets."""
        mid = self.yes_mid()
        if mid is None:
            return
        second = int(time.time())
        if self.mids and self.mids[-1][0] == second:
            self.mids[-1] = (second, mid)
        else:
            self.mids.append((second, mid))

    def wanted_tick(self) -> int:
        """The grid the venue's rule asks for given the current top of book."""
        bid, ask = self.yes_top()
        prices = [p for p in (bid, ask) if p is not None]
        if not prices:
            return self.tick
        if self.tick == TICK_CENT and any(p < FINE_BELOW or p > FINE_ABOVE for p in prices):
            return TICK_DECI_CENT
        if self.tick == TICK_DECI_CENT and all(COARSE_FROM <= p <= COARSE_TO for p in prices):
            return TICK_CENT
        return self.tick
