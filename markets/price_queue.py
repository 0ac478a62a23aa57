"""A bounded, conflating hand-off between a socket reader and a price consumer.

The reader of a venue socket must never wait for a consumer: if it did, one slow
consumer would stall the socket, the venue's send buffer would overflow (Kalshi
error 25) and every market on that connection would lose its book. So the reader
only ever *puts*, and what it puts is conflated: one pending slot per market, the
latest price wins. A consumer that falls behind therefore skips intermediate
prices of a market but always sees that market's newest state, and memory is
bounded by the number of markets, not by the message rate.

Order: markets are served in the order they first became pending, so a busy market
that keeps updating cannot starve a quiet one (its slot keeps its place in line).
"""

from __future__ import annotations

import asyncio
import collections

from markets.models import MarketPrice


class QueueClosed(Exception):
    """The queue was closed without an error: the producer is gone for good."""


class LatestPriceQueue:
    """Latest-price-per-market queue: `put` never blocks, `get` awaits.

    `max_markets` bounds the number of distinct pending markets; beyond it the
    oldest pending market is dropped and counted in `dropped` (the consumer can
    still read that market's current state from the client's `latest_price`).
    One consumer per queue: a second concurrent `get` is a programming error.
    """

    __slots__ = ("_latest", "_order", "_max_markets", "_waiter", "_closed", "_error",
                 "conflated", "dropped", "delivered")

    def __init__(self, max_markets: int = 100_000) -> None:
        if max_markets < 1:
            raise ValueError(f"max_markets must be >= 1, got {max_markets}")
        self._latest: dict[str, MarketPrice] = {}
        self._order: collections.deque[str] = collections.deque()
        self._max_markets = max_markets
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._error: BaseException | None = None
        self.conflated = 0
        self.dropped = 0
        self.delivered = 0

    def __len__(self) -> int:
        return len(self._latest)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, price: MarketPrice) -> None:
        """Make `price` the pending price of its market; never blocks, never raises on load."""
        if self._closed:
            return
        latest = self._latest
        market_id = price[0]
        if market_id in latest:
            self.conflated += 1
        else:
            if len(latest) >= self._max_markets:
                del latest[self._order.popleft()]
                self.dropped += 1
            self._order.append(market_id)
        latest[market_id] = price
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> MarketPrice:
        """The oldest pending market's latest price; raises asyncio.QueueEmpty if none."""
        if not self._order:
            raise asyncio.QueueEmpty
        self.delivered += 1
        return self._latest.pop(self._order.popleft())

    async def get(self) -> MarketPrice:
        """Wait for a pending price. After `close`, pending prices are still served;
        then QueueClosed (clean close) or the close error is raised."""
        while not self._order:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise QueueClosed
            if self._waiter is not None:
                raise RuntimeError("LatestPriceQueue supports one consumer at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.get_nowait()

    def close(self, error: BaseException | None = None) -> None:
        """No more puts; a waiting consumer wakes up. `error` is raised to the consumer
        once the pending prices are drained, so a failure never looks like a clean end."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
