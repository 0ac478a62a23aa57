"""Signal rules: venue fees to the cent, cross-venue arbitrage, model edge, and when no signal may exist."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.models import MarketPrice, Platform, PriceStatus
from shard.signals import (
    ArbSignal,
    EdgeSignal,
    FeeSchedule,
    Leg,
    best_cross_edge_cents,
    find_arbitrage,
    find_model_edge,
    kalshi_taker_fee,
    polymarket_fee,
    usable,
)

NOW = 1_700_000_000_000_000_000
MAX_AGE = 2.0
FEES = FeeSchedule()
K, P = Platform.KALSHI, Platform.POLYMARKET


def quote(
    platform: Platform,
    bid: float | None,
    ask: float | None,
    bid_size: float | None = 100.0,
    ask_size: float | None = 100.0,
    *,
    status: PriceStatus = PriceStatus.LIVE,
    recv_ts_ns: int = NOW,
) -> MarketPrice:
    market_id = "KX-GAME-A" if platform == K else "0xpoly"
    return MarketPrice(market_id, bid, ask, bid_size, ask_size, platform, status, recv_ts_ns=recv_ts_ns)


def arb(a: MarketPrice | None, b: MarketPrice | None, *, inverted: bool = False, fees: FeeSchedule = FEES,
        min_edge_cents: float = 0.0) -> ArbSignal | None:
    return find_arbitrage("G1", a, b, inverted=inverted, fees=fees, now_ns=NOW, max_age_s=MAX_AGE,
                          min_edge_cents=min_edge_cents)


def edge(price: MarketPrice, fair_yes: float, *, threshold_cents: float = 0.0,
         fair_ts_ns: int | None = None) -> EdgeSignal | None:
    return find_model_edge("G1", price, fair_yes, fees=FEES, now_ns=NOW, max_age_s=MAX_AGE,
                           threshold_cents=threshold_cents, fair_ts_ns=fair_ts_ns)


# --- fees -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contracts", "price_ticks", "cents"),
    [
        (1, 5000, 2),  # 0.0175 -> 0.02
        (100, 5000, 175),  # exactly 1.75
        (10, 1000, 7),  # 0.063 -> 0.07
        (4, 5000, 7),  # exactly 0.07: no extra cent at a cent boundary
        (1000, 5000, 1750),
        (1, 100, 1),  # 0.000693 -> 0.01
        (3, 3000, 5),  # 0.0441 -> 0.05
        (0, 5000, 0),
        (5, 0, 0),
        (5, 10_000, 0),
    ],
)
def test_kalshi_taker_fee_known_values(contracts: int, price_ticks: int, cents: int) -> None:
    assert kalshi_taker_fee(contracts, price_ticks) == cents


@given(st.integers(0, 100_000), st.integers(0, 10_000))
def test_kalshi_fee_is_the_exact_formula_rounded_up_to_the_cent(contracts: int, price_ticks: int) -> None:
    p = Fraction(price_ticks, 10_000)
    exact_cents = Fraction(7, 100) * contracts * p * (1 - p) * 100
    fee = kalshi_taker_fee(contracts, price_ticks)
    assert fee == math.ceil(exact_cents)
    assert 0 <= fee - exact_cents < 1
    assert fee == kalshi_taker_fee(contracts, 10_000 - price_ticks)  # P(1-P) is symmetric


@pytest.mark.parametrize(
    ("contracts", "price_ticks", "bps", "cents"),
    [
        (10, 5000, 0, 0),
        (10, 5000, 100, 5),  # 1% of $5.00
        (1, 5000, 10, 1),  # 0.1% of $0.50 = 0.0005 -> 0.01
        (200, 2500, 20, 10),  # 0.2% of $50.00 = exactly 0.10
    ],
)
def test_polymarket_fee_is_bps_of_notional_rounded_up(contracts: int, price_ticks: int, bps: int, cents: int) -> None:
    assert polymarket_fee(contracts, price_ticks, bps) == cents
    assert FeeSchedule(polymarket_bps=bps).fee_cents(P, contracts, price_ticks) == cents


def test_fee_schedule_dispatches_by_venue() -> None:
    fees = FeeSchedule(polymarket_bps=100)
    assert fees.fee_cents(K, 10, 5000) == kalshi_taker_fee(10, 5000) == 18
    assert fees.fee_cents(P, 10, 5000) == 5
    with pytest.raises(ValueError, match="platform"):
        fees.fee_cents("binance", 10, 5000)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("contracts", "price_ticks", "message"),
    [(-1, 5000, "contracts"), (1.0, 5000, "contracts"), (True, 5000, "contracts"),
     (1, 10_001, "price_ticks"), (1, -1, "price_ticks"), (1, 0.5, "price_ticks")],
)
def test_fee_rejects_bad_orders(contracts: object, price_ticks: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kalshi_taker_fee(contracts, price_ticks)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        FEES.fee_cents(P, contracts, price_ticks)  # type: ignore[arg-type]


@pytest.mark.parametrize("bps", [-1, 1.5, True])
def test_fee_schedule_rejects_bad_bps(bps: object) -> None:
    with pytest.raises(ValueError, match="bps"):
        FeeSchedule(polymarket_bps=bps)  # type: ignore[arg-type]


# --- usable -----------------------------------------------------------------------


def test_usable_needs_a_live_fresh_price() -> None:
    assert usable(quote(K, 0.4, 0.5), NOW, MAX_AGE)
    assert not usable(None, NOW, MAX_AGE)
    for status in (PriceStatus.STALE, PriceStatus.RESYNCING, PriceStatus.CLOSED):
        assert not usable(quote(K, 0.4, 0.5, status=status), NOW, MAX_AGE)


def test_usable_age_is_measured_from_receive_time_inclusive() -> None:
    max_age_ns = int(MAX_AGE * 1e9)
    assert usable(quote(K, 0.4, 0.5, recv_ts_ns=NOW - max_age_ns), NOW, MAX_AGE)
    assert not usable(quote(K, 0.4, 0.5, recv_ts_ns=NOW - max_age_ns - 1), NOW, MAX_AGE)
    assert usable(quote(K, 0.4, 0.5, recv_ts_ns=NOW + 1_000), NOW, MAX_AGE)  # another host's clock


@pytest.mark.parametrize("max_age_s", [0, -1.0, math.nan, math.inf, True, "2"])
def test_usable_rejects_bad_max_age(max_age_s: object) -> None:
    with pytest.raises(ValueError, match="max_age_s"):
        usable(quote(K, 0.4, 0.5), NOW, max_age_s)  # type: ignore[arg-type]


# --- arbitrage --------------------------------------------------------------------


def test_yes_on_a_and_no_on_b() -> None:
    a = quote(K, 0.38, 0.40, bid_size=10, ask_size=50)
    b = quote(P, 0.55, 0.57, bid_size=30, ask_size=20)  # NO on B costs 0.45, 30 available
    signal = arb(a, b)
    assert signal is not None
    assert signal.legs == (Leg(K, "KX-GAME-A", "yes", 0.40, 30), Leg(P, "0xpoly", "no", 0.45, 30))
    assert signal.contracts == 30
    assert signal.cost_per_contract == pytest.approx(0.85)
    assert signal.fees_dollars == 0.51  # Kalshi: 0.07 * 30 * 0.4 * 0.6 = 0.504 -> 0.51; Polymarket 0
    assert signal.edge_dollars == 3.99  # 30 * 0.15 - 0.51
    assert signal.edge_cents_per_contract == pytest.approx(13.3)
    assert (signal.game_id, signal.kind, signal.ts_ns) == ("G1", "arbitrage", NOW)


def test_no_on_a_and_yes_on_b_with_a_polymarket_fee() -> None:
    a = quote(K, 0.60, 0.62, bid_size=20)  # NO on A costs 0.40
    b = quote(P, 0.40, 0.42, ask_size=25)
    signal = arb(a, b, fees=FeeSchedule(polymarket_bps=100))
    assert signal is not None
    assert signal.legs == (Leg(K, "KX-GAME-A", "no", 0.40, 20), Leg(P, "0xpoly", "yes", 0.42, 20))
    # Kalshi 0.07 * 20 * 0.24 = 0.336 -> 0.34; Polymarket 1% of 20 * 0.42 = 0.084 -> 0.09
    assert signal.fees_dollars == 0.43
    assert signal.edge_dollars == pytest.approx(20 * 0.18 - 0.43)


def test_inverted_markets_buy_the_same_side_on_both_venues() -> None:
    a = quote(K, 0.38, 0.40, ask_size=10)
    b = quote(P, 0.30, 0.50, ask_size=10)  # B's YES is A's NO: YES + YES costs 0.90
    assert arb(a, b) is None  # read as the same outcome, both sets cost more than $1
    signal = arb(a, b, inverted=True)
    assert signal is not None
    assert [(leg.side, leg.price) for leg in signal.legs] == [("yes", 0.40), ("yes", 0.50)]
    assert signal.edge_dollars == 0.83  # 10 * 0.10 - 0.17 (0.168 -> 0.17)


def test_inverted_no_and_no() -> None:
    a = quote(K, 0.60, 0.62, bid_size=5)
    b = quote(P, 0.55, 0.57, bid_size=8)  # NO + NO costs 0.40 + 0.45
    signal = arb(a, b, inverted=True)
    assert signal is not None
    assert [(leg.side, leg.price, leg.contracts) for leg in signal.legs] == [("no", 0.40, 5), ("no", 0.45, 5)]
    assert signal.edge_dollars == 0.66  # 5 * 0.15 - 0.09 (0.084 -> 0.09)


def test_size_is_the_smaller_leg_floored_to_whole_contracts() -> None:
    signal = arb(quote(K, 0.38, 0.40, ask_size=12.5), quote(P, 0.55, 0.57, bid_size=7.9))
    assert signal is not None and signal.contracts == 7
    assert arb(quote(K, 0.38, 0.40, ask_size=12.5), quote(P, 0.55, 0.57, bid_size=0.99)) is None
    assert arb(quote(K, 0.38, 0.40, ask_size=None), quote(P, 0.55, 0.57)) is None


def test_positive_before_fees_negative_after_is_no_signal() -> None:
    a = quote(K, 0.48, 0.50)
    b = quote(P, 0.51, 0.53)  # 0.50 + 0.49: one cent a set, 100 sets; Kalshi fee at 0.50 is 1.75
    assert arb(a, b) is None
    assert best_cross_edge_cents(a, b, False, FEES) == pytest.approx(-0.75)


def test_the_best_set_is_the_best_per_contract_not_in_total() -> None:
    a = quote(P, 0.45, 0.50, bid_size=1, ask_size=100)
    b = quote(P, 0.49, 0.60, bid_size=100, ask_size=1)
    # YES on A + NO on B loses 1 cent on each of 100 sets; NO on A + YES on B 15 cents on 1 set
    assert best_cross_edge_cents(a, b, False, FEES) == pytest.approx(-1.0)


def test_min_edge_is_strict() -> None:
    a, b = quote(K, 0.38, 0.40, ask_size=50), quote(P, 0.55, 0.57, bid_size=30)  # 13.3 cents
    assert arb(a, b, min_edge_cents=13.2) is not None
    assert arb(a, b, min_edge_cents=13.3) is None
    with pytest.raises(ValueError, match="min_edge_cents"):
        arb(a, b, min_edge_cents=math.nan)


def test_an_empty_side_is_never_a_leg() -> None:
    b = quote(P, 0.55, 0.57)
    assert arb(quote(K, 0.38, None), b) is None  # YES on A would be the only profitable set
    assert arb(quote(K, None, 0.40), b) is not None  # A's empty bid only removes the other set
    assert arb(quote(K, 0.38, 0.40), quote(P, None, 0.57)) is None
    assert best_cross_edge_cents(quote(K, None, None), b, False, FEES) is None


@pytest.mark.parametrize("status", [PriceStatus.STALE, PriceStatus.RESYNCING, PriceStatus.CLOSED])
def test_no_arbitrage_from_a_price_that_is_not_live(status: PriceStatus) -> None:
    good_a, good_b = quote(K, 0.38, 0.40), quote(P, 0.55, 0.57)
    assert arb(good_a, good_b) is not None
    assert arb(good_a._replace(status=status), good_b) is None
    assert arb(good_a, good_b._replace(status=status)) is None
    assert best_cross_edge_cents(good_a, good_b._replace(status=status), False, FEES) is None


def test_no_arbitrage_from_a_price_older_than_max_age() -> None:
    old = NOW - int(MAX_AGE * 1e9) - 1
    assert arb(quote(K, 0.38, 0.40, recv_ts_ns=old), quote(P, 0.55, 0.57)) is None
    assert arb(quote(K, 0.38, 0.40), quote(P, 0.55, 0.57, recv_ts_ns=old)) is None
    assert arb(quote(K, 0.38, 0.40), None) is None


# Any prices on the tick grid and fractional sizes; now and then an empty side or a
# price that is not LIVE, rarely enough that both venues are often tradable together.
ticks = st.integers(1, 9_999).map(lambda t: t / 10_000)
sizes = st.floats(0, 500, allow_nan=False)


@st.composite
def quotes(draw: st.DrawFn, platform: Platform) -> MarketPrice:
    def sometimes_none(values: st.SearchStrategy[float]) -> float | None:
        return None if draw(st.integers(0, 7)) == 0 else draw(values)

    status = PriceStatus.LIVE if draw(st.integers(0, 3)) else draw(st.sampled_from(PriceStatus))
    return quote(platform, sometimes_none(ticks), sometimes_none(ticks), sometimes_none(sizes),
                 sometimes_none(sizes), status=status)


fee_schedules = st.builds(FeeSchedule, polymarket_bps=st.integers(0, 500))


def _fee_dollars(fees: FeeSchedule, leg: Leg) -> Fraction:
    return Fraction(fees.fee_cents(leg.platform, leg.contracts, round(leg.price * 10_000)), 100)


@settings(max_examples=400)  # pure and fast; about one draw in eight is an arbitrage
@given(quotes(K), quotes(P), st.booleans(), fee_schedules)
def test_every_arbitrage_pays_a_dollar_per_set_and_makes_its_edge(
    a: MarketPrice, b: MarketPrice, inverted: bool, fees: FeeSchedule
) -> None:
    signal = arb(a, b, inverted=inverted, fees=fees)
    best = best_cross_edge_cents(a, b, inverted, fees)
    if signal is None:
        assert best is None or best <= 0 or not (usable(a, NOW, 1) and usable(b, NOW, 1))
        return
    assert a.status == b.status == PriceStatus.LIVE
    leg_a, leg_b = signal.legs
    for yes_wins_a in (True, False):  # whatever happens, exactly one leg pays $1
        yes_wins_b = yes_wins_a != inverted
        assert ((leg_a.side == "yes") == yes_wins_a) + ((leg_b.side == "yes") == yes_wins_b) == 1
    available = [a.yes_ask_size if leg_a.side == "yes" else a.yes_bid_size,
                 b.yes_ask_size if leg_b.side == "yes" else b.yes_bid_size]
    assert None not in available
    assert 1 <= signal.contracts == math.floor(min(size for size in available if size is not None))
    fees_dollars = _fee_dollars(fees, leg_a) + _fee_dollars(fees, leg_b)
    cost = Fraction(round(leg_a.price * 10_000) + round(leg_b.price * 10_000), 10_000)
    net = signal.contracts * (1 - cost) - fees_dollars
    assert net > 0
    assert signal.edge_dollars == float(net)
    assert signal.fees_dollars == float(fees_dollars)
    assert signal.edge_cents_per_contract == best == float(net * 100 / signal.contracts)


@given(quotes(K), quotes(P), st.booleans(), fee_schedules)
def test_arbitrage_does_not_depend_on_which_venue_is_a(
    a: MarketPrice, b: MarketPrice, inverted: bool, fees: FeeSchedule
) -> None:
    forward, backward = arb(a, b, inverted=inverted, fees=fees), arb(b, a, inverted=inverted, fees=fees)
    assert (forward is None) == (backward is None)
    if forward is not None and backward is not None:
        assert forward.legs == backward.legs[::-1]
        assert forward.edge_dollars == backward.edge_dollars
    assert best_cross_edge_cents(a, b, inverted, fees) == best_cross_edge_cents(b, a, inverted, fees)


# --- model edge -------------------------------------------------------------------


def test_model_edge_buys_yes_below_fair() -> None:
    price = quote(K, 0.40, 0.45, ask_size=10)
    signal = edge(price, 0.60)
    assert signal is not None
    assert (signal.side, signal.price, signal.fair, signal.contracts) == ("yes", 0.45, 0.60, 10)
    # 15 cents a contract minus the fee of one order of 10 at 0.45: 0.17325 -> 0.18
    assert signal.edge_cents_per_contract == pytest.approx(13.2)
    assert signal.edge_dollars == 1.32
    assert (signal.platform, signal.market_id, signal.kind, signal.ts_ns) == (K, "KX-GAME-A", "model_edge", NOW)
    assert edge(price, 0.60, threshold_cents=13.1) is not None
    assert edge(price, 0.60, threshold_cents=13.2) is None


def test_model_edge_buys_no_above_fair() -> None:
    price = quote(K, 0.40, 0.45, bid_size=5)  # NO costs 0.60; the model says NO is worth 0.80
    signal = edge(price, 0.20)
    assert signal is not None
    assert (signal.side, signal.price, signal.fair, signal.contracts) == ("no", 0.60, 0.80, 5)
    assert signal.edge_dollars == 0.91  # 5 * 0.20 - 0.09 (0.084 -> 0.09)


def test_model_edge_needs_a_gap_wider_than_the_spread_and_fee() -> None:
    price = quote(P, 0.40, 0.45)
    assert edge(price, 0.42) is None  # inside the spread
    assert edge(price, 0.45) is None  # at the ask, zero edge
    assert edge(price, 0.4501) is not None  # Polymarket's default fee is 0


def test_model_edge_from_empty_or_unusable_prices_is_none() -> None:
    assert edge(quote(K, 0.40, None), 0.90) is None
    assert edge(quote(K, 0.40, 0.45, ask_size=0.5), 0.90) is None
    assert edge(quote(K, None, 0.45), 0.90) is not None
    for status in (PriceStatus.STALE, PriceStatus.RESYNCING, PriceStatus.CLOSED):
        assert edge(quote(K, 0.40, 0.45, status=status), 0.90) is None
    assert edge(quote(K, 0.40, 0.45, recv_ts_ns=NOW - 3 * 10**9), 0.90) is None


def test_model_edge_from_an_old_fair_value_is_none() -> None:
    price = quote(K, 0.40, 0.45)
    assert edge(price, 0.90, fair_ts_ns=NOW - int(MAX_AGE * 1e9)) is not None
    assert edge(price, 0.90, fair_ts_ns=NOW - int(MAX_AGE * 1e9) - 1) is None


@pytest.mark.parametrize("fair", [math.nan, math.inf, -0.01, 1.01, True, "0.5", None])
def test_model_edge_rejects_a_bad_fair_value(fair: object) -> None:
    with pytest.raises(ValueError, match="fair_yes"):
        edge(quote(K, 0.40, 0.45), fair)  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [-1.0, math.nan, math.inf, "1"])
def test_model_edge_rejects_a_bad_threshold(threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold_cents"):
        edge(quote(K, 0.40, 0.45), 0.9, threshold_cents=threshold)  # type: ignore[arg-type]


@given(quotes(K), st.integers(0, 10_000), st.floats(0, 20))
def test_model_edge_is_fair_minus_price_minus_fee_above_threshold(
    price: MarketPrice, fair_ticks: int, threshold: float
) -> None:
    signal = edge(price, fair_ticks / 10_000, threshold_cents=threshold)
    if signal is None:
        return
    assert price.status == PriceStatus.LIVE
    fair = Fraction(fair_ticks if signal.side == "yes" else 10_000 - fair_ticks, 10_000)
    leg = Leg(signal.platform, signal.market_id, signal.side, signal.price, signal.contracts)
    net = signal.contracts * (fair - Fraction(round(signal.price * 10_000), 10_000)) - _fee_dollars(FEES, leg)
    assert signal.edge_dollars == float(net)
    assert signal.edge_cents_per_contract == float(net * 100 / signal.contracts) > threshold


# --- records ----------------------------------------------------------------------


def test_signals_round_trip_through_msgpack_and_json_as_plain_types() -> None:
    arb_signal = arb(quote(K, 0.38, 0.40), quote(P, 0.55, 0.57))
    edge_signal = edge(quote(P, 0.40, 0.45), 0.60)
    assert arb_signal is not None and edge_signal is not None
    for record in (arb_signal.to_dict(), edge_signal.to_dict()):
        assert msgpack.unpackb(msgpack.packb(record, strict_types=True)) == record
        assert json.loads(json.dumps(record)) == record
    legs = arb_signal.to_dict()["legs"]
    assert legs[0] == {"platform": "kalshi", "market_id": "KX-GAME-A", "side": "yes", "price": 0.40, "contracts": 100}
    assert arb_signal.to_dict()["kind"] == "arbitrage"
    assert edge_signal.to_dict()["platform"] == "polymarket" and edge_signal.to_dict()["kind"] == "model_edge"
