"""The simulated market universe shared by the Kalshi and Polymarket simulators.

Every simulated market is one sports game listed on BOTH venues, so that the same
hidden probability drives both books and cross-venue price differences (and the
occasional arbitrage) arise naturally rather than being scripted.  Everything is
derived from one seeded `random.Random`, so a seed always yields the same
tickers, ids and starting probabilities.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from markets.sim.lifecycle import Lifecycle, LifecycleConfig

# Probabilities are kept strictly inside (FAIR_MIN, FAIR_MAX): the venues never
# quote a market at 0 or 1, and the tails are where sub-penny grids matter.
FAIR_MIN = 0.02
FAIR_MAX = 0.98
# Standard deviation of one random-walk step, in log-odds.  Small enough that a
# book moves by a tick or two per round, large enough that prices visibly drift.
FAIR_STEP_SIGMA = 0.01

LINEAR_CENT = "linear_cent"
TAPERED_DECI_CENT = "tapered_deci_cent"

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

# (league, [(code, city, nickname), ...]) — enough teams that a few hundred
# markets still get distinct match-ups.
_LEAGUES: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("NBA", (
        ("BOS", "Boston", "Celtics"), ("LAL", "Los Angeles L", "Lakers"),
        ("NYK", "New York", "Knicks"), ("MIA", "Miami", "Heat"),
        ("GSW", "Golden State", "Warriors"), ("DEN", "Denver", "Nuggets"),
        ("PHI", "Philadelphia", "76ers"), ("MIL", "Milwaukee", "Bucks"),
        ("DAL", "Dallas", "Mavericks"), ("PHX", "Phoenix", "Suns"),
    )),
    ("NFL", (
        ("KC", "Kansas City", "Chiefs"), ("BUF", "Buffalo", "Bills"),
        ("PHI", "Philadelphia", "Eagles"), ("SF", "San Francisco", "49ers"),
        ("DAL", "Dallas", "Cowboys"), ("GB", "Green Bay", "Packers"),
        ("BAL", "Baltimore", "Ravens"), ("DET", "Detroit", "Lions"),
    )),
    ("NHL", (
        ("BOS", "Boston", "Bruins"), ("TOR", "Toronto", "Maple Leafs"),
        ("NYR", "New York R", "Rangers"), ("EDM", "Edmonton", "Oilers"),
        ("COL", "Colorado", "Avalanche"), ("VGK", "Vegas", "Golden Knights"),
    )),
    ("MLB", (
        ("NYY", "New York Y", "Yankees"), ("LAD", "Los Angeles D", "Dodgers"),
        ("HOU", "Houston", "Astros"), ("ATL", "Atlanta", "Braves"),
        ("CHC", "Chicago C", "Cubs"), ("SEA", "Seattle", "Mariners"),
    )),
)


@dataclass(frozen=True)
class SimGame:
    """One game; `home`/`away` are team codes as they appear in Kalshi tickers.

    `starts_at` (UTC) lets the venues derive open/close/expiration times.
    """

    game_id: str
    league: str
    home: str
    away: str
    starts_at: datetime | None = None


@dataclass(frozen=True)
class SimMarket:
    """One binary market on one game, with its identity on both venues.

    The market's YES outcome is "the team in the ticker suffix wins".  On
    Polymarket, `outcomes[0]` is that YES outcome and pays to `yes_token_id`;
    `outcomes[1]` pays to `no_token_id`.
    """

    game: SimGame
    kalshi_ticker: str
    kalshi_market_id: str
    condition_id: str
    yes_token_id: str
    no_token_id: str
    outcomes: tuple[str, str]
    price_level_structure: str
    event_ticker: str
    series_ticker: str
    title: str


class FairWalk:
    """One simulator's copy of the hidden probabilities and their random walk.

    Every copy a universe hands out starts from the same probabilities and the
    same seed, so after n rounds all copies agree exactly, whatever the wall
    clock did: two venues on one universe see the same fair value at the same
    round, and a seed reproduces both venues' markets, not only the one whose
    driver happened to move a shared walk first.
    """

    def __init__(self, logits: dict[str, float], seed: int) -> None:
        self._logit = dict(logits)
        self._rng = random.Random(seed)
        self.rounds = 0

    def fair(self, game_id: str) -> float:
        """Probability that the YES outcome of the game's market wins, at this round."""
        return _clamp(_sigmoid(self._logit[game_id]))

    def step(self) -> None:
        """Move every game's probability one small random-walk step.

        The walk is in log-odds so that it slows down near the bounds instead
        of piling up against them.
        """
        low, high = _logit(FAIR_MIN), _logit(FAIR_MAX)
        gauss = self._rng.gauss
        for game_id, x in self._logit.items():
            x += gauss(0.0, FAIR_STEP_SIGMA)
            self._logit[game_id] = min(max(x, low * 0.999), high * 0.999)
        self.rounds += 1


class Universe:
    """The markets plus their hidden win probabilities at round 0, and when each game ends.

    Fair values live here rather than in a simulator so that two simulators
    built on one universe quote the same underlying probability; each takes
    its own `walk()` and steps it once per round. The `lifecycle` (closes,
    pauses, results) lives here for the same reason: both venues' markets of a
    game must end together.
    """

    def __init__(self, markets: list[SimMarket], fairs: dict[str, float], walk_seed: int = 0,
                 lifecycle: LifecycleConfig | None = None) -> None:
        self.markets = markets
        self.walk_seed = walk_seed
        self.lifecycle = Lifecycle(markets, fairs, lifecycle, seed=walk_seed)
        self._logit = {game_id: _logit(p) for game_id, p in fairs.items()}
        self.by_kalshi_ticker = {m.kalshi_ticker: m for m in markets}
        self.by_condition = {m.condition_id: m for m in markets}
        self.by_token = {}
        for m in markets:
            self.by_token[m.yes_token_id] = m
            self.by_token[m.no_token_id] = m

    def fair(self, game_id: str) -> float:
        """Probability that the YES outcome of the game's market wins, before any step."""
        return _clamp(_sigmoid(self._logit[game_id]))

    def walk(self) -> FairWalk:
        """A fresh copy of the fair-value walk at round 0 (identical for every caller)."""
        return FairWalk(self._logit, self.walk_seed)


def build_universe(n_markets: int = 20, seed: int = 0,
                   lifecycle: LifecycleConfig | None = None) -> Universe:
    """Build `n_markets` markets, one per game, deterministically for `seed`.

    Every third market uses Kalshi's `tapered_deci_cent` structure and starts
    near a tail, so that sub-penny ticks are exercised from the first snapshot.
    `lifecycle` sets when games close and settle (default: hours from the start).
    """
    if n_markets < 1:
        raise ValueError(f"n_markets must be >= 1, got {n_markets}")
    rng = random.Random(seed)
    markets: list[SimMarket] = []
    fairs: dict[str, float] = {}
    used_events: set[str] = set()
    base_day = date(2026, 11, 1)
    while len(markets) < n_markets:
        i = len(markets)
        league, teams = _LEAGUES[i % len(_LEAGUES)]
        away, home = rng.sample(teams, 2)
        day = base_day + timedelta(days=rng.randrange(60))
        series = f"KX{league}GAME"
        event = f"{series}-{day:%y}{_MONTHS[day.month - 1]}{day:%d}{away[0]}{home[0]}"
        if event in used_events:
            continue
        used_events.add(event)
        yes_team, no_team = (home, away) if rng.random() < 0.5 else (away, home)
        structure = TAPERED_DECI_CENT if i % 3 == 1 else LINEAR_CENT
        game = SimGame(game_id=f"{league.lower()}-{day:%Y%m%d}-{away[0].lower()}-{home[0].lower()}",
                       league=league, home=home[0], away=away[0],
                       starts_at=datetime.combine(day, time(hour=rng.choice((17, 19, 23))), UTC))
        outcomes = (yes_team[2], no_team[2]) if i % 2 == 0 else ("Yes", "No")
        markets.append(SimMarket(
            game=game,
            kalshi_ticker=f"{event}-{yes_team[0]}",
            kalshi_market_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            condition_id="0x" + f"{rng.getrandbits(256):064x}",
            yes_token_id=str(rng.getrandbits(252) | (1 << 251)),
            no_token_id=str(rng.getrandbits(252) | (1 << 251)),
            outcomes=outcomes,
            price_level_structure=structure,
            event_ticker=event,
            series_ticker=series,
            title=f"{away[1]} at {home[1]} Winner?",
        ))
        if structure == TAPERED_DECI_CENT:
            fair = rng.uniform(0.03, 0.08) if rng.random() < 0.5 else rng.uniform(0.92, 0.97)
        else:
            fair = rng.uniform(0.15, 0.85)
        fairs[game.game_id] = fair
    return Universe(markets, fairs, walk_seed=seed, lifecycle=lifecycle)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _clamp(p: float) -> float:
    return min(max(p, FAIR_MIN + 1e-6), FAIR_MAX - 1e-6)
