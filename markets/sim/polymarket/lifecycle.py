"""Polymarket's view of the shared game timetable: listing flags and `market_resolved`.

protocols/polymarket.md (appendix and §4.6): Gamma and CLOB listings carry
`active`, `closed`, `acceptingOrders` and `enableOrderBook`; a market that stops
trading when its game ends no longer accepts orders, and once the result is in it
is `closed` and `market_resolved` goes out on the market channel -- only to
sockets that subscribed with `custom_feature_enabled: true`. Polymarket has no
exchange pause, so a Kalshi-side pause leaves these markets trading. After
resolution the CLOB has no order book for the tokens (`GET /book` answers 404).
"""

from __future__ import annotations

from typing import Any

from markets.sim.lifecycle import Phase
from markets.sim.universe import SimMarket

RESOLVED = frozenset({Phase.DETERMINED, Phase.SETTLED})
"""Phases in which the market is resolved (`closed`, no order book)."""


def trading(phase: Phase) -> bool:
    """Whether the book moves and orders are accepted in this phase (a pause is Kalshi's only)."""
    return phase in (Phase.OPEN, Phase.PAUSED)


def flags(phase: Phase) -> tuple[bool, bool]:
    """(closed, accepting orders) of a listing in this phase; `active` and
    `enableOrderBook` stay true for a game's markets throughout."""
    return phase in RESOLVED, trading(phase)


def market_resolved_event(*, market: SimMarket, gamma_id: str, event_id: str, slug: str, question: str,
                          yes_wins: bool, timestamp: str) -> dict[str, Any]:
    """The `market_resolved` event (polymarket.md §4.6, docs example shape)."""
    winner = 0 if yes_wins else 1
    tokens = (market.yes_token_id, market.no_token_id)
    game = market.game
    return {
        "id": gamma_id,
        "question": question,
        "market": market.condition_id,
        "slug": slug,
        "description": f"This market resolves to \"{market.outcomes[0]}\" if {market.outcomes[0]} win.",
        "assets_ids": list(tokens),
        "outcomes": list(market.outcomes),
        "winning_asset_id": tokens[winner],
        "winning_outcome": market.outcomes[winner],
        "event_message": {"id": event_id, "ticker": slug, "slug": slug,
                          "title": f"{game.away} vs. {game.home}", "description": ""},
        "timestamp": timestamp,
        "event_type": "market_resolved",
    }
