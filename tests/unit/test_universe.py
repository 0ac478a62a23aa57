"""The market universe: the TOML config, the wire form of games, and the simulators' games (broker/universe.py).

A bad config must stop `arbees launch` with one line naming the file, the game and
the field, so each rejection is checked for the words an operator needs.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from broker.universe import (
    ConfigError,
    Game,
    MarketRef,
    games_from_config,
    load_config,
    sim_games,
)
from markets.models import Platform
from markets.sim.universe import build_universe

K, P = Platform.KALSHI, Platform.POLYMARKET
CONDITION = "0x" + "ab" * 32

VALID = f"""
[[game]]
id = "nfl-kc-buf"
name = "Kansas City at Buffalo"
  [game.kalshi]
  market = "KXNFLGAME-26NOV23KCBUF-KC"
  yes = "KC"
  name = "KC wins"
  [game.polymarket]
  market = "{CONDITION}"
  yes = "kc"

[[game]]
id = "nba-bos-lal"
  [game.kalshi]
  market = " KXNBAGAME-26NOV23BOSLAL-BOS "
  yes = "BOS"
  [game.polymarket]
  market = "12345"
  yes = "LAL"

[[game]]
id = "kalshi-only"
  [game.kalshi]
  market = "KXNHLGAME-26NOV23BOSTOR-BOS"
  yes = "BOS"
"""


def parse(text: str) -> list[Game]:
    return games_from_config(tomllib.loads(text), "arbees.toml")


def one_game(body: str, game_id: str = "g1") -> str:
    return f'[[game]]\nid = "{game_id}"\n{body}'


KALSHI_TABLE = '[game.kalshi]\nmarket = "KX-A"\nyes = "A"\n'


def test_a_valid_config_gives_its_games() -> None:
    games = parse(VALID)
    assert [g.game_id for g in games] == ["nfl-kc-buf", "nba-bos-lal", "kalshi-only"]
    first = games[0]
    assert first.name == "Kansas City at Buffalo"
    assert first.markets == (MarketRef(K, "KXNFLGAME-26NOV23KCBUF-KC", "KC", "KC wins"), MarketRef(P, CONDITION, "kc"))
    assert games[1].market(K) == MarketRef(K, "KXNBAGAME-26NOV23BOSLAL-BOS", "BOS"), "ids are stripped"
    assert games[1].name == "nba-bos-lal", "the name defaults to the id"
    assert games[2].market(P) is None


def test_inverted_means_the_venues_yes_pay_on_different_outcomes() -> None:
    same, opposite, single = parse(VALID)
    assert not same.inverted, "the outcome is compared without case"
    assert opposite.inverted
    assert not single.inverted, "a game on one venue has nothing to invert"


def test_an_empty_config_has_no_games() -> None:
    assert parse("") == []


@pytest.mark.parametrize(("text", "words"), [
    ("game = 3", ["'game' must be an array of tables"]),
    ('[[game]]\nname = "x"\n' + KALSHI_TABLE, ["game #1", "'id' must be a non-empty string"]),
    ('[[game]]\nid = "  "\n' + KALSHI_TABLE, ["game #1", "'id'"]),
    ('[[game]]\nid = "a|b"\n' + KALSHI_TABLE, ["game #1", "'id'", "without '|'"]),
    (one_game("colour = 'red'\n" + KALSHI_TABLE), ["game #1", "unknown field(s) colour"]),
    (one_game("name = 3\n" + KALSHI_TABLE), ["game 'g1'", "'name' must be a string"]),
    (one_game(""), ["game 'g1'", "has no [game.kalshi] or [game.polymarket] market"]),
    (one_game('[game.kalshi]\nmarket = "KX-A"\n'), ["game 'g1', kalshi", "'yes'"]),
    (one_game('[game.kalshi]\nmarket = "KX-A"\nyes = " "\n'), ["game 'g1', kalshi", "'yes'"]),
    (one_game('[game.kalshi]\nyes = "A"\n'), ["game 'g1', kalshi", "'market'"]),
    (one_game('[game.polymarket]\nmarket = "0x|1"\nyes = "A"\n'), ["game 'g1', polymarket", "'market'", "no '|'"]),
    (one_game('[game.kalshi]\nmarket = "KX-A"\nyes = "A"\nside = "no"\n'),
     ["game 'g1', kalshi", "unknown field(s) side"]),
    (one_game('kalshi = "KX-A"\n'), ["game 'g1', kalshi", "must be a table"]),
    (one_game(KALSHI_TABLE) + "\n" + one_game(KALSHI_TABLE.replace("KX-A", "KX-B")),
     ["game 'g1' is listed twice"]),
    (one_game(KALSHI_TABLE) + "\n" + one_game(KALSHI_TABLE, game_id="g2"),
     ["market kalshi/KX-A is in games 'g1' and 'g2'"]),
])
def test_each_config_error_names_the_game_and_the_field(text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith("arbees.toml") or "listed twice" in message or "is in games" in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_the_same_market_id_on_two_venues_is_two_markets() -> None:
    text = one_game(KALSHI_TABLE + '[game.polymarket]\nmarket = "KX-A"\nyes = "A"\n')
    assert [m.key for m in parse(text)[0].markets] == [(K, "KX-A"), (P, "KX-A")]


# -- the file -----------------------------------------------------------------------------------


def test_load_config_reads_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "arbees.toml"
    path.write_text(VALID)
    assert len(games_from_config(load_config(path), str(path))) == 3


def test_load_config_names_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"config file {path} does not exist"):
        load_config(path)


def test_load_config_names_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"config file {tmp_path} is a directory"):
        load_config(tmp_path)


def test_load_config_names_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.toml"
    path.write_text(VALID)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("this user can read a mode-000 file (root)")
        with pytest.raises(ConfigError, match=f"config file {path} is not readable"):
            load_config(path)
    finally:
        path.chmod(0o600)


def test_load_config_names_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[[game]]\nid = "unterminated\n')
    with pytest.raises(ConfigError, match=f"config file {path} is not valid TOML"):
        load_config(path)


# -- the wire -----------------------------------------------------------------------------------


def test_games_round_trip_through_the_wire() -> None:
    for game in parse(VALID):
        assert Game.from_wire(game.to_wire()) == game


@pytest.mark.parametrize(("raw", "words"), [
    ("nfl", "game entry must be a map, got str"),
    ({"name": "x", "markets": []}, "bad game entry"),
    ({"id": "", "markets": []}, "bad game entry"),
    ({"id": "g", "name": 3, "markets": []}, "bad game entry"),
    ({"id": "g", "markets": {}}, "bad game entry"),
    ({"id": "g", "markets": [["kalshi", "KX-A", "A"]]}, "game g: bad market entry"),
    ({"id": "g", "markets": [["kalshi", "KX-A", "A", None]]}, "game g: bad market entry"),
    ({"id": "g", "markets": ["kalshi/KX-A"]}, "game g: bad market entry"),
    ({"id": "g", "markets": [["nyse", "KX-A", "A", ""]]}, "'nyse' is not a valid Platform"),
    ({"id": "g", "markets": [["kalshi", "", "A", ""]]}, "game g: bad market"),
    ({"id": "g", "markets": [["kalshi", "KX|A", "A", ""]]}, "game g: bad market"),
])
def test_from_wire_rejects_malformed_entries(raw: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Game.from_wire(raw)


# -- the simulators' universe ------------------------------------------------------------------


def test_sim_games_are_the_simulators_markets_on_both_venues() -> None:
    games = sim_games(20, seed=3)
    markets = build_universe(20, seed=3).markets
    assert [g.game_id for g in games] == [m.game.game_id for m in markets]
    for game, market in zip(games, markets, strict=True):
        assert game.market(K).market_id == market.kalshi_ticker
        assert game.market(P).market_id == market.condition_id
        assert not game.inverted
    assert len({m.key for g in games for m in g.markets}) == 40
