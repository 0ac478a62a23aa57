"""Signal rules of a GameShard: venue fees, cross-venue arbitrage and model edge.

Pure functions of `MarketPrice` records and a clock value: no sockets, no asyncio, so
every rule is unit-tested on its own and the shard only decides *when* to call them.

Money is exact. Prices become integer ticks of $0.0001 (`TICKS_PER_DOLLAR`), fees are
integer cents computed with integer arithmetic, and a candidate trade's net result is
an integer number of ticks; floats appear only in the signal records, for consumers.
Sizes are floored to whole contracts, because an order is for whole contracts.

Buying NO at a venue means taking its YES bid from the other side: NO costs
1 - yes_bid and its available size is yes_bid_size (a YES ask at X is a NO bid at
1 - X, see `MarketPrice`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import Enum
from fractions import Fraction
from typing import Any, Literal, NamedTuple, TypeGuard

from markets.models import TICKS_PER_DOLLAR, MarketPrice, Platform, PriceStatus

Side = Literal["yes", "no"]

CENTS_PER_DOLLAR = 100
TICKS_PER_CENT = TICKS_PER_DOLLAR // CENTS_PER_DOLLAR
NS_PER_S = 1_000_000_000


def kalshi_taker_fee(contracts: int, price_ticks: int) -> int:
    """Kalshi's taker fee in cents for one order: ceil(0.07 × C × P × (1 − P)) to the next cent.

    With P = p / 10_000 dollars the fee in cents is 7 × C × p × (10_000 − p) / 10^8, so
    the ceiling is taken on integers and a fee that lands exactly on a cent gains no
    extra cent (C=4 at $0.50 is exactly 7 cents).
    """
    _check_order(contracts, price_ticks)
    return _ceil_div(7 * contracts * price_ticks * (TICKS_PER_DOLLAR - price_ticks), TICKS_PER_DOLLAR**2)


def polymarket_fee(contracts: int, price_ticks: int, bps: int) -> int:
    """A fee of `bps` basis points of the order's notional, in cents rounded up to the next cent.

    Notional is C × P dollars; the fee is bps / 10^4 of it, i.e. in cents
    ceil(bps × C × p / 10^6) with p in ticks. Polymarket charges no taker fee on most
    markets today (bps = 0), but the rate is configurable for the ones that do.
    """
    _check_order(contracts, price_ticks)
    _check_bps(bps)
    return _ceil_div(bps * contracts * price_ticks, 1_000_000)


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """The taker fee of each venue, so that every signal is net of what a trade would cost.

    Kalshi follows its published taker formula (`kalshi_taker_fee`); Polymarket's rate
    is `polymarket_bps` basis points of notional (`polymarket_fee`), 0 by default.
    """

    polymarket_bps: int = 0

    def __post_init__(self) -> None:
        _check_bps(self.polymarket_bps)

    def fee_cents(self, platform: Platform, contracts: int, price_ticks: int) -> int:
        """The fee in cents of one taker order of `contracts` at `price_ticks` on `platform`."""
        if platform == Platform.KALSHI:
            return kalshi_taker_fee(contracts, price_ticks)
        if platform == Platform.POLYMARKET:
            return polymarket_fee(contracts, price_ticks, self.polymarket_bps)
        raise ValueError(f"no fee rule for platform {platform!r}")


def usable(price: MarketPrice | None, now_ns: int, max_age_s: float) -> TypeGuard[MarketPrice]:
    """Whether a signal may be computed from `price` at `now_ns`.

    It must exist, be LIVE (not stale, resyncing or closed) and its venue data must be
    at most `max_age_s` old. Age is measured from `recv_ts_ns`, when the worker received
    the venue data, not from `publish_ts_ns`: a record re-published from a snapshot is
    no fresher than the data in it. A receive time slightly in the future (clocks of
    two hosts) counts as fresh. Whether a side is quoted is checked per leg. (A plain
    bool at run time; to a type checker it also proves `price` is not None.)
    """
    max_age_ns = _max_age_ns(max_age_s)
    return price is not None and price.status == PriceStatus.LIVE and now_ns - price.recv_ts_ns <= max_age_ns


class Leg(NamedTuple):
    """One taker order of a signal: buy `contracts` of `side` at `price` dollars."""

    platform: Platform
    market_id: str
    side: Side
    price: float
    contracts: int


@dataclass(frozen=True, slots=True)
class _Signal:
    """What both signal records share: a plain-typed dict for msgpack and JSON."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class ArbSignal(_Signal):
    """Buying both legs pays $1 whatever happens, for less than $1 after fees.

    `cost_per_contract` is the sum of the leg prices in dollars (before fees),
    `fees_dollars` the fees of both orders, `edge_dollars` the net result of the whole
    trade and `edge_cents_per_contract` that result per contract. `ts_ns` is the clock
    value the rule was evaluated at.
    """

    game_id: str
    legs: tuple[Leg, ...]
    contracts: int
    cost_per_contract: float
    fees_dollars: float
    edge_cents_per_contract: float
    edge_dollars: float
    ts_ns: int
    kind: Literal["arbitrage"] = field(default="arbitrage", init=False)


@dataclass(frozen=True, slots=True)
class EdgeSignal(_Signal):
    """A market price below the model's fair value of that side, net of the taker fee.

    `fair` is the model's probability of the side bought (1 − fair_yes for NO), on the
    tick grid as the edge used it; `price` what it costs at the venue; the edge is
    fair − price − fee per contract.
    """

    game_id: str
    platform: Platform
    market_id: str
    side: Side
    price: float
    fair: float
    contracts: int
    edge_cents_per_contract: float
    edge_dollars: float
    ts_ns: int
    kind: Literal["model_edge"] = field(default="model_edge", init=False)


def find_arbitrage(
    game_id: str,
    a: MarketPrice | None,
    b: MarketPrice | None,
    *,
    inverted: bool,
    fees: FeeSchedule,
    now_ns: int,
    max_age_s: float,
    min_edge_cents: float = 0.0,
) -> ArbSignal | None:
    """The cross-venue arbitrage of one game, or None.

    `a` and `b` are the game's market on each venue. With `inverted` False both pay on
    the same outcome, so the sets are YES on A + NO on B and NO on A + YES on B; with
    `inverted` True A's YES is B's NO, so the sets are YES + YES and NO + NO. The better
    set (by net edge per contract) is sized by the smaller leg, fees are charged per
    order, and it is a signal only if its net edge per contract exceeds `min_edge_cents`
    (at least 0, so a signal always makes money after fees).
    """
    _check_threshold("min_edge_cents", min_edge_cents)
    if not (usable(a, now_ns, max_age_s) and usable(b, now_ns, max_age_s)):
        return None
    best = _best_trade(_arbitrage_sets(a, b, inverted), fees)
    if best is None or best.edge_cents_per_contract() <= min_edge_cents:
        return None
    cost_ticks = sum(offer.price_ticks for offer in best.offers)
    return ArbSignal(
        game_id=game_id,
        legs=best.legs(),
        contracts=best.contracts,
        cost_per_contract=cost_ticks / TICKS_PER_DOLLAR,
        fees_dollars=best.fee_cents / CENTS_PER_DOLLAR,
        edge_cents_per_contract=best.edge_cents_per_contract(),
        edge_dollars=best.net_ticks / TICKS_PER_DOLLAR,
        ts_ns=now_ns,
    )


def best_cross_edge_cents(
    a: MarketPrice | None, b: MarketPrice | None, inverted: bool, fees: FeeSchedule
) -> float | None:
    """The best net cross-venue edge per contract in cents right now, negative included.

    For display (how far a game is from an arbitrage), so it has no threshold and no
    clock: None when either market is missing or not LIVE, or when no set has a whole
    contract on both legs. The age of the prices is the display's own column.
    """
    if a is None or b is None or a.status != PriceStatus.LIVE or b.status != PriceStatus.LIVE:
        return None
    best = _best_trade(_arbitrage_sets(a, b, inverted), fees)
    return None if best is None else best.edge_cents_per_contract()


def find_model_edge(
    game_id: str,
    price: MarketPrice | None,
    fair_yes: float,
    *,
    fees: FeeSchedule,
    now_ns: int,
    max_age_s: float,
    threshold_cents: float,
    fair_ts_ns: int | None = None,
) -> EdgeSignal | None:
    """A side of `price` that the model values above its price by more than `threshold_cents`.

    `fair_yes` is the model's probability that YES wins; it is rounded to ticks like a
    price, so the edge is exact to 1/100 of a cent. YES costs yes_ask, NO costs
    1 − yes_bid; each is sized by its available quantity and charged the fee of one
    order of that size. A fair value older than `max_age_s` (by `fair_ts_ns`) gives no
    signal, just as a stale price does.
    """
    if not (_is_real(fair_yes) and 0.0 <= fair_yes <= 1.0):
        raise ValueError(f"fair_yes must be a finite probability in [0, 1], got {fair_yes!r}")
    _check_threshold("threshold_cents", threshold_cents)
    if not usable(price, now_ns, max_age_s):
        return None
    if fair_ts_ns is not None and now_ns - fair_ts_ns > _max_age_ns(max_age_s):
        return None
    yes_ticks = round(fair_yes * TICKS_PER_DOLLAR)
    fair_ticks: dict[Side, int] = {"yes": yes_ticks, "no": TICKS_PER_DOLLAR - yes_ticks}
    best = _best_trade([(_offers(price, side), ticks) for side, ticks in fair_ticks.items()], fees)
    if best is None or best.edge_cents_per_contract() <= threshold_cents:
        return None
    (offer,) = best.offers
    return EdgeSignal(
        game_id=game_id,
        platform=offer.platform,
        market_id=offer.market_id,
        side=offer.side,
        price=offer.price_ticks / TICKS_PER_DOLLAR,
        fair=fair_ticks[offer.side] / TICKS_PER_DOLLAR,
        contracts=best.contracts,
        edge_cents_per_contract=best.edge_cents_per_contract(),
        edge_dollars=best.net_ticks / TICKS_PER_DOLLAR,
        ts_ns=now_ns,
    )


class _Offer(NamedTuple):
    """What one venue offers for sale on one side: price in ticks, whole contracts."""

    platform: Platform
    market_id: str
    side: Side
    price_ticks: int
    contracts: int


class _Trade(NamedTuple):
    """A set of offers bought `contracts` times, and its exact net result in ticks."""

    offers: tuple[_Offer, ...]
    contracts: int
    fee_cents: int
    net_ticks: int

    def rank(self) -> Fraction:
        """Better means more per contract, compared exactly (a tie keeps the first set)."""
        return Fraction(self.net_ticks, self.contracts)

    def edge_cents_per_contract(self) -> float:
        return self.net_ticks / (self.contracts * TICKS_PER_CENT)

    def legs(self) -> tuple[Leg, ...]:
        return tuple(
            Leg(o.platform, o.market_id, o.side, o.price_ticks / TICKS_PER_DOLLAR, self.contracts)
            for o in self.offers
        )


def _offers(price: MarketPrice, side: Side) -> tuple[_Offer, ...] | None:
    """The single offer of `side` in `price` as a one-leg set; None if that side is empty."""
    if side == "yes":
        quote, size = price.yes_ask, price.yes_ask_size
    else:
        quote, size = price.yes_bid, price.yes_bid_size
    if quote is None or size is None:
        return None
    ticks = round(quote * TICKS_PER_DOLLAR)
    if side == "no":
        ticks = TICKS_PER_DOLLAR - ticks
    return (_Offer(price.platform, price.market_id, side, ticks, math.floor(size)),)


_Candidate = tuple[tuple[_Offer, ...] | None, int]
"""A set of offers (None when a leg is empty) and what one set of them pays out, in ticks."""


def _arbitrage_sets(a: MarketPrice, b: MarketPrice, inverted: bool) -> list[_Candidate]:
    """The two sets of one offer on each venue that pay exactly $1 together."""
    pairs: tuple[tuple[Side, Side], ...] = (
        (("yes", "yes"), ("no", "no")) if inverted else (("yes", "no"), ("no", "yes"))
    )
    sets: list[_Candidate] = []
    for side_a, side_b in pairs:
        leg_a, leg_b = _offers(a, side_a), _offers(b, side_b)
        sets.append((None if leg_a is None or leg_b is None else leg_a + leg_b, TICKS_PER_DOLLAR))
    return sets


def _best_trade(candidates: list[_Candidate], fees: FeeSchedule) -> _Trade | None:
    """The best of the candidates that can be traded at all, by `_Trade.rank`."""
    trades = [trade for offers, payoff in candidates if (trade := _evaluate(offers, payoff, fees)) is not None]
    return max(trades, key=_Trade.rank, default=None)


def _evaluate(offers: tuple[_Offer, ...] | None, payoff_ticks: int, fees: FeeSchedule) -> _Trade | None:
    """Buy every offer the same whole number of times; None if some leg has no whole contract.

    Each leg is one order, so its fee is rounded once for all its contracts.
    """
    if offers is None:
        return None
    contracts = min(offer.contracts for offer in offers)
    if contracts < 1:
        return None
    fee_cents = sum(fees.fee_cents(o.platform, contracts, o.price_ticks) for o in offers)
    cost_ticks = sum(o.price_ticks for o in offers)
    net_ticks = contracts * (payoff_ticks - cost_ticks) - fee_cents * TICKS_PER_CENT
    return _Trade(offers, contracts, fee_cents, net_ticks)


def _plain(value: object) -> object:
    """Enums to their values and tuples to lists, so msgpack and JSON give back an equal dict."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Leg):
        return {name: _plain(item) for name, item in value._asdict().items()}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _check_order(contracts: int, price_ticks: int) -> None:
    if type(contracts) is not int or contracts < 0:
        raise ValueError(f"contracts must be a non-negative int, got {contracts!r}")
    if type(price_ticks) is not int or not 0 <= price_ticks <= TICKS_PER_DOLLAR:
        raise ValueError(f"price_ticks must be an int in [0, {TICKS_PER_DOLLAR}], got {price_ticks!r}")


def _check_bps(bps: int) -> None:
    if type(bps) is not int or bps < 0:
        raise ValueError(f"polymarket fee bps must be a non-negative int, got {bps!r}")


def _is_real(value: object) -> bool:
    """An int or float that is not a bool (True is not a number of cents or seconds)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_threshold(name: str, value: float) -> None:
    if not (_is_real(value) and 0.0 <= value < math.inf):
        raise ValueError(f"{name} must be a finite number of cents >= 0, got {value!r}")


def _max_age_ns(max_age_s: float) -> float:
    if not (_is_real(max_age_s) and 0.0 < max_age_s < math.inf):
        raise ValueError(f"max_age_s must be a finite number of seconds > 0, got {max_age_s!r}")
    return max_age_s * NS_PER_S


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
