"""The part of a hybrid client that does not depend on the venue: prices from the WebSocket.

A hybrid client is a venue's REST client that also owns the venue's WebSocket
client as ``ws``. Both venues answer prices the same way, so the rule lives here
once: `stream_prices` is the WebSocket stream (pushed, only on top-of-book or status
changes), and `get_market_price` answers from the WebSocket when that market is
streamed and LIVE -- no request, no staleness -- and from REST otherwise (not
streamed, or stale / resyncing, when a fresh REST snapshot is the better answer).
`poll_prices` (the REST baseline) stays available for comparison.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from markets.base import BaseMarketClient
from markets.models import MarketPrice, PriceStatus

if TYPE_CHECKING:
    from markets.base_ws import BaseWebSocketClient


class WebSocketPrices(BaseMarketClient):
    """Put first among a hybrid client's bases, before the venue's REST client."""

    ws: BaseWebSocketClient

    def stream_prices(self, market_ids: Iterable[str], interval: float | None = None) -> AsyncIterator[MarketPrice]:
        """Live prices from the WebSocket; `interval` is ignored (the venue pushes)."""
        return self.ws.stream_prices(list(market_ids))

    async def get_market_price(self, market_id: str) -> MarketPrice:
        """The streamed price when both the book and its last published price are LIVE, else REST."""
        book = self.ws.book(market_id)
        price = self.ws.latest_price(market_id)
        if (book is not None and book.status is PriceStatus.LIVE
                and price is not None and price.status is PriceStatus.LIVE):
            return price
        # The venue's REST client, next in a hybrid's MRO, implements it (mypy sees only the abstract base).
        return await super().get_market_price(market_id)  # type: ignore[safe-super]

    async def close(self) -> None:
        """Close the WebSocket client, then the REST session(s), even if the first close fails."""
        try:
            await self.ws.close()
        finally:
            await super().close()
