"""Test-side tools for the Polymarket simulator tests (no tests here; the fixtures that
start a simulator and connect to it are `start_poly` and `poly_ws` in the conftests).

The client here is deliberately plain — aiohttp, `json` and `Decimal` — and
follows the protocol notes (/work/shared/protocols/polymarket.md), not the
project's own Polymarket client, so the simulator is checked against the
documented wire rather than against our implementation of it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.sim.units import TICKS, hundredths, ticks

TEXT_REPLIES = ("PONG", "INVALID OPERATION", "NO NEW ASSETS")

Book = tuple[dict[int, int], dict[int, int]]


def parse_levels(levels: list[dict[str, str]], *, bids: bool) -> dict[int, int]:
    """Levels of a `book`, checking the venue's worst->best order on the way."""
    prices = [ticks(level["price"]) for level in levels]
    assert prices == sorted(prices, reverse=not bids), f"levels not worst->best: {prices}"
    return {ticks(level["price"]): hundredths(level["size"]) for level in levels}


def top_of(book: Book) -> tuple[int, int]:
    """(best bid, best ask) with the venue's empty-side values 0 and 1 dollar."""
    bids, asks = book
    return (max(bids) if bids else 0, min(asks) if asks else int(TICKS))


class ClientBooks:
    """The test's own per-token books, rebuilt from market-channel events.

    Follows the documented rules: `book` replaces, `price_change` sets absolute
    sizes (0 removes) and is skipped for a token without a book, a tick size
    change drops the book until the next `book`. Every entry's best bid/ask is
    compared with the local book right after applying it; mismatches are kept.
    """

    def __init__(self) -> None:
        self.books: dict[str, Book] = {}
        self.mismatches: list[dict[str, str]] = []
        self.trades: list[dict[str, str]] = []
        self.tick_changes: list[dict[str, str]] = []
        self.skipped = 0

    def apply(self, event: Any) -> None:
        if isinstance(event, list):
            for item in event:
                self.apply(item)
            return
        kind = event["event_type"]
        if kind == "book":
            self.books[event["asset_id"]] = (parse_levels(event["bids"], bids=True),
                                             parse_levels(event["asks"], bids=False))
        elif kind == "price_change":
            for entry in event["price_changes"]:
                self._apply_entry(entry)
        elif kind == "tick_size_change":
            self.tick_changes.append(event)
            self.books.pop(event["asset_id"], None)
        elif kind == "last_trade_price":
            self.trades.append(event)

    def _apply_entry(self, entry: dict[str, str]) -> None:
        book = self.books.get(entry["asset_id"])
        if book is None:
            self.skipped += 1
            return
        side = book[0] if entry["side"] == "BUY" else book[1]
        price, size = ticks(entry["price"]), hundredths(entry["size"])
        assert size >= 0, f"negative size in {entry}"
        if size:
            side[price] = size
        else:
            side.pop(price, None)
        if top_of(book) != (ticks(entry["best_bid"]), ticks(entry["best_ask"])):
            self.mismatches.append(entry)


class PolyClient:
    """One `/ws/market` connection: JSON out, text replies and JSON events in."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def initial(self, assets: list[str], **options: Any) -> None:
        await self.send({"assets_ids": assets, "type": "market", **options})

    async def recv_text(self, timeout: float = 2.0) -> str:
        message = await asyncio.wait_for(self.ws.receive(), timeout)
        assert message.type == aiohttp.WSMsgType.TEXT, f"expected text, got {message.type}"
        return str(message.data)

    async def recv(self, timeout: float = 2.0) -> Any:
        """A venue text reply as a str, anything else parsed from JSON."""
        return _parsed(await self.recv_text(timeout))

    async def barrier(self, timeout: float = 3.0) -> list[Any]:
        """Everything sent before a PING's PONG (replies share the data queue, in order)."""
        return [_parsed(text) for text in await self.raw_barrier(timeout)]

    async def raw_barrier(self, timeout: float = 3.0) -> list[str]:
        """Like `barrier`, but the raw text of each frame (for corrupted frames)."""
        await self.ws.send_str("PING")
        received: list[str] = []
        async with asyncio.timeout(timeout):
            while (text := await self.recv_text(timeout)) != "PONG":
                received.append(text)
        return received


def _parsed(text: str) -> Any:
    """A venue text reply as a str, anything else parsed from JSON."""
    return text if text in TEXT_REPLIES else json.loads(text)

