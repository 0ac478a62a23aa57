"""KalshiWebSocketClient against frames a broken or hostile venue sends (issue 9, item 10).

Each test is one class of defect the fuzz run (tests/fuzz) found, shown here on a
real socket against the hand-scripted venue, so that the failure reads plainly.
"""

from __future__ import annotations

from typing import Any

import pytest

from markets.models import PriceStatus
from tests.clients.conftest import WskMakeClient, WskScriptedVenue, wsk_eventually
from tests.clients.test_kalshi_ws_frames import A, B, start, statuses


async def test_an_unhashable_or_non_string_type_is_an_unknown_type(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client, server, _ = await start(wsk_venue, wsk_make_client, [A])
    for bad_type in (["orderbook_delta"], {"t": 1}, 1, True, None):
        await server.conn.send({"type": bad_type, "sid": 1, "seq": 9, "msg": {}})
    await wsk_eventually(lambda: client.stats.rejected["unknown_type"] == 5)
    assert "handler_error" not in client.stats.rejected and client.stats.connects == 1


@pytest.mark.parametrize("reply", [
    {"type": "unsubscribed", "sid": True},
    {"type": "unsubscribed", "sid": 1.0, "id": 1.0},
    {"type": "error", "id": 1.0, "sid": 1.0, "msg": {"code": 17.0, "msg": "Internal error"}},
])
async def test_a_reply_naming_true_or_1_0_never_acts_on_sid_1(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient, reply: dict[str, Any]) -> None:
    """JSON true and 1.0 equal 1 in Python; a reply that does not name a real integer
    sid must leave subscription 1 (market A) alone."""
    client, server, prices = await start(wsk_venue, wsk_make_client, [A, B])
    await server.conn.send(reply)
    await server.delta(1, 2, A, "0.43", "3.00")
    await wsk_eventually(lambda: client.book(A).bids.get(4300) == 300)  # type: ignore[union-attr]
    assert statuses(prices, A) == [PriceStatus.LIVE, PriceStatus.LIVE]
    assert client.stats.gaps == 0 and not client.stats.dropped.get("unknown_sid")


@pytest.mark.parametrize("sid", [1, True, 1.0, 0, "3"])
async def test_a_subscribed_ack_with_a_taken_or_false_sid_is_refused(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient, sid: object) -> None:
    """Taking it would hand market A's subscription (sid 1) to the new market C."""
    client, server, prices = await start(wsk_venue, wsk_make_client, [A])
    await client.subscribe([B])
    command = await server.command("subscribe")
    await server.conn.send({"id": command["id"], "type": "subscribed",
                            "msg": {"channel": "orderbook_delta", "sid": sid}})
    await wsk_eventually(lambda: client.stats.rejected["bad_field"] == 1)
    await server.delta(1, 2, A, "0.43", "3.00")
    await wsk_eventually(lambda: client.book(A).bids.get(4300) == 300)  # type: ignore[union-attr]
    assert statuses(prices, A) == [PriceStatus.LIVE, PriceStatus.LIVE]


async def test_a_trade_print_for_a_market_not_on_its_subscription_changes_nothing(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    client, server, _ = await start(wsk_venue, wsk_make_client, [A, B], channels=("orderbook_delta", "ticker"))
    # start() acked only the book channel; sids 1 and 2 carry A's and B's books.
    await server.conn.send({"type": "ticker", "sid": 1, "msg": {"market_ticker": B, "price_dollars": "0.9900"}})
    await server.conn.send({"type": "ticker", "sid": 77, "msg": {"market_ticker": B, "price_dollars": "0.9800"}})
    await server.conn.send({"type": "trade", "sid": 2, "seq": 2, "msg": {"market_ticker": A,
                                                                          "yes_price_dollars": "0.9700"}})
    await wsk_eventually(lambda: client.stats.dropped["unknown_sid"] == 3)
    assert client.book(A).last_trade_ticks is None and client.book(B).last_trade_ticks is None  # type: ignore[union-attr]


@pytest.mark.parametrize("side", ["", 0, False, {}, None])
async def test_a_malformed_snapshot_side_is_refused_not_read_as_empty(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient, side: object) -> None:
    client, server, prices = await start(wsk_venue, wsk_make_client, [A])
    await server.conn.send({"type": "orderbook_snapshot", "sid": 1, "seq": 2, "msg": {
        "market_ticker": A, "yes_dollars_fp": [["0.40", "10.00"]], "no_dollars_fp": side}})
    request = await server.command()
    assert request["cmd"] in ("update_subscription", "unsubscribe", "subscribe")
    assert client.stats.rejected["bad_snapshot"] == 1
    assert statuses(prices, A) == [PriceStatus.LIVE, PriceStatus.RESYNCING]


@pytest.mark.parametrize("frame", [
    {"type": "orderbook_delta", "sid": 1, "seq": 2},  # no msg at all
    {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": "0.43"},
    {"type": "orderbook_snapshot", "sid": 1, "seq": 2, "msg": {"yes_dollars_fp": []}},
    {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": {"market_ticker": "KXNOTONTHISSID-1",
                                                            "price_dollars": "0.43", "delta_fp": "1", "side": "yes"}},
])
async def test_a_frame_refused_after_it_took_a_seq_resyncs_its_sid(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient, frame: dict[str, Any]) -> None:
    """The frame consumed the sid's next seq, so whatever it carried is lost: the book
    must not go on LIVE (the next frame's seq would look continuous)."""
    client, server, prices = await start(wsk_venue, wsk_make_client, [A, B])
    await server.conn.send(frame)
    request = await server.command("update_subscription")
    assert request["params"] == {"sid": 1, "action": "get_snapshot", "market_tickers": [A]}
    assert statuses(prices, A) == [PriceStatus.LIVE, PriceStatus.RESYNCING]
    assert client.book(B).status is PriceStatus.LIVE  # type: ignore[union-attr]
    await server.delta(1, 3, A, "0.45", "1.00")  # continuous seq, yet A waits for its snapshot
    await wsk_eventually(lambda: client.stats.dropped["awaiting_snapshot"] == 1)
    assert client.book(A).status is PriceStatus.RESYNCING  # type: ignore[union-attr]


@pytest.mark.parametrize(("price", "delta"), [("0.43", "1e400"), ("0.43", "9" * 40), ("1E+400", "1.00"),
                                              ("0.43", 1e308), ("0.43", "1" * 5000), ("0.43", "NaN")],
                         ids=["exponent", "digits", "price-exponent", "float", "long", "nan"])
async def test_numbers_beyond_range_resync_the_book_instead_of_raising(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient, price: object, delta: object) -> None:
    client, server, prices = await start(wsk_venue, wsk_make_client, [A])
    await server.delta(1, 2, A, price, delta)
    await server.command("update_subscription")
    assert client.stats.rejected["bad_field"] == 1 and "handler_error" not in client.stats.rejected
    assert statuses(prices, A) == [PriceStatus.LIVE, PriceStatus.RESYNCING]
    assert all(p.yes_bid_size is None or p.yes_bid_size < 1e12 for p in prices)


async def test_a_bogus_jump_ahead_in_seq_does_not_freeze_the_sid(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    """A seq far ahead is a gap; the real numbering that follows is not a run of
    duplicates to drop forever but numbering gone back: resync again, then carry on."""
    client, server, prices = await start(wsk_venue, wsk_make_client, [A])
    await server.delta(1, 10**12, A, "0.43", "1.00")
    await server.command("update_subscription")
    await server.delta(1, 2, A, "0.44", "1.00")
    await wsk_eventually(lambda: client.stats.gaps == 2)
    await server.snapshot(1, 3, A, yes=[["0.30", "1.00"]])
    await wsk_eventually(lambda: client.book(A).status is PriceStatus.LIVE)  # type: ignore[union-attr]
    await server.delta(1, 4, A, "0.31", "2.00")
    await wsk_eventually(lambda: client.book(A).bids == {3000: 100, 3100: 200})  # type: ignore[union-attr]
    assert client.stats.dropped.get("duplicate", 0) == 0


async def test_a_crossed_book_is_withheld_then_resynced(
        wsk_venue: WskScriptedVenue, wsk_make_client: WskMakeClient) -> None:
    """Bid at or above ask: no such price is published; the consumer sees its last
    good top marked STALE, and a crossing that outlasts the grace is a wrong book."""
    client, server, prices = await start(wsk_venue, wsk_make_client, [A], crossed_grace_updates=2,
                                         crossed_grace=60.0)
    await server.delta(1, 2, A, "0.41", "1.00", side="no")  # a YES ask of 0.41 under the 0.42 bid
    await wsk_eventually(lambda: statuses(prices, A)[-1] is PriceStatus.STALE)
    stale = prices[-1]
    assert (stale.yes_bid, stale.yes_ask) == (0.42, 0.55)  # the last good top, not the crossed one
    for seq in (3, 4):  # further updates at the crossed top
        await server.delta(1, seq, A, "0.41", "1.00", side="no")
    request = await server.command("update_subscription")
    assert request["params"]["action"] == "get_snapshot"
    assert client.stats.rejected["crossed_book"] == 1
    assert statuses(prices, A) == [PriceStatus.LIVE, PriceStatus.STALE, PriceStatus.RESYNCING]
    await server.snapshot(1, 5, A, yes=[["0.40", "1.00"]], no=[["0.55", "1.00"]])
    await wsk_eventually(lambda: statuses(prices, A)[-1] is PriceStatus.LIVE)
    assert not any(p.is_crossed for p in prices)
