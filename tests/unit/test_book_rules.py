"""The venue update rules of the local order books, one rule per test."""

from __future__ import annotations

import pytest

from markets.book import BookError, BookNotReady, KalshiOrderBook, PolymarketOrderBook
from markets.models import Platform, PriceStatus

DOC_YES = [["0.0800", "300.00"], ["0.2200", "333.00"]]
DOC_NO = [["0.5400", "20.00"], ["0.5600", "146.00"]]


def kalshi(use_yes_price: bool = False) -> KalshiOrderBook:
    book = KalshiOrderBook("FED-23DEC-T3.00", use_yes_price=use_yes_price)
    book.apply_snapshot(DOC_YES, DOC_NO)
    return book


class TestKalshi:
    def test_a_new_book_is_not_usable_until_a_snapshot(self) -> None:
        book = KalshiOrderBook("M", use_yes_price=False)
        assert book.status is PriceStatus.RESYNCING and not book.is_ready
        with pytest.raises(BookNotReady):
            book.apply_delta("0.50", "1.00", "yes")

    def test_docs_snapshot_gives_yes_ask_from_best_no_bid(self) -> None:
        price = kalshi().to_market_price()
        assert (price.yes_bid, price.yes_bid_size) == (0.22, 333.0)
        assert (price.yes_ask, price.yes_ask_size) == (0.44, 146.0)  # 1 - 0.56
        assert price.status is PriceStatus.LIVE

    def test_yes_scale_no_levels_are_not_inverted_again(self) -> None:
        book = KalshiOrderBook("M", use_yes_price=True)
        book.apply_snapshot(DOC_YES, [["0.4400", "146.00"], ["0.4600", "20.00"]])
        assert book.best_ask == (4400, 14600)
        assert book.no_bids == kalshi().no_bids

    def test_delta_adds_to_the_level_instead_of_overwriting(self) -> None:
        book = kalshi()
        assert book.apply_delta("0.22", "13.50", "yes") is True
        assert book.best_bid == (2200, 34650)
        assert book.apply_delta("0.0800", "-0.01", "yes") is False  # below the top
        assert book.bids[800] == 29999

    def test_a_level_that_reaches_zero_is_removed_exactly(self) -> None:
        book = kalshi()
        for delta in ("-100.10", "-200.20", "-32.70"):
            book.apply_delta("0.22", delta, "yes")
        assert 2200 not in book.bids
        assert book.best_bid == (800, 30000)

    def test_three_decimal_price_is_the_same_level(self) -> None:
        book = kalshi()
        book.apply_delta("0.560", "-146.00", "no")
        assert book.best_ask == (4600, 2000)

    def test_a_level_below_zero_marks_the_book_resyncing_without_clamping(self) -> None:
        book = kalshi()
        with pytest.raises(BookError, match=r"would go negative \(333.00 \+ -333.01\)"):
            book.apply_delta("0.22", "-333.01", "yes")
        assert book.status is PriceStatus.RESYNCING
        assert book.is_empty
        with pytest.raises(BookNotReady):
            book.apply_delta("0.22", "1", "yes")
        book.apply_snapshot(DOC_YES, DOC_NO)
        assert book.status is PriceStatus.LIVE

    def test_absent_keys_are_empty_sides(self) -> None:
        book = KalshiOrderBook("M", use_yes_price=False)
        book.apply_snapshot()
        price = book.to_market_price()
        assert price.yes_bid is None and price.yes_ask is None and price.yes_bid_size is None
        assert book.status is PriceStatus.LIVE

    def test_snapshot_replaces_everything(self) -> None:
        book = kalshi()
        book.apply_snapshot([["0.10", "1"]])
        assert book.bids == {1000: 100} and book.asks == {}

    @pytest.mark.parametrize(
        ("yes", "message"),
        [([["0.5"]], r"\[price, count\]"), ([["1.5", "1"]], "out of range"), ([["0.5", "-1"]], "negative"),
         ([["abc", "1"]], "decimal")],
    )
    def test_bad_snapshot_levels_are_rejected_and_leave_the_book_resyncing(self, yes: list, message: str) -> None:
        book = kalshi()
        with pytest.raises(BookError, match=message):
            book.apply_snapshot(yes)
        assert book.status is PriceStatus.RESYNCING

    def test_bad_delta_fields_raise_and_leave_the_book_intact(self) -> None:
        book = kalshi()
        before = (dict(book.bids), dict(book.asks))
        for args in (("0.5", "1", "maybe"), ("2.0", "1", "yes"), ("0.5", "x", "yes")):
            with pytest.raises(ValueError):
                book.apply_delta(*args)
        assert (book.bids, book.asks) == before and book.status is PriceStatus.LIVE

    def test_stale_book_revives_on_data_and_reports_the_change(self) -> None:
        book = kalshi()
        book.mark_stale()
        assert book.to_market_price().status is PriceStatus.STALE
        assert book.apply_delta("0.01", "1", "yes") is True
        assert book.status is PriceStatus.LIVE

    def test_crossed_book_is_reported(self) -> None:
        book = KalshiOrderBook("M", use_yes_price=True)
        book.apply_snapshot([["0.60", "1"]], [["0.55", "1"]])
        assert book.is_crossed and book.to_market_price().is_crossed

    def test_sub_penny_levels(self) -> None:
        book = KalshiOrderBook("M", use_yes_price=False)
        book.apply_snapshot([["0.0050", "10"], ["0.0040", "5"]], [["0.9910", "7"]])
        price = book.to_market_price()
        assert price.yes_bid == 0.005 and price.yes_ask == 0.009


def poly() -> PolymarketOrderBook:
    book = PolymarketOrderBook("tok", market_id="0xcond")
    # The docs example, worst -> best, prices without the leading zero.
    book.apply_snapshot(
        [{"price": ".48", "size": "30"}, {"price": ".49", "size": "20"}, {"price": ".50", "size": "15"}],
        [{"price": ".54", "size": "10"}, {"price": ".53", "size": "60"}, {"price": ".52", "size": "25"}],
        ts_ms=123456789000,
    )
    return book


class TestPolymarket:
    def test_book_in_worst_to_best_order(self) -> None:
        price = poly().to_market_price()
        assert (price.yes_bid, price.yes_bid_size, price.yes_ask, price.yes_ask_size) == (0.5, 15.0, 0.52, 25.0)
        assert price.market_id == "0xcond" and price.venue_ts_ms == 123456789000

    def test_price_change_sets_an_absolute_size(self) -> None:
        book = poly()
        assert book.apply_delta("0.5", "200", "BUY") is True
        assert book.best_bid == (5000, 200_000_000)
        assert book.apply_delta("0.500", "7.5", "BUY") is True
        assert book.bids[5000] == 7_500_000

    def test_zero_removes_and_the_next_best_takes_over(self) -> None:
        book = poly()
        assert book.apply_delta("0.52", "0", "SELL") is True
        assert book.best_ask == (5300, 60_000_000)
        assert book.apply_delta("0.99", "0", "SELL") is False  # absent level: nothing changes

    def test_update_away_from_the_top_reports_no_change(self) -> None:
        assert poly().apply_delta("0.30", "5", "BUY") is False

    def test_negative_size_and_bad_side_are_rejected(self) -> None:
        book = poly()
        with pytest.raises(ValueError, match="negative"):
            book.apply_delta("0.5", "-1", "BUY")
        with pytest.raises(ValueError, match="side"):
            book.apply_delta("0.5", "1", "yes")
        assert book.best_bid == (5000, 15_000_000)

    def test_tick_size_change_waits_for_the_next_book(self) -> None:
        book = poly()
        assert book.apply_tick_size_change("0.001") is True
        assert book.status is PriceStatus.RESYNCING and book.is_empty
        assert book.apply_delta("0.501", "10", "BUY") is False
        assert book.is_empty
        assert book.apply_tick_size_change("0.001") is False  # no-op change
        book.apply_book([{"price": "0.501", "size": "10"}], [])
        assert book.best_bid == (5010, 10_000_000) and book.status is PriceStatus.LIVE

    def test_a_no_op_tick_change_keeps_a_book_that_never_learned_its_tick(self) -> None:
        book = poly()
        assert book.tick_size is None
        assert book.apply_tick_size_change("0.01", old_tick_size="0.01") is False
        assert book.status is PriceStatus.LIVE and book.best_bid == (5000, 15_000_000)
        assert book.apply_tick_size_change("0.001", old_tick_size="0.01") is True
        assert book.status is PriceStatus.RESYNCING

    def test_best_cross_check_uses_the_venue_empty_sentinels(self) -> None:
        book = poly()
        assert book.matches_best("0.5", "0.52")
        assert book.matches_best(".50", None)
        assert not book.matches_best("0.49", "0.52")
        empty = PolymarketOrderBook("t")
        empty.apply_snapshot([], [])
        assert empty.matches_best("0", "1")
        assert not empty.matches_best("0.01", "1")

    def test_bad_book_levels_are_rejected(self) -> None:
        book = poly()
        with pytest.raises(BookError, match="bad bids level"):
            book.apply_snapshot([{"price": "0.5"}], [])
        assert book.status is PriceStatus.RESYNCING

    def test_last_trade_is_carried(self) -> None:
        book = poly()
        book.set_last_trade("0.456")
        assert book.to_market_price().last_trade == 0.456


class TestStatesAndStamps:
    def test_mark_stale_only_downgrades_a_live_book(self) -> None:
        book = kalshi()
        book.mark_resyncing()
        book.mark_stale()
        assert book.status is PriceStatus.RESYNCING  # known wrong stays known wrong
        book.mark_closed()
        book.mark_stale()
        assert book.status is PriceStatus.CLOSED

    def test_mark_verified_revives_only_a_stale_book(self) -> None:
        book = kalshi()
        book.mark_stale()
        book.mark_verified()
        assert book.status is PriceStatus.LIVE
        for mark in (book.mark_resyncing, book.mark_closed):
            mark()
            status = book.status
            book.mark_verified()
            assert book.status is status

    def test_removing_a_level_behind_the_top_reports_no_change(self) -> None:
        book = poly()  # bids 0.48 0.49 0.50, asks 0.52 0.53 0.54
        assert book.apply_delta("0.54", "0", "SELL") is False and book.apply_delta("0.48", "0", "BUY") is False
        assert book.best_bid == (5000, 15_000_000) and book.best_ask == (5200, 25_000_000)

    def test_a_closed_book_takes_no_updates_and_says_so(self) -> None:
        book = kalshi()
        book.mark_closed()
        assert book.status is PriceStatus.CLOSED and not book.is_ready
        assert book.to_market_price().status is PriceStatus.CLOSED
        with pytest.raises(BookNotReady, match="FED-23DEC-T3.00: orderbook_delta before a snapshot"):
            book.apply_delta("0.22", "1", "yes")
        closed = poly()
        closed.mark_closed()
        assert closed.apply_delta("0.5", "1", "BUY") is False and closed.bids[5000] == 15_000_000

    def test_venue_stamps_follow_snapshots_and_updates(self) -> None:
        book = KalshiOrderBook("M", use_yes_price=True)
        assert book.venue_ts_ms is None and book.to_market_price().venue_ts_ms is None
        book.apply_snapshot([["0.40", "1"]], [["0.60", "1"]], ts_ms=100)
        assert book.to_market_price().venue_ts_ms == 100
        book.apply_delta("0.30", "1", "yes", ts_ms=200)
        assert book.venue_ts_ms == 200
        book.apply_delta("0.30", "1", "yes")  # an update without a stamp keeps the last one
        assert book.venue_ts_ms == 200
        book.apply_snapshot([["0.40", "1"]], [])  # a snapshot without one has none
        assert book.venue_ts_ms is None
        pm = poly()
        pm.apply_delta("0.30", "1", "BUY", ts_ms=300)
        assert pm.venue_ts_ms == 300

    def test_the_record_names_venue_market_and_receive_time(self) -> None:
        price = kalshi().to_market_price()
        assert (price.platform, price.market_id, price.recv_ts_ns) == (Platform.KALSHI, "FED-23DEC-T3.00", 0)
        assert kalshi().to_market_price(recv_ts_ns=42).recv_ts_ns == 42
        pm = poly().to_market_price()
        assert (pm.platform, pm.market_id) == (Platform.POLYMARKET, "0xcond")
        assert poly().token_id == "tok" and PolymarketOrderBook("tok2").market_id == "tok2"

    def test_emptying_a_side_leaves_it_empty(self) -> None:
        book = PolymarketOrderBook("tok")
        book.apply_snapshot([{"price": "0.4", "size": "1"}], [{"price": "0.6", "size": "1"}])
        assert book.apply_delta("0.6", "0", "SELL") is True and book.best_ask is None
        assert book.apply_delta("0.4", "0", "BUY") is True and book.best_bid is None
        assert book.to_market_price().yes_ask is None

    @pytest.mark.parametrize("side", ["yes", "no"])
    def test_zero_size_snapshot_levels_are_absent_and_negative_ones_refused(self, side: str) -> None:
        book = KalshiOrderBook("M", use_yes_price=True)
        levels = [["0.40", "0"], ["0.30", "2"]] if side == "yes" else [["0.60", "0"], ["0.70", "2"]]
        book.apply_snapshot(*((levels, []) if side == "yes" else ([], levels)))
        assert (book.bids if side == "yes" else book.asks) == ({3000: 200} if side == "yes" else {7000: 200})
        bad = [["0.40", "-0.01"]]
        with pytest.raises(BookError, match=f"negative count in {side} level"):
            book.apply_snapshot(*((bad, []) if side == "yes" else ([], bad)))
        with pytest.raises(BookError, match="negative size in asks level"):
            PolymarketOrderBook("tok").apply_snapshot([], [{"price": "0.6", "size": "-0.000001"}])
        zero = PolymarketOrderBook("tok")
        zero.apply_snapshot([{"price": "0.4", "size": "0"}], [])
        assert zero.bids == {}

    def test_errors_name_the_market_and_the_side(self) -> None:
        with pytest.raises(ValueError, match="FED-23DEC-T3.00: side must be 'yes' or 'no', got 'maybe'"):
            kalshi().apply_delta("0.5", "1", "maybe")
        with pytest.raises(BookError, match=r"FED-23DEC-T3.00: no level must be \[price, count\]"):
            kalshi().apply_snapshot([], [["0.5"]])
        with pytest.raises(BookError, match="tok: bad asks level"):
            poly().apply_snapshot([], [{"size": "1"}])
