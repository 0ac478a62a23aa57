"""Market-channel frame handling (markets/polymarket/market_channel.py), socket-free.

Frames are written the way the venue writes them (see protocols/polymarket.md §4):
an initial array of `book` objects, new-schema `price_change` events whose entries
name their own asset and carry the post-change top, text PONG, and so on.
"""

from __future__ import annotations

import orjson
import pytest

from markets.book import PolymarketOrderBook
from markets.models import PriceStatus
from markets.polymarket import market_channel as mc

YES = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
NO = "52114319501245915516055106046884209969926127482827954674443846427813813222426"
CONDITION = "0x5f65177b394277fd294cd75650044e32ba009a95022d88a0c1d565897d72f8f1"


def book_event(asset: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]], **extra: str) -> dict:
    return {"event_type": "book", "asset_id": asset, "market": CONDITION, "timestamp": "1757908892351",
            "hash": "2fc4a3d6a98bc164e057589bcb74981852b87412",
            "bids": [{"price": p, "size": s} for p, s in bids],
            "asks": [{"price": p, "size": s} for p, s in asks], **extra}


def change(asset: str, price: str, size: str, side: str, best_bid: str, best_ask: str) -> dict:
    return {"asset_id": asset, "price": price, "size": size, "side": side,
            "hash": "56621a121a47ed9333273e21c83b660cff37ae50", "best_bid": best_bid, "best_ask": best_ask}


def price_change(*entries: dict, ts: str = "1757908892400") -> str:
    return orjson.dumps({"market": CONDITION, "price_changes": list(entries), "timestamp": ts,
                         "event_type": "price_change"}).decode()


@pytest.fixture
def channel() -> mc.MarketChannel:
    books = {YES: PolymarketOrderBook(YES, CONDITION), NO: PolymarketOrderBook(NO)}
    return mc.MarketChannel(books)


def dump(channel: mc.MarketChannel) -> mc.FrameOutcome:
    """The initial dump: one array, levels worst to best, one price without a leading zero."""
    frame = [
        book_event(YES, [(".48", "30"), (".49", "20"), (".50", "15")], [(".54", "10"), (".53", "60"), (".52", "25")]),
        book_event(NO, [("0.46", "10"), ("0.47", "25")], [("0.52", "15"), ("0.51", "20")], tick_size="0.01"),
    ]
    return channel.apply_frame(orjson.dumps(frame).decode())


def test_initial_array_dump_seeds_every_book(channel: mc.MarketChannel) -> None:
    outcome = dump(channel)
    assert set(outcome.changed) == {YES, NO}
    assert not outcome.rejected and not outcome.resync
    yes = channel.books[YES]
    assert yes.status is PriceStatus.LIVE
    assert yes.best_bid == (5000, 15_000_000) and yes.best_ask == (5200, 25_000_000)
    assert yes.venue_ts_ms == 1757908892351
    assert channel.books[NO].tick_size == 100
    price = yes.to_market_price()
    assert price.market_id == CONDITION and price.yes_bid == 0.5 and price.yes_ask == 0.52


def test_price_change_entries_apply_to_their_own_asset(channel: mc.MarketChannel) -> None:
    dump(channel)
    outcome = channel.apply_frame(price_change(
        change(YES, "0.51", "200", "BUY", "0.51", "0.52"),
        change(NO, "0.49", "200", "SELL", "0.47", "0.49"),
    ))
    assert not outcome.resync and not outcome.rejected
    assert set(outcome.changed) == {YES, NO}
    assert channel.books[YES].best_bid == (5100, 200_000_000)
    assert channel.books[NO].best_ask == (4900, 200_000_000)
    assert channel.books[YES].venue_ts_ms == 1757908892400


def test_size_is_absolute_and_zero_removes_the_level(channel: mc.MarketChannel) -> None:
    dump(channel)
    channel.apply_frame(price_change(change(YES, "0.50", "7", "BUY", "0.5", "0.52")))
    assert channel.books[YES].best_bid == (5000, 7_000_000)
    outcome = channel.apply_frame(price_change(change(YES, "0.5", "0", "BUY", "0.49", "0.52")))
    assert channel.books[YES].best_bid == (4900, 20_000_000) and not outcome.resync


def test_change_below_the_top_is_not_published(channel: mc.MarketChannel) -> None:
    dump(channel)
    outcome = channel.apply_frame(price_change(change(YES, "0.40", "5", "BUY", "0.5", "0.52")))
    assert outcome.changed == {} and not outcome.resync


def test_best_mismatch_drops_the_book_and_asks_for_resync(channel: mc.MarketChannel) -> None:
    """A mismatch that persists past the dispute limit (5 frames by default) is a wrong book."""
    dump(channel)
    for _ in range(channel.disputes.max_frames):
        assert not channel.apply_frame(price_change(change(YES, "0.40", "5", "BUY", "0.51", "0.52"))).resync
    outcome = channel.apply_frame(price_change(change(YES, "0.40", "5", "BUY", "0.51", "0.52")))
    assert outcome.resync == [(YES, mc.BEST_MISMATCH)]
    assert channel.books[YES].status is PriceStatus.RESYNCING and channel.books[YES].is_empty
    assert YES in outcome.changed
    # Until the next book, further changes for that token are dropped silently.
    later = channel.apply_frame(price_change(change(YES, "0.45", "5", "BUY", "0.5", "0.52")))
    assert later.changed == {} and later.resync == [] and later.rejected == []
    assert later.dropped == [mc.AWAITING_SNAPSHOT]


def test_empty_side_sentinels_match_an_empty_book(channel: mc.MarketChannel) -> None:
    channel.apply_frame(orjson.dumps(book_event(YES, [("0.5", "1")], [])).decode())
    outcome = channel.apply_frame(price_change(change(YES, "0.5", "0", "BUY", "0", "1")))
    assert not outcome.resync
    assert channel.books[YES].best_bid is None and channel.books[YES].best_ask is None


def test_cross_check_uses_the_last_entry_per_asset(channel: mc.MarketChannel) -> None:
    """Two entries for one asset: the top named by the last one is the post-event top."""
    dump(channel)
    outcome = channel.apply_frame(price_change(
        change(YES, "0.51", "3", "BUY", "0.51", "0.52"),
        change(YES, "0.515", "4", "BUY", "0.515", "0.52"),
    ))
    assert not outcome.resync and channel.books[YES].best_bid == (5150, 4_000_000)


def test_tick_size_change_starts_an_epoch_until_the_next_book(channel: mc.MarketChannel) -> None:
    dump(channel)
    frame = orjson.dumps({"event_type": "tick_size_change", "asset_id": NO, "market": CONDITION,
                          "old_tick_size": "0.01", "new_tick_size": "0.001", "timestamp": "1"}).decode()
    outcome = channel.apply_frame(frame)
    assert outcome.awaiting == [NO] and NO in outcome.changed
    assert channel.books[NO].status is PriceStatus.RESYNCING
    ignored = channel.apply_frame(price_change(change(NO, "0.471", "9", "BUY", "0.471", "0.51")))
    assert ignored.changed == {} and channel.books[NO].is_empty
    channel.apply_frame(orjson.dumps(book_event(NO, [("0.471", "9")], [("0.509", "2")], tick_size="0.001")).decode())
    assert channel.books[NO].status is PriceStatus.LIVE and channel.books[NO].best_bid == (4710, 9_000_000)
    # The same tick again is a no-op, not a new epoch.
    frame_again = frame.replace('"0.01"', '"0.001"')
    assert channel.apply_frame(frame_again).awaiting == []
    assert channel.books[NO].status is PriceStatus.LIVE


def test_last_trade_touches_only_the_last_trade(channel: mc.MarketChannel) -> None:
    dump(channel)
    frame = orjson.dumps({"asset_id": YES, "event_type": "last_trade_price", "fee_rate_bps": "0",
                          "market": CONDITION, "price": "0.456", "side": "BUY", "size": "219.217767",
                          "timestamp": "1750428146322"}).decode()
    outcome = channel.apply_frame(frame)
    book = channel.books[YES]
    assert YES in outcome.changed and book.last_trade_ticks == 4560
    assert book.best_bid == (5000, 15_000_000)
    assert channel.apply_frame(frame).changed == {}  # the same print again changes nothing


@pytest.mark.parametrize("text", ["PONG", "NO NEW ASSETS", "INVALID OPERATION", " PONG\n"])
def test_text_notices_are_not_parsed(channel: mc.MarketChannel, text: str) -> None:
    outcome = channel.apply_frame(text)
    assert outcome.notice == text.strip() and not outcome.rejected


@pytest.mark.parametrize(("frame", "reason"), [
    ('{"event_type": "book", "asset_id": ', mc.MALFORMED),
    ("garbage", mc.UNKNOWN_TEXT),
    ("", mc.UNKNOWN_TEXT),
    ("[1]", mc.NOT_AN_OBJECT),
    ('{"asset_id": "x"}', mc.NO_EVENT_TYPE),
    ('{"event_type": 7}', mc.NO_EVENT_TYPE),
    ('{"event_type": "surprise"}', mc.UNKNOWN_EVENT),
    ('{"event_type": "price_change", "price_changes": "nope"}', mc.BAD_FIELD),
    ('{"event_type": "price_change", "price_changes": [{"asset_id": ["x"]}]}', mc.BAD_FIELD),
    ('{"event_type": "book", "asset_id": 5, "bids": [], "asks": []}', mc.BAD_FIELD),
])
def test_bad_frames_are_counted_not_raised(channel: mc.MarketChannel, frame: str, reason: str) -> None:
    dump(channel)
    before = channel.books[YES].to_market_price()
    outcome = channel.apply_frame(frame)
    assert outcome.rejected == [reason]
    assert channel.books[YES].to_market_price() == before


@pytest.mark.parametrize("entry", [
    change(YES, "0.50", "-5", "BUY", "0.5", "0.52"),
    change(YES, "1.50", "5", "BUY", "0.5", "0.52"),
    change(YES, "0.50", "5", "HOLD", "0.5", "0.52"),
    change(YES, "0.50", None, "BUY", "0.5", "0.52"),  # type: ignore[arg-type]
    {"asset_id": YES, "price": "0.5", "side": "BUY"},
])
def test_an_unappliable_entry_means_the_book_lost_an_update(channel: mc.MarketChannel, entry: dict) -> None:
    dump(channel)
    outcome = channel.apply_frame(price_change(entry))
    assert outcome.rejected == [mc.BAD_LEVEL]
    assert outcome.resync == [(YES, mc.BAD_LEVEL)]
    assert channel.books[YES].status is PriceStatus.RESYNCING


def test_a_bad_book_is_rejected_and_resynced(channel: mc.MarketChannel) -> None:
    dump(channel)
    bad = book_event(YES, [("0.5", "abc")], [])
    outcome = channel.apply_frame(orjson.dumps(bad).decode())
    assert outcome.rejected == [mc.BAD_BOOK] and outcome.resync == [(YES, mc.BAD_BOOK)]
    not_lists = orjson.dumps({**bad, "bids": "0.5"}).decode()
    assert channel.apply_frame(not_lists).resync == [(YES, mc.BAD_BOOK)]


def test_sibling_entries_of_unsubscribed_tokens_are_skipped() -> None:
    channel = mc.MarketChannel({YES: PolymarketOrderBook(YES)})
    channel.apply_frame(orjson.dumps([book_event(YES, [("0.5", "1")], [("0.6", "1")])]).decode())
    outcome = channel.apply_frame(price_change(change(NO, "0.5", "9", "SELL", "0.4", "0.5")))
    assert outcome.changed == {} and outcome.rejected == [] and outcome.resync == []
    late_book = channel.apply_frame(orjson.dumps(book_event(NO, [], [])).decode())
    assert late_book.dropped == [mc.UNKNOWN_ASSET] and late_book.rejected == []


def test_every_data_frame_refreshes_last_seen_even_without_a_top_change() -> None:
    seen: dict[str, int] = {}
    channel = mc.MarketChannel({YES: PolymarketOrderBook(YES, CONDITION), NO: PolymarketOrderBook(NO)}, seen)
    dump(channel)
    channel.apply_frame(price_change(change(YES, "0.40", "5", "BUY", "0.5", "0.52")), recv_ns=123)
    assert seen == {CONDITION: 123, NO: 0}
    channel.apply_frame(orjson.dumps(book_event(NO, [("0.4", "1")], [])).decode(), recv_ns=456)
    assert seen == {CONDITION: 123, NO: 456}


def test_bad_timestamp_is_counted_but_the_data_applies(channel: mc.MarketChannel) -> None:
    dump(channel)
    outcome = channel.apply_frame(price_change(change(YES, "0.51", "2", "BUY", "0.51", "0.52"), ts="soon"))
    assert outcome.rejected == [mc.BAD_TIMESTAMP] and channel.books[YES].best_bid == (5100, 2_000_000)


@pytest.mark.parametrize("ts", [-5, "9" * 25, 1.5e12, True])
def test_a_timestamp_the_bus_cannot_carry_is_counted_and_dropped(channel: mc.MarketChannel, ts: object) -> None:
    dump(channel)
    frame = orjson.dumps({"market": CONDITION, "timestamp": ts, "event_type": "price_change", "price_changes": [
        change(YES, "0.51", "2", "BUY", "0.51", "0.52")]}).decode()
    outcome = channel.apply_frame(frame)
    book = channel.books[YES]
    assert outcome.rejected == [mc.BAD_TIMESTAMP] and book.best_bid == (5100, 2_000_000)
    assert book.venue_ts_ms == 1757908892351  # the last good stamp stays


def test_market_resolved_closes_the_books(channel: mc.MarketChannel) -> None:
    dump(channel)
    frame = orjson.dumps({"event_type": "market_resolved", "market": CONDITION, "assets_ids": [YES, NO],
                          "winning_asset_id": YES, "timestamp": "1"}).decode()
    outcome = channel.apply_frame(frame)
    assert set(outcome.changed) == {YES, NO}
    assert channel.books[YES].to_market_price().status is PriceStatus.CLOSED
