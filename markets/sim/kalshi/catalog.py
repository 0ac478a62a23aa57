"""Kalshi event and series documents for the simulated universe (protocols/kalshi.md §8.5).

Every simulated game is one event with one market; every league is one series
(`KXNBAGAME`, ...). The documents carry the fields a discovery client reads;
`GET /series/{ticker}` adds nothing the list does not have.
"""

from __future__ import annotations

from typing import Any

from markets.sim.universe import SimMarket, Universe

_SPORT = {"NBA": "Basketball", "NFL": "Football", "NHL": "Hockey", "MLB": "Baseball"}


def event_doc(market: SimMarket) -> dict[str, Any]:
    """The `Event` object of the market's game (without nested markets)."""
    game = market.game
    return {
        "event_ticker": market.event_ticker, "series_ticker": market.series_ticker,
        "title": market.title, "sub_title": f"{game.away} at {game.home}",
        "category": "Sports", "mutually_exclusive": True,
        "collateral_return_type": "MECNET", "available_on_brokers": True,
    }


def series_doc(series_ticker: str, league: str) -> dict[str, Any]:
    sport = _SPORT.get(league, "Sports")
    return {
        "ticker": series_ticker, "frequency": "custom", "title": f"{league} Game",
        "category": "Sports", "tags": [sport, league],
        "settlement_sources": [{"name": league, "url": f"https://www.{league.lower()}.com"}],
        "contract_url": f"https://kalshi.com/series/{series_ticker.lower()}",
        "contract_terms_url": f"https://kalshi.com/series/{series_ticker.lower()}/terms",
        "fee_type": "quadratic", "fee_multiplier": 1, "additional_prohibitions": [],
    }


def all_series(universe: Universe) -> dict[str, dict[str, Any]]:
    """Series ticker -> `Series` object, one per league present in the universe, in first-seen order."""
    found: dict[str, dict[str, Any]] = {}
    for market in universe.markets:
        if market.series_ticker not in found:
            found[market.series_ticker] = series_doc(market.series_ticker, market.game.league)
    return found


def series_matches(doc: dict[str, Any], category: str | None, tags: set[str] | None) -> bool:
    """The `GET /series` filters: `category` exactly, `tags` (comma-separated) any of them."""
    return ((category is None or doc["category"] == category)
            and (tags is None or bool(tags.intersection(doc["tags"]))))
