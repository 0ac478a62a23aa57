"""Values a broken or hostile venue sends, at the level of units and books.

Each of these once escaped as the wrong exception type (`decimal.InvalidOperation`,
`decimal.Overflow`, `OverflowError`), was silently read as an empty side, or put a
crossed book on the bus as LIVE.
"""

from __future__ import annotations

import math

import pytest

from markets.book import BookError, KalshiOrderBook, PolymarketOrderBook
from markets.models import MarketPrice, Platform, PriceStatus, parse_fixed, parse_price_ticks

BEYOND = ["1e999999999", "-1e999999999", "1E+400", "0.5e1000000000000000000", "9" * 30, "1" * 5000,
          "1000000000000", "-1000000000000", 1e308, -1e308, 10**13, "1e12"]


@pytest.mark.parametrize("value", BEYOND, ids=lambda v: repr(v)[:24])
def test_numbers_beyond_range_or_precision_are_a_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_fixed(value, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "units"), [("999999999999.99", 99_999_999_999_999),
                                             ("-999999999999.99", -99_999_999_999_999),
                                             (999_999_999_999, 99_999_999_999_900),
                                             ("9.9999999999e11", 99_999_999_999_000)])
def test_the_largest_numbers_in_range_parse(value: object, units: int) -> None:
    assert parse_fixed(value, 2) == units  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["١٢", "１２", "٠.٥", "1\u0661"])
def test_digits_of_other_scripts_are_not_numbers(value: str) -> None:
    with pytest.raises(ValueError, match="ASCII"):
        parse_fixed(value, 2)


@pytest.mark.parametrize(("value", "expected"), [("1e-999999999", 0), ("0e999999999", 0), (1e-320, 0),
                                                 ("-1e-30", 0), ("4.9e-5", 0), ("5e-5", 1)])
def test_tiny_numbers_round_to_zero_or_one_unit(value: object, expected: int) -> None:
    assert parse_fixed(value, 4) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [10**12, -10**12, "999999999999.995", "9.99999999999995e11", 999999999999.995])
def test_the_bound_is_exclusive_and_errors_name_the_value(value: object) -> None:
    """At 10**12 (also when rounding reaches it) a number is out of range."""
    with pytest.raises(ValueError, match=f"out of range: {value!r}"):
        parse_fixed(value, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "units"), [("0000000000000.5", 50), ("0000000000000001", 100),
                                             (10**12 - 1, 99_999_999_999_900), (-(10**12) + 1, -99_999_999_999_900)])
def test_leading_zeros_do_not_count_towards_the_bound(value: object, units: int) -> None:
    assert parse_fixed(value, 2) == units  # type: ignore[arg-type]


def test_a_places_beyond_decimal_precision_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_fixed("1.5e8", 25)


class TestSnapshotSides:
    @pytest.mark.parametrize("side", ["", 0, False, {}, None, "[]", {"0.5": "1"}, 1.5])
    def test_a_kalshi_side_that_is_not_an_array_is_refused(self, side: object) -> None:
        book = KalshiOrderBook("M", use_yes_price=True)
        book.apply_snapshot([["0.40", "5"]], [["0.60", "5"]])
        with pytest.raises(BookError, match="^M: no side must be an array"):
            book.apply_snapshot([["0.40", "5"]], side)  # type: ignore[arg-type]
        assert book.status is PriceStatus.RESYNCING and book.is_empty

    @pytest.mark.parametrize("side", ["", 0, False, {}, None, "bids"])
    def test_a_polymarket_side_that_is_not_an_array_is_refused(self, side: object) -> None:
        book = PolymarketOrderBook("tok")
        with pytest.raises(BookError, match="^tok: asks side must be an array"):
            book.apply_snapshot([{"price": "0.4", "size": "1"}], side)  # type: ignore[arg-type]
        assert book.status is PriceStatus.RESYNCING

    @pytest.mark.parametrize("level", ["0.4", ["0.4", "1"], None, 7])
    def test_a_polymarket_level_that_is_not_an_object_is_refused(self, level: object) -> None:
        with pytest.raises(BookError, match="bids level must be an object"):
            PolymarketOrderBook("tok").apply_snapshot([level], [])  # type: ignore[list-item]


class TestHugeSizes:
    def test_a_kalshi_delta_too_large_to_publish_is_refused_and_the_book_is_untouched(self) -> None:
        book = KalshiOrderBook("M", use_yes_price=True)
        book.apply_snapshot([["0.40", "5"]], [["0.60", "5"]])
        for delta in ("1e400", "9" * 40, 1e308):
            with pytest.raises(ValueError, match="out of range"):
                book.apply_delta("0.40", delta, "yes")  # type: ignore[arg-type]
        assert book.bids == {4000: 500} and book.status is PriceStatus.LIVE

    def test_a_snapshot_level_too_large_is_a_bad_snapshot(self) -> None:
        with pytest.raises(BookError, match="out of range"):
            KalshiOrderBook("M", use_yes_price=True).apply_snapshot([["0.40", "1e30"]], [])
        with pytest.raises(BookError, match="out of range"):
            PolymarketOrderBook("tok").apply_snapshot([{"price": "0.4", "size": "1" * 400}], [])

    def test_the_largest_sizes_still_make_a_finite_price(self) -> None:
        book = PolymarketOrderBook("tok")
        book.apply_snapshot([{"price": "0.4", "size": "999999999999.999999"}], [])
        price = book.to_market_price()
        assert price.yes_bid_size is not None and math.isfinite(price.yes_bid_size)


class TestCrossedBooks:
    """Locked (bid == ask) counts as crossed, in the book and in the record: one rule."""

    @pytest.mark.parametrize(("bid", "ask", "crossed"), [("0.60", "0.55", True), ("0.55", "0.55", True),
                                                         ("0.54", "0.55", False)])
    def test_book_and_record_agree_on_crossed_and_locked(self, bid: str, ask: str, crossed: bool) -> None:
        book = KalshiOrderBook("M", use_yes_price=True)
        book.apply_snapshot([[bid, "1"]], [[ask, "1"]])
        price = book.to_market_price()
        assert book.is_crossed is crossed and price.is_crossed is crossed

    def test_a_crossed_or_locked_book_is_never_reported_live(self) -> None:
        book = PolymarketOrderBook("tok")
        book.apply_snapshot([{"price": "0.55", "size": "1"}], [{"price": "0.55", "size": "1"}])
        assert book.status is PriceStatus.LIVE  # the book's own state: a snapshot landed
        assert book.to_market_price().status is PriceStatus.STALE  # what anyone reading it is told
        book.apply_delta("0.55", "0", "BUY")
        assert book.to_market_price().status is PriceStatus.LIVE

    @pytest.mark.parametrize("status", [PriceStatus.CLOSED, PriceStatus.STALE])
    def test_other_statuses_of_a_crossed_book_are_kept(self, status: PriceStatus) -> None:
        book = KalshiOrderBook("M", use_yes_price=True)
        book.apply_snapshot([["0.60", "1"]], [["0.50", "1"]])
        book.mark_closed() if status is PriceStatus.CLOSED else book.mark_stale()
        assert book.to_market_price().status is status

    @pytest.mark.parametrize(("bid", "ask"), [(0.5, 0.5), (0.6, 0.5), (1.0, 0.0)])
    def test_a_record_with_bid_at_or_above_ask_is_crossed(self, bid: float, ask: float) -> None:
        assert MarketPrice("M", bid, ask, 1.0, 1.0, Platform.KALSHI).is_crossed

    @pytest.mark.parametrize(("bid", "ask"), [(0.49, 0.5), (None, 0.5), (0.5, None), (None, None)])
    def test_a_record_with_bid_below_ask_or_an_empty_side_is_not_crossed(self, bid: float | None,
                                                                         ask: float | None) -> None:
        assert not MarketPrice("M", bid, ask, None, None, Platform.KALSHI).is_crossed


def test_price_parse_refuses_unhashable_and_boolean_values_with_value_error() -> None:
    for value in ([1], {"p": 1}, True, None):
        with pytest.raises(ValueError):
            parse_price_ticks(value)  # type: ignore[arg-type]
