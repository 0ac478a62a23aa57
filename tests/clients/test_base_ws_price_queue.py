"""LatestPriceQueue: the conflating hand-off between a socket reader and a consumer."""

from __future__ import annotations

import asyncio

import pytest

from markets.models import MarketPrice, Platform
from markets.price_queue import LatestPriceQueue, QueueClosed


def price(market: str, bid: float) -> MarketPrice:
    return MarketPrice(market, bid, None, 1.0, None, Platform.KALSHI)


async def test_latest_price_per_market_wins_in_first_pending_order() -> None:
    queue = LatestPriceQueue()
    for i in range(1000):
        queue.put(price("a", i / 1000))
        if i == 10:
            queue.put(price("b", 0.5))
    assert len(queue) == 2 and queue.conflated == 999
    first, second = await queue.get(), await queue.get()
    assert (first.market_id, first.yes_bid) == ("a", 0.999)  # pending first, so served first
    assert (second.market_id, second.yes_bid) == ("b", 0.5)
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_memory_is_bounded_by_markets_and_overflow_is_counted() -> None:
    queue = LatestPriceQueue(max_markets=3)
    for market in "abcde":
        queue.put(price(market, 0.1))
    assert len(queue) == 3 and queue.dropped == 2
    assert [queue.get_nowait().market_id for _ in range(3)] == ["c", "d", "e"]


async def test_waiting_consumer_wakes_on_put() -> None:
    queue = LatestPriceQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put(price("a", 0.2))
    assert (await asyncio.wait_for(getter, 1)).yes_bid == 0.2


async def test_close_drains_pending_then_ends_or_raises() -> None:
    clean = LatestPriceQueue()
    clean.put(price("a", 0.3))
    clean.close()
    clean.put(price("b", 0.3))  # ignored after close
    assert (await clean.get()).market_id == "a"
    with pytest.raises(QueueClosed):
        await clean.get()
    failed = LatestPriceQueue()
    waiter = asyncio.create_task(failed.get())
    await asyncio.sleep(0)
    failed.close(ConnectionError("venue gone"))
    with pytest.raises(ConnectionError, match="venue gone"):
        await asyncio.wait_for(waiter, 1)


async def test_one_consumer_at_a_time() -> None:
    queue = LatestPriceQueue()
    first = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one consumer"):
        await queue.get()
    first.cancel()


def test_max_markets_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LatestPriceQueue(max_markets=0)
