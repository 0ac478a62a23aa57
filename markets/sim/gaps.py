"""Scripted cross-venue price gaps: the simulator control that makes an arbitrage exist.

Arbitrage appears in the simulators on its own only now and then, and rarely beyond
fees, so a test of the runtime's signal path needs one on demand. `GapControl`
opens a gap on one game: the "cheap" venue's YES ask is held `cents` below the
other venue's YES bid, so buying YES on the cheap venue and NO on the other
costs `cents` less than the $1 the pair pays. To look like a market rather than a
frozen quote, the cheap venue's whole ladder is repriced down once and then keeps
chasing the fair value displaced by the same amount; after every step of the game
on either venue, the cheap ask is pulled back under the other venue's bid if the
two drifted (`SimLadder.cap_ask`), so the gap never closes by itself. Closing it
reprices the ladder back up by the same amount and drops the displacement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from markets.models import TICKS_PER_DOLLAR
from markets.sim.ladder import LevelChange, SimLadder
from markets.sim.server import SimServer
from markets.sim.universe import SimMarket, Universe

CENT = TICKS_PER_DOLLAR // 100
MAX_GAP_CENTS = 50
# What the cheap ask offers at least (hundredths of a contract/share): enough that
# a signal sized by the smaller leg is a real trade, not a fraction of a contract.
MIN_GAP_SIZE = 10_00


class SimControlError(ValueError):
    """A simulator control request that cannot be carried out; the message says why."""


class UnknownGameError(SimControlError):
    """The game id is not in the simulated universe."""


class GapNotPossibleError(SimControlError):
    """The game's books cannot hold the requested gap right now."""


@dataclass(frozen=True)
class Gap:
    """An open gap: `cheap`'s YES ask sits `cents` below `rich`'s YES bid on `game_id`.

    `shift_ticks` is how far the cheap ladder was repriced down (and its quotes
    displaced from the fair value) when the gap opened.
    """

    game_id: str
    cheap: str
    rich: str
    cents: int
    shift_ticks: int


class GapControl:
    """Opens, holds and closes gaps across the venue simulators of one universe."""

    def __init__(self, universe: Universe, simulators: Mapping[str, SimServer]) -> None:
        if len(simulators) != 2:
            raise ValueError(f"a gap needs exactly two venues, got {sorted(simulators)}")
        self._markets = {m.game.game_id: m for m in universe.markets}
        self._simulators = dict(simulators)
        self._open: dict[str, Gap] = {}
        for sim in self._simulators.values():
            sim.step_listeners.append(self._after_step)

    def market(self, game_id: str) -> SimMarket:
        """The game's market; UnknownGameError names the problem."""
        market = self._markets.get(game_id)
        if market is None:
            raise UnknownGameError(f"unknown game {game_id!r}; the simulated games are e.g. "
                                   f"{', '.join(list(self._markets)[:3])}")
        return market

    def open(self, game_id: str, venue: str, cents: int) -> Gap:
        """Hold `venue`'s YES ask `cents` below the other venue's YES bid until `close`.

        Re-opening a gapped game closes the old gap first. Raises UnknownGameError,
        SimControlError (bad venue or cents) or GapNotPossibleError (the game is not
        trading, the other venue has no bid, or the bid is too low for the gap).
        """
        market = self.market(game_id)
        if venue not in self._simulators:
            raise SimControlError(f"unknown venue {venue!r}; expected one of "
                                  f"{', '.join(sorted(self._simulators))}")
        if isinstance(cents, bool) or not isinstance(cents, int) or not 1 <= cents <= MAX_GAP_CENTS:
            raise SimControlError(f"cents must be a whole number from 1 to {MAX_GAP_CENTS}, got {cents!r}")
        cheap_sim = self._simulators[venue]
        rich = next(name for name in self._simulators if name != venue)
        if not cheap_sim.trading(market):
            raise GapNotPossibleError(f"game {game_id!r} is not trading on {venue}")
        self.close(game_id)
        cheap = self._ladder(venue, market)
        requested = Gap(game_id, venue, rich, cents, shift_ticks=0)
        target = self._target(market, requested)
        best = cheap.best_ask()
        gap = replace(requested, shift_ticks=max(best - target, 0) if best is not None else 0)
        cheap_sim.fair_bias[game_id] = -gap.shift_ticks / TICKS_PER_DOLLAR
        self._open[game_id] = gap
        _publish(cheap_sim, market, cheap.shift(-gap.shift_ticks))
        self._hold(gap, market)
        return gap

    def close(self, game_id: str) -> bool:
        """Close the game's gap (False if none was open); its quotes return to the fair value."""
        market = self.market(game_id)
        gap = self._open.pop(game_id, None)
        if gap is None:
            return False
        cheap_sim = self._simulators[gap.cheap]
        cheap_sim.fair_bias.pop(game_id, None)
        _publish(cheap_sim, market, self._ladder(gap.cheap, market).shift(gap.shift_ticks))
        return True

    def _ladder(self, venue: str, market: SimMarket) -> SimLadder:
        sim = self._simulators[venue]
        return sim.ladders[sim.market_key(market)]

    def _target(self, market: SimMarket, gap: Gap) -> int:
        """The highest grid price the cheap ask may take now; GapNotPossibleError if none."""
        bid = self._ladder(gap.rich, market).best_bid()
        if bid is None:
            raise GapNotPossibleError(f"game {gap.game_id!r}: {gap.rich} has no YES bid to undercut "
                                      "right now; try again shortly")
        grid = self._ladder(gap.cheap, market).grid
        target = grid.floor(bid - gap.cents * CENT)
        if target < grid.min_price:
            raise GapNotPossibleError(
                f"game {gap.game_id!r}: {gap.rich}'s YES bid is ${bid / TICKS_PER_DOLLAR:.4f}, too low "
                f"for {gap.cheap} to offer {gap.cents} cents under it; ask for fewer cents")
        return target

    def _hold(self, gap: Gap, market: SimMarket) -> None:
        """Pull the cheap ask back under the other venue's bid if the books drifted apart.

        Twice at most: publishing may re-grid the book (a Polymarket tick change),
        which can lift the ask by a fraction of a cent once. While the other venue
        has no usable bid there is nothing to hold; the gap resumes when it returns.
        """
        ladder = self._ladder(gap.cheap, market)
        for _ in range(2):
            try:
                target = self._target(market, gap)
            except GapNotPossibleError:
                return
            changes = ladder.cap_ask(target, MIN_GAP_SIZE)
            if not changes:
                return
            self._simulators[gap.cheap].publish(market, changes)

    def _after_step(self, market: SimMarket) -> None:
        """Either venue moved the game: hold its gap, if it has one."""
        gap = self._open.get(market.game.game_id)
        if gap is not None:
            self._hold(gap, market)

def _publish(sim: SimServer, market: SimMarket, changes: list[LevelChange]) -> None:
    if changes:
        sim.publish(market, changes)
