"""The market universe: games, and per game the market on each venue and what its YES pays on.

A game is the unit a GameShard works on: its markets are the same contest on
different venues. Cross-venue arbitrage needs to know whether two markets' YES
outcomes are the same team or opposite teams, so each market records the outcome
its YES pays on (`yes`); two markets of a game are *inverted* when those differ.

Sources: a TOML config file (`load_config`), the simulators' universe
(`sim_games`), or REST discovery (`broker.discovery`). Games travel to shards inside
the broker's DIRECTORY as plain dicts (`to_wire` / `from_wire`).

Config file format::

    [[game]]
    id = "nfl-kc-buf-20261123"          # unique; used as the signal topic
    name = "Kansas City at Buffalo"     # optional, for displays
      [game.kalshi]
      market = "KXNFLGAME-26NOV23KCBUF-KC"
      yes = "KC"                        # the outcome this market's YES pays on
      name = "KC wins"                  # optional
      [game.polymarket]
      market = "0x<64 hex>"             # condition id (or a token id)
      yes = "KC"
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.protocol import MarketKey
from markets.models import Platform


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class MarketRef:
    """One venue's market of a game."""

    venue: Platform
    market_id: str
    yes: str
    name: str = ""

    @property
    def key(self) -> MarketKey:
        return self.venue, self.market_id


@dataclass(frozen=True)
class Game:
    game_id: str
    name: str
    markets: tuple[MarketRef, ...]

    def market(self, venue: Platform) -> MarketRef | None:
        return next((m for m in self.markets if m.venue is venue), None)

    @property
    def inverted(self) -> bool:
        """True when the two venues' YES outcomes are opposite teams."""
        kalshi, poly = self.market(Platform.KALSHI), self.market(Platform.POLYMARKET)
        return kalshi is not None and poly is not None and kalshi.yes.casefold() != poly.yes.casefold()

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.game_id, "name": self.name,
                "markets": [[m.venue.value, m.market_id, m.yes, m.name] for m in self.markets]}

    @classmethod
    def from_wire(cls, raw: object) -> Game:
        """Rebuild a game from a DIRECTORY entry; ValueError naming the problem."""
        if not isinstance(raw, dict):
            raise ValueError(f"game entry must be a map, got {type(raw).__name__}")
        game_id, name, markets = raw.get("id"), raw.get("name", ""), raw.get("markets")
        if not isinstance(game_id, str) or not game_id or not isinstance(name, str) or not isinstance(markets, list):
            raise ValueError(f"bad game entry {raw!r:.120}")
        refs = []
        for entry in markets:
            if not (isinstance(entry, list) and len(entry) == 4 and all(isinstance(x, str) for x in entry)):
                raise ValueError(f"game {game_id}: bad market entry {entry!r:.120}")
            if not entry[1] or "|" in entry[1]:
                # Checked here, not when subscribing: `codec.topic` would raise a plain ValueError
                # inside the subscriber's directory handling, which only survives ProtocolError.
                raise ValueError(f"game {game_id}: bad market id {entry[1]!r:.80}")
            refs.append(MarketRef(Platform(entry[0]), entry[1], entry[2], entry[3]))
        return cls(game_id, name, tuple(refs))


def check_games(games: Iterable[Game]) -> list[Game]:
    """Reject duplicate game ids and a market listed under two games (its prices would be ambiguous)."""
    seen_games: set[str] = set()
    seen_markets: dict[MarketKey, str] = {}
    result = []
    for game in games:
        if game.game_id in seen_games:
            raise ConfigError(f"game {game.game_id!r} is listed twice")
        seen_games.add(game.game_id)
        for market in game.markets:
            other = seen_markets.setdefault(market.key, game.game_id)
            if other != game.game_id:
                raise ConfigError(f"market {market.venue.value}/{market.market_id} is in games "
                                  f"{other!r} and {game.game_id!r}")
        result.append(game)
    return result


def universe_markets(games: Iterable[Game]) -> list[MarketKey]:
    return [m.key for g in games for m in g.markets]


# -- config file ------------------------------------------------------------------------


def load_config(path: Path) -> dict[str, Any]:
    """Parse a TOML config file; ConfigError names the file and what is wrong."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable (check its permissions)") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def games_from_config(config: Mapping[str, Any], source: str) -> list[Game]:
    """The `[[game]]` tables of a parsed config; ConfigError names the game and field."""
    raw_games = config.get("game", [])
    if not isinstance(raw_games, list):
        raise ConfigError(f"{source}: 'game' must be an array of tables ([[game]])")
    games = []
    for index, raw in enumerate(raw_games):
        where = f"{source}: game #{index + 1}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(raw) - {"id", "name", "kalshi", "polymarket"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        game_id = raw.get("id")
        if not isinstance(game_id, str) or not game_id.strip() or "|" in game_id:
            raise ConfigError(f"{where}: 'id' must be a non-empty string without '|'")
        where = f"{source}: game {game_id!r}"
        name = raw.get("name", game_id)
        if not isinstance(name, str):
            raise ConfigError(f"{where}: 'name' must be a string")
        markets = tuple(_market_from_config(raw[venue.value], venue, where)
                        for venue in Platform if venue.value in raw)
        if not markets:
            raise ConfigError(f"{where} has no [game.kalshi] or [game.polymarket] market")
        games.append(Game(game_id, name, markets))
    return check_games(games)


def _market_from_config(raw: object, venue: Platform, where: str) -> MarketRef:
    where = f"{where}, {venue.value}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table with 'market' and 'yes'")
    unknown = set(raw) - {"market", "yes", "name"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    market, yes, name = raw.get("market"), raw.get("yes"), raw.get("name", "")
    if not isinstance(market, str) or not market.strip() or "|" in market:
        raise ConfigError(f"{where}: 'market' must be the venue's market id (no '|')")
    if not isinstance(yes, str) or not yes.strip():
        raise ConfigError(f"{where}: 'yes' must name the outcome this market's YES pays on")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: 'name' must be a string")
    return MarketRef(venue, market.strip(), yes.strip(), name)


# -- the simulators' universe ----------------------------------------------------------------


def sim_games(n_markets: int = 20, seed: int = 0) -> list[Game]:
    """The games `arbees sim` serves with the same `n_markets` and `seed`: each listed on both venues.

    The simulators' YES is the team in the Kalshi ticker's suffix on both venues
    (Polymarket's outcome 0 pays to the YES token), so the markets are not inverted.
    """
    from markets.sim.universe import build_universe

    games = []
    for market in build_universe(n_markets, seed=seed).markets:
        yes_team = market.kalshi_ticker.rsplit("-", 1)[-1]
        games.append(Game(market.game.game_id, market.title, (
            MarketRef(Platform.KALSHI, market.kalshi_ticker, yes_team, f"{yes_team} wins"),
            MarketRef(Platform.POLYMARKET, market.condition_id, yes_team, market.outcomes[0]),
        )))
    return games
