"""Units: exact parsing, rounding, ranges, and the derived fields of MarketPrice."""

from __future__ import annotations

import pytest

from markets import models
from markets.models import (
    MarketPrice,
    Platform,
    PriceStatus,
    format_fixed,
    format_price,
    parse_fixed,
    parse_price_ticks,
    ticks_to_dollars,
    venue_timestamp_ms,
)


@pytest.mark.parametrize("text", ["0.5", ".50", "0.50", "0.5000", " 0.5 ", "+0.5", 0.5, "5E-1"])
def test_equivalent_spellings_are_one_tick(text: str | float) -> None:
    assert parse_price_ticks(text) == 5000


@pytest.mark.parametrize(
    ("text", "places", "expected"),
    [
        ("0.00005", 4, 1),  # half rounds away from zero, never truncates
        ("0.00004", 4, 0),
        ("0.99995", 4, 10000),
        ("-54.00", 2, -5400),
        ("-0.005", 2, -1),
        ("74.77", 2, 7477),
        ("12.3456789", 6, 12345679),
        (3, 2, 300),
        ("1e2", 2, 10000),
    ],
)
def test_parse_fixed_rounds_half_away_from_zero(text: str, places: int, expected: int) -> None:
    assert parse_fixed(text, places) == expected


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", "--1", "nan", "inf", "0x10", True, None, [1]])
def test_parse_fixed_rejects_non_numbers_with_the_value_named(bad: object) -> None:
    with pytest.raises(ValueError, match="decimal|finite|number"):
        parse_fixed(bad, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["1.0001", "-0.01", "2", "-1"])
def test_prices_outside_zero_to_one_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_price_ticks(bad)


def test_formatting_round_trips() -> None:
    assert format_price(960) == "0.0960"
    assert format_price(10000) == "1.0000"
    assert parse_price_ticks(format_price(1234)) == 1234
    assert format_fixed(-5400, 2) == "-54.00"
    assert format_fixed(7, 2) == "0.07"
    assert parse_fixed(format_fixed(-123456, 6), 6) == -123456


def test_derived_fields_come_from_the_yes_side() -> None:
    price = MarketPrice("M", 0.42, 0.45, 10.0, 5.0, Platform.KALSHI)
    assert price.no_bid == pytest.approx(0.55)
    assert price.no_ask == pytest.approx(0.58)
    assert price.mid == pytest.approx(0.435)
    assert price.spread == pytest.approx(0.03)
    assert not price.is_crossed
    assert price.status is PriceStatus.LIVE


def test_an_empty_side_stays_empty_in_derived_fields() -> None:
    price = MarketPrice("M", None, 0.45, None, 5.0, Platform.POLYMARKET)
    assert price.no_ask is None
    assert price.no_bid == pytest.approx(0.55)
    assert price.mid is None and price.spread is None
    assert not price.is_crossed



@pytest.mark.parametrize(("value", "expected"), [(None, None), (0, 0), (1_700_000_000_000, 1_700_000_000_000),
                                                 ("1700000000000", 1_700_000_000_000), ("0", 0),
                                                 ("9" * 19, int("9" * 19)), (2**64 - 1, 2**64 - 1)])
def test_venue_timestamps_are_non_negative_integers(value: object, expected: int | None) -> None:
    assert venue_timestamp_ms(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    (-1, "out of range"), (2**64, "out of range"), ("", "not a millisecond timestamp"),
    ("abc", "not a millisecond timestamp"), ("-1", "not a millisecond timestamp"),
    ("1.5", "not a millisecond timestamp"), ("１２", "not a millisecond timestamp"),
    ("9" * 20, "not a millisecond timestamp"), (True, "not a millisecond timestamp"),
    (1.5, "not a millisecond timestamp"), ([1], "not a millisecond timestamp"),
    ("2026-11-30T00:00:00Z", "not a millisecond timestamp")])
def test_anything_else_is_not_a_venue_timestamp(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        venue_timestamp_ms(value)


@pytest.mark.parametrize(("text", "places", "expected"), [
    (".5", 4, 5000), ("7", 0, 7), ("7.", 0, 7), ("2.5E-4", 4, 3), (0.00025, 4, 3), ("-2.5E-4", 4, -3),
    ("1.25", 1, 13)])
def test_parse_fixed_edge_spellings(text: str | float, places: int, expected: int) -> None:
    assert parse_fixed(text, places) == expected


@pytest.mark.parametrize(("bad", "named"), [("a.5", "'a.5'"), ([1], "list"), ({"v": 1}, "dict"), ("1.2.3", "1.2.3")])
def test_parse_fixed_errors_name_the_value(bad: object, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_fixed(bad, 2)  # type: ignore[arg-type]


def test_formatting_of_zero_whole_units_and_conversion_to_dollars() -> None:
    assert format_fixed(0, 2) == "0.00"
    assert format_fixed(7, 0) == "7" and format_fixed(-7, 0) == "-7"
    assert ticks_to_dollars(5000) == 0.5 and ticks_to_dollars(10_000) == 1.0


def test_price_bounds_are_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_PRICE_CACHE", {})  # a memoized answer would skip the range check
    assert parse_price_ticks("0") == 0 and parse_price_ticks("1") == 10_000
    assert parse_price_ticks(0) == 0 and parse_price_ticks(1) == 10_000 and parse_price_ticks(0.0) == 0


def test_valid_string_prices_are_memoized_and_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    memo: dict[str, int] = {"0.4242": 1234}
    monkeypatch.setattr(models, "_PRICE_CACHE", memo)
    assert parse_price_ticks("0.4242") == 1234  # the memo answers before any parsing
    assert parse_price_ticks("0.5") == 5000 and memo["0.5"] == 5000
    monkeypatch.setattr(models, "_PRICE_CACHE_LIMIT", 3)
    for text in ("0.1", "0.2", "0.3"):
        assert parse_price_ticks(text) == int(float(text) * 10_000)
    assert len(memo) == 3 and "0.3" not in memo
    assert parse_price_ticks(0.25) == 2500 and 0.25 not in memo
