"""Games that finish: the trading schedule both venue simulators share.

Real markets end (protocols/kalshi.md and polymarket.md, appendices of
2026-11-30): a Kalshi market closes at `close_time` with no event on the book
channel, sometimes early, is determined and then settled, and may be paused and
reactivated on the way; a Polymarket market stops accepting orders and is later
resolved. One `Lifecycle` per universe holds every game's timetable, so both
venues' markets for a game end together, as the real listings of one game do.

Times are seconds after the schedule's epoch, which is the wall-clock moment the
first simulator on the universe started (`start`): REST documents carry wall-clock
`close_time`s, and a client compares them with its own clock. The defaults keep a
demo open for hours (closes spread over 2-6 h); tests pass seconds.

The timetable of game i (of n), all derived from the config and a seed:

* advertised close: spread evenly over `close_after` in universe order;
* actual close: the advertised one, or `early_by` seconds earlier for the
  `early_close_share` of games that end early (Kalshi then announces the new
  close with `close_date_updated` at that moment);
* a pause (`pause_share` of games): from 30 % of the way to the close, for
  `pause_for` seconds, ending before the close;
* determined `determine_after` seconds after the close (YES wins with the game's
  starting probability), settled `settle_after` seconds after that.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markets.sim.universe import SimMarket

# Where a pause starts, as a share of the way from the epoch to the actual close.
PAUSE_AT_SHARE = 0.3


class Phase(StrEnum):
    """Where a game's markets are in their life (venue-neutral)."""

    OPEN = "open"
    PAUSED = "paused"
    CLOSED = "closed"
    DETERMINED = "determined"
    SETTLED = "settled"


class Change(StrEnum):
    """A moment in the timetable; CLOSED happens silently on every venue's book channel."""

    PAUSED = "deactivated"
    RESUMED = "activated"
    CLOSE_MOVED = "close_date_updated"
    CLOSED = "closed"
    DETERMINED = "determined"
    SETTLED = "settled"


@dataclass(frozen=True)
class LifecycleConfig:
    """The knobs of the timetable (seconds); see the module docstring."""

    close_after: tuple[float, float] = (2 * 3600.0, 6 * 3600.0)
    early_close_share: float = 0.25
    early_by: float = 1800.0
    pause_share: float = 0.1
    pause_for: float = 300.0
    determine_after: float = 600.0
    settle_after: float = 1800.0
    listing_lag: float = 30.0
    """How long Kalshi's `status=open` listing still shows a just-closed market (gotcha #7)."""

    def __post_init__(self) -> None:
        low, high = self.close_after
        if not 0 < low <= high:
            raise ValueError(f"close_after must be 0 < first <= last seconds, got {self.close_after!r}")
        for name in ("early_close_share", "pause_share"):
            share = getattr(self, name)
            if not 0 <= share <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {share!r}")
        for name in ("early_by", "pause_for", "determine_after", "settle_after", "listing_lag"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class GameTimetable:
    """One game's moments, in seconds after the epoch; `pause` is (start, end) or None."""

    advertised_close: float
    close: float
    pause: tuple[float, float] | None
    determined: float
    settled: float
    yes_wins: bool

    @property
    def closes_early(self) -> bool:
        return self.close < self.advertised_close

    def phase(self, t: float) -> Phase:
        if t >= self.settled:
            return Phase.SETTLED
        if t >= self.determined:
            return Phase.DETERMINED
        if t >= self.close:
            return Phase.CLOSED
        if self.pause is not None and self.pause[0] <= t < self.pause[1]:
            return Phase.PAUSED
        return Phase.OPEN

    def close_known_at(self, t: float) -> float:
        """The close a venue reports at `t`: the advertised one until an early close is announced."""
        return self.close if self.closes_early and t >= self.close else self.advertised_close

    def changes(self) -> list[tuple[float, Change]]:
        moments = [(self.close, Change.CLOSED), (self.determined, Change.DETERMINED),
                   (self.settled, Change.SETTLED)]
        if self.closes_early:
            moments.append((self.close, Change.CLOSE_MOVED))
        if self.pause is not None:
            moments += [(self.pause[0], Change.PAUSED), (self.pause[1], Change.RESUMED)]
        return moments


@dataclass(frozen=True)
class Transition:
    """`change` happens to `market` at `at` seconds after the epoch."""

    at: float
    market: SimMarket
    change: Change


class Lifecycle:
    """Every game's timetable on one universe, and the epoch they count from."""

    def __init__(self, markets: Sequence[SimMarket], fairs: dict[str, float],
                 config: LifecycleConfig | None = None, seed: int = 0) -> None:
        self.config = config or LifecycleConfig()
        self.epoch: float | None = None
        rng = random.Random(seed + 7919)
        low, high = self.config.close_after
        span = high - low
        self._by_game: dict[str, GameTimetable] = {}
        for index, market in enumerate(markets):
            game_id = market.game.game_id
            advertised = low + (span * index / (len(markets) - 1) if len(markets) > 1 else 0.0)
            self._by_game[game_id] = _timetable(self.config, rng, advertised, fairs[game_id])
        self._markets = list(markets)

    def start(self, now: float | None = None) -> None:
        """Fix the epoch on the first call (the first simulator to start); later calls keep it."""
        if self.epoch is None:
            self.epoch = time.time() if now is None else now

    def timetable(self, market: SimMarket) -> GameTimetable:
        return self._by_game[market.game.game_id]

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the epoch (0 before the first simulator starts)."""
        if self.epoch is None:
            return 0.0
        return (time.time() if now is None else now) - self.epoch

    def phase(self, market: SimMarket, now: float | None = None) -> Phase:
        return self.timetable(market).phase(self.elapsed(now))

    def close_time(self, market: SimMarket, now: float | None = None) -> float:
        """The close (Unix seconds) the venues report for the market right now."""
        epoch = self.epoch if self.epoch is not None else time.time()
        return epoch + self.timetable(market).close_known_at(self.elapsed(now))

    def at(self, offset: float) -> float:
        """Unix seconds of a timetable moment."""
        return (self.epoch if self.epoch is not None else time.time()) + offset

    def transitions(self) -> list[Transition]:
        """Every moment of every game, in time order (ties: universe order, then change order)."""
        moments = [Transition(at, market, change)
                   for market in self._markets
                   for at, change in self.timetable(market).changes()]
        order = list(Change)
        return sorted(moments, key=lambda t: (t.at, order.index(t.change)))


def _timetable(config: LifecycleConfig, rng: random.Random, advertised: float,
               fair: float) -> GameTimetable:
    """Draw one game's timetable; the draws happen whatever the shares, so a seed keeps
    the other games' timetables when one share changes."""
    early, paused, wins = rng.random(), rng.random(), rng.random()
    close = advertised
    if early < config.early_close_share and config.early_by > 0:
        close = max(advertised - config.early_by, advertised * 0.5)
    pause = None
    if paused < config.pause_share and config.pause_for > 0:
        start = close * PAUSE_AT_SHARE
        pause = (start, min(start + config.pause_for, close))
    determined = close + config.determine_after
    return GameTimetable(advertised_close=advertised, close=close, pause=pause, determined=determined,
                         settled=determined + config.settle_after, yes_wins=wins < fair)


async def run_transitions(lifecycle: Lifecycle, on_change: Callable[[Transition], None]) -> None:
    """Call `on_change` for every transition when its moment comes (a simulator's task).

    Moments already past when this starts are replayed at once, in order, so a
    simulator started late still moves every game through every phase.
    """
    lifecycle.start()  # a no-op when a simulator already fixed the epoch
    for transition in lifecycle.transitions():
        delay = lifecycle.at(transition.at) - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        on_change(transition)
