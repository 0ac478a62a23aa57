"""Market metadata documents as the CLOB and Gamma REST APIs shape them.

Each simulated market needs the identifiers a discovery client will look for
(Gamma numeric id, slug, question id, event) and the documents that carry them.
The static part is fixed when the simulator starts; prices in the documents
(`outcomePrices`, `bestBid`, token `price`, tick size) are read live from the
market's state so that discovery agrees with the books. The awkward venue
details are kept: Gamma's `outcomes`, `outcomePrices` and `clobTokenIds` are
JSON-encoded strings (written with the ", " separators the real API uses), the
CLOB reports tick sizes as numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson

from markets.models import TICKS_PER_DOLLAR
from markets.sim.lifecycle import Lifecycle, Phase
from markets.sim.universe import SimMarket

from .lifecycle import RESOLVED, flags
from .state import MarketState
from .wire import TICK_SIZE_TEXT, levels_worst_to_best, padded_price_text, price_text

GAMMA_MARKET_ID_BASE = 540_000
GAMMA_EVENT_ID_BASE = 71_000
MIN_ORDER_SIZE = 5
SPORTS_TAG = {"id": "1", "label": "Sports", "slug": "sports"}
LEAGUE_TAG_IDS = {"NBA": "745", "NFL": "450", "NHL": "899", "MLB": "100381"}


@dataclass(frozen=True, slots=True)
class Listing:
    """The identifiers and fixed facts of one market on Polymarket."""

    market: SimMarket
    gamma_id: str
    event_id: str
    question_id: str
    slug: str
    question: str
    game_day: date
    created_at: str

    @property
    def tags(self) -> list[dict[str, str]]:
        league = self.market.game.league
        return [SPORTS_TAG, {"id": LEAGUE_TAG_IDS.get(league, "100000"), "label": league,
                             "slug": league.lower()}]

    @property
    def end_date(self) -> str:
        return f"{self.game_day + timedelta(days=1):%Y-%m-%d}T04:00:00Z"

    @property
    def game_start(self) -> str:
        return f"{self.game_day:%Y-%m-%d}T23:30:00Z"


def build_listings(markets: list[SimMarket]) -> list[Listing]:
    """Deterministic listings, in universe order (which is also the id order).

    Markets are listed three days before their game, as sports markets are.
    """
    listings = []
    for index, market in enumerate(markets):
        game = market.game
        day = _game_day(game.game_id)
        yes, no = market.outcomes
        question = f"{yes} vs. {no}" if (yes, no) != ("Yes", "No") else market.title
        listings.append(Listing(
            market=market,
            gamma_id=str(GAMMA_MARKET_ID_BASE + index),
            event_id=str(GAMMA_EVENT_ID_BASE + index),
            question_id="0x" + hashlib.sha256(market.condition_id.encode()).hexdigest(),
            slug=f"{game.league.lower()}-{game.away.lower()}-{game.home.lower()}-{day:%Y-%m-%d}",
            question=question,
            game_day=day,
            created_at=f"{day - timedelta(days=3):%Y-%m-%d}T12:00:00.000000Z",
        ))
    return listings


def _game_day(game_id: str) -> date:
    """Universe game ids embed the date: "nba-20261115-bos-lal"."""
    for part in game_id.split("-"):
        if len(part) == 8 and part.isdigit():
            return date(int(part[:4]), int(part[4:6]), int(part[6:]))
    return date.today()


def _dollars(ticks: int | None, empty: float) -> float:
    return empty if ticks is None else ticks / TICKS_PER_DOLLAR


def outcome_prices(state: MarketState) -> tuple[str, str]:
    """YES/NO display prices: the mid, else the last trade, else even money."""
    mid = state.yes_mid()
    if mid is None:
        mid = state.last_trade.price if state.last_trade is not None else TICKS_PER_DOLLAR // 2
    return price_text(mid), price_text(TICKS_PER_DOLLAR - mid)


def gamma_market(listing: Listing, state: MarketState, *, with_events: bool, phase: Phase) -> dict[str, Any]:
    market = listing.market
    closed, accepting = flags(phase)
    bid, ask = state.yes_top()
    yes_price, no_price = outcome_prices(state)
    last = state.last_trade
    doc: dict[str, Any] = {
        "id": listing.gamma_id,
        "question": listing.question,
        "conditionId": market.condition_id,
        "slug": listing.slug,
        "resolutionSource": "",
        "endDate": listing.end_date,
        "startDate": listing.created_at,
        "description": f"This market resolves to \"{market.outcomes[0]}\" if {market.outcomes[0]} "
                       f"win the {market.game.league} game; otherwise \"{market.outcomes[1]}\".",
        "outcomes": json.dumps(list(market.outcomes)),
        "outcomePrices": json.dumps([yes_price, no_price]),
        "clobTokenIds": json.dumps([market.yes_token_id, market.no_token_id]),
        "active": True,
        "closed": closed,
        "archived": False,
        "restricted": True,
        "enableOrderBook": True,
        "acceptingOrders": accepting,
        "questionID": listing.question_id,
        "orderPriceMinTickSize": state.tick / TICKS_PER_DOLLAR,
        "orderMinSize": MIN_ORDER_SIZE,
        "negRisk": False,
        "endDateIso": listing.end_date[:10],
        "gameStartTime": listing.game_start.replace("T", " ").replace("Z", "+00"),
        "sportsMarketType": "moneyline",
        "bestBid": _dollars(bid, 0.0),
        "bestAsk": _dollars(ask, 1.0),
        "spread": _dollars(ask - bid if bid is not None and ask is not None else None, 1.0),
        "lastTradePrice": _dollars(last.price if last is not None else None, 0.0),
        "createdAt": listing.created_at,
        "updatedAt": datetime.fromtimestamp(state.changed_ms / 1000, timezone.utc)
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    if with_events:
        doc["events"] = [gamma_event_header(listing, phase)]
    return doc


def gamma_event_header(listing: Listing, phase: Phase) -> dict[str, Any]:
    """The event of the listing's game (one market per game, so its phase is the event's)."""
    game = listing.market.game
    return {
        "id": listing.event_id,
        "ticker": listing.slug,
        "slug": listing.slug,
        "title": f"{game.away} vs. {game.home}",
        "startDate": listing.created_at,
        "endDate": listing.end_date,
        "startTime": listing.game_start,
        "active": True,
        "closed": flags(phase)[0],
        "archived": False,
        "restricted": True,
        "enableOrderBook": True,
        "negRisk": False,
        "seriesSlug": game.league.lower(),
    }


def gamma_event(listings: list[Listing], directory: Directory) -> dict[str, Any]:
    """An event document with its markets embedded (one event per game)."""
    event = gamma_event_header(listings[0], directory.phase_of(listings[0]))
    event["markets"] = [gamma_market(item, directory.state_of(item), with_events=False,
                                     phase=directory.phase_of(item))
                        for item in listings]
    event["tags"] = listings[0].tags
    return event


def clob_market(listing: Listing, state: MarketState, phase: Phase,
                yes_wins: bool) -> dict[str, Any]:
    """The CLOB `/markets` document: tokens paired with outcomes, prices as numbers; once
    resolved, the winning token says so."""
    market = listing.market
    yes_price, no_price = outcome_prices(state)
    closed, accepting = flags(phase)
    return {
        "enable_order_book": True,
        "active": True,
        "closed": closed,
        "archived": False,
        "accepting_orders": accepting,
        "accepting_order_timestamp": listing.created_at[:19] + "Z",
        "minimum_order_size": MIN_ORDER_SIZE,
        "minimum_tick_size": state.tick / TICKS_PER_DOLLAR,
        "condition_id": market.condition_id,
        "question_id": listing.question_id,
        "question": listing.question,
        "description": "",
        "market_slug": listing.slug,
        "end_date_iso": listing.end_date,
        "game_start_time": listing.game_start,
        "seconds_delay": 0,
        "fpmm": "",
        "maker_base_fee": 0,
        "taker_base_fee": 0,
        "notifications_enabled": True,
        "neg_risk": False,
        "neg_risk_market_id": "",
        "neg_risk_request_id": "",
        "is_50_50_outcome": False,
        "tokens": [
            {"token_id": market.yes_token_id, "outcome": market.outcomes[0],
             "price": float(yes_price), "winner": closed and yes_wins},
            {"token_id": market.no_token_id, "outcome": market.outcomes[1],
             "price": float(no_price), "winner": closed and not yes_wins},
        ],
        "tags": [tag["label"] for tag in listing.tags],
    }


def rest_book(state: MarketState, token_id: str) -> dict[str, Any]:
    """`GET /book`: levels worst->best, ms timestamp of the last change, content hash.

    The hash is SHA-1 over the compact JSON of the summary with `hash` blank, in
    the server struct's key order, so it moves with the content and only with it.
    """
    bids, asks = state.token_book(token_id)
    last = state.token_last_trade(token_id)
    doc: dict[str, Any] = {
        "market": state.market.condition_id,
        "asset_id": token_id,
        "timestamp": str(state.changed_ms),
        "hash": "",
        "bids": levels_worst_to_best(bids, bids=True),
        "asks": levels_worst_to_best(asks, bids=False),
        "min_order_size": str(MIN_ORDER_SIZE),
        "tick_size": TICK_SIZE_TEXT[state.tick],
        "neg_risk": False,
        "last_trade_price": padded_price_text(last.price, state.tick) if last else "",
    }
    doc["hash"] = hashlib.sha1(orjson.dumps(doc)).hexdigest()
    return doc


class Directory:
    """Lookups over the listings and live states, shared by the CLOB and Gamma routes."""

    def __init__(self, listings: list[Listing], states: dict[str, MarketState], lifecycle: Lifecycle) -> None:
        self.listings = listings
        self.states = states
        self.lifecycle = lifecycle
        self.by_token: dict[str, MarketState] = {}
        for state in states.values():
            self.by_token[state.market.yes_token_id] = state
            self.by_token[state.market.no_token_id] = state
        self.by_condition = {item.market.condition_id: item for item in listings}
        self.events: dict[str, list[Listing]] = {}
        for item in listings:
            self.events.setdefault(item.market.game.game_id, []).append(item)

    def state_of(self, listing: Listing) -> MarketState:
        return self.states[listing.market.condition_id]

    def phase_of(self, listing: Listing) -> Phase:
        return self.lifecycle.phase(listing.market)

    def has_book(self, token_id: str) -> bool:
        """Whether the CLOB still has an order book for the token (not once it is resolved)."""
        state = self.by_token.get(token_id)
        return state is not None and self.lifecycle.phase(state.market) not in RESOLVED

    def clob_market(self, listing: Listing) -> dict[str, Any]:
        market = listing.market
        return clob_market(listing, self.state_of(listing), self.phase_of(listing),
                           self.lifecycle.timetable(market).yes_wins)
