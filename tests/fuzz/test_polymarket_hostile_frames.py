"""PolymarketWebSocketClient against frames a broken or hostile venue sends (issue 9, item 10).

Each test is one class of defect the fuzz run found, driven through the client's
own `_handle_message` (the socket plays no part in how a frame is read).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from markets.models import MarketPrice, PriceStatus
from markets.polymarket.ws_client import PolymarketWebSocketClient
from tests.fuzz.harness import attach, outgoing

A, B = "1111", "2222"


def book(token: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> dict[str, Any]:
    return {"event_type": "book", "asset_id": token, "market": "0xm", "timestamp": "1",
            "bids": [{"price": p, "size": s} for p, s in bids], "asks": [{"price": p, "size": s} for p, s in asks]}


def change(token: str, price: str, size: str, side: str, best_bid: str, best_ask: str) -> dict[str, Any]:
    return {"event_type": "price_change", "market": "0xm", "timestamp": "2", "price_changes": [
        {"asset_id": token, "price": price, "size": size, "side": side, "best_bid": best_bid, "best_ask": best_ask}]}


async def live_client(**options: Any) -> tuple[PolymarketWebSocketClient, list[MarketPrice], Any]:
    client = PolymarketWebSocketClient(url="wss://hostile.invalid/ws", ping_interval=None, receive_timeout=None,
                                       **options)
    prices: list[MarketPrice] = []
    client.add_listener(prices.append)
    connection = attach(client)
    await client.subscribe([A, B])
    await outgoing(connection)
    client._handle_message(orjson.dumps([book(A, [("0.40", "10")], [("0.50", "10")]),
                                         book(B, [("0.30", "10")], [("0.60", "10")])]).decode(), 1)
    assert all(client.book(t).status is PriceStatus.LIVE for t in (A, B))  # type: ignore[union-attr]
    return client, prices, connection


def statuses(prices: list[MarketPrice], token: str) -> list[PriceStatus]:
    return [p.status for p in prices if p.market_id == token]


@pytest.mark.parametrize("size", ["1e400", "9" * 40, "1E+999999999", 1e308])
async def test_an_out_of_range_number_does_not_abort_the_rest_of_an_array_frame(size: object) -> None:
    client, prices, connection = await live_client()
    frame = [change(A, "0.40", size, "BUY", "0.40", "0.50"),  # type: ignore[arg-type]
             book(B, [("0.30", "not a size")], [])]
    client._handle_message(orjson.dumps(frame).decode(), 2)  # must not raise
    assert client.stats.rejected["bad_price_change"] == 1 and client.stats.rejected["bad_book"] == 1
    assert statuses(prices, A)[-1] is statuses(prices, B)[-1] is PriceStatus.RESYNCING
    resubscribed = [orjson.loads(f) for f in await outgoing(connection)]
    assert {t for f in resubscribed if f.get("operation") == "subscribe" for t in f["assets_ids"]} == {A, B}
    assert all(p.yes_bid_size is None or p.yes_bid_size < 1e12 for p in prices)


async def test_a_crossed_book_is_withheld_then_resynced() -> None:
    """A `price_change` whose best prices agree with a crossed book passes the
    venue's own cross-check; the crossing itself must keep it from being LIVE."""
    client, prices, connection = await live_client(crossed_grace_updates=2, crossed_grace=60.0)
    client._handle_message(orjson.dumps(change(A, "0.55", "5", "BUY", "0.55", "0.50")).decode(), 3)
    assert statuses(prices, A)[-1] is PriceStatus.STALE
    assert (prices[-1].yes_bid, prices[-1].yes_ask) == (0.40, 0.50)  # the last good top, re-marked
    assert client.stats.dropped["crossed_book"] == 1 and not await outgoing(connection)
    for size in ("6", "7"):
        client._handle_message(orjson.dumps(change(A, "0.55", size, "BUY", "0.55", "0.50")).decode(), 4)
    assert client.stats.rejected["crossed_book"] == 1
    assert statuses(prices, A) == [PriceStatus.LIVE, PriceStatus.STALE, PriceStatus.RESYNCING]
    assert any(orjson.loads(f).get("operation") == "subscribe" for f in await outgoing(connection))
    assert not any(p.is_crossed for p in prices)
    assert statuses(prices, B) == [PriceStatus.LIVE]


async def test_a_crossing_that_resolves_within_the_grace_is_only_counted() -> None:
    client, prices, connection = await live_client()
    client._handle_message(orjson.dumps(change(A, "0.50", "5", "BUY", "0.50", "0.50")).decode(), 3)  # locked
    client._handle_message(orjson.dumps(change(A, "0.50", "0", "SELL", "0.50", "1")).decode(), 4)
    assert statuses(prices, A) == [PriceStatus.LIVE, PriceStatus.STALE, PriceStatus.LIVE]
    assert (prices[-1].yes_bid, prices[-1].yes_ask) == (0.50, None)
    assert client.stats.dropped["crossed_book"] == 1 and "crossed_book" not in client.stats.rejected
    assert not await outgoing(connection)


async def test_a_price_change_with_no_entries_or_another_tokens_entries_is_counted() -> None:
    client, prices, _ = await live_client()
    before = list(prices)
    client._handle_message(orjson.dumps({"event_type": "price_change", "market": "0xm",
                                         "price_changes": []}).decode(), 5)
    client._handle_message(orjson.dumps(change("9999", "0.45", "5", "BUY", "0.45", "0.50")).decode(), 6)
    assert client.stats.rejected["bad_field"] == 1 and client.stats.dropped["unknown_asset"] == 1
    assert prices == before
