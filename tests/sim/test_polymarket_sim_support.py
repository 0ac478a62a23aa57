"""Test-side tools for the Polymarket simulator tests (this module holds no tests).

The client here is deliberately plain — aiohttp, `json` and `Decimal` — and
follows the protocol notes (/work/shared/protocols/polymarket.md), not the
project's own Polymarket client, so the simulator is checked against the
documented wire rather than against our implementation of it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from markets.sim.polymarket import PolymarketSimulator
from markets.sim.universe import build_universe

TICKS = Decimal(10_000)
TEXT_REPLIES = ("PONG", "INVALID OPERATION", "NO NEW ASSETS")

Book = tuple[dict[int, int], dict[int, int]]


def ticks(price: str) -> int:
    """A price string (".48", "0.5", "0.031") as integer ticks of $0.0001."""
    value = Decimal(price) * TICKS
    assert value == value.to_integral_value(), f"price {price} finer than $0.0001"
    return int(value)


def hundredths(size: str) -> int:
    value = Decimal(size) * 100
    assert value == value.to_integral_value(), f"size {size} finer than 0.01"
    return int(value)


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
        text = await self.recv_text(timeout)
        return text if text in TEXT_REPLIES else json.loads(text)

    async def barrier(self, timeout: float = 3.0) -> list[Any]:
        """Everything sent before a PING's PONG (replies share the data queue, in order)."""
        await self.ws.send_str("PING")
        received: list[Any] = []
        async with asyncio.timeout(timeout):
            while (item := await self.recv(timeout)) != "PONG":
                received.append(item)
        return received

    async def raw_barrier(self, timeout: float = 3.0) -> list[str]:
        """Like `barrier`, but the raw text of each frame (for corrupted frames)."""
        await self.ws.send_str("PING")
        received: list[str] = []
        async with asyncio.timeout(timeout):
            while (text := await self.recv_text(timeout)) != "PONG":
                received.append(text)
        return received


StartPoly = Callable[..., Awaitable[PolymarketSimulator]]
ConnectPoly = Callable[..., Awaitable[PolyClient]]


@pytest.fixture
async def start_poly() -> AsyncIterator[StartPoly]:
    """Factory: `await start_poly(n_markets=3, **options)`; rate 0 unless given.

    With rate 0 nothing moves on its own: tests call `sim.step_market(m)`.
    """
    started: list[PolymarketSimulator] = []

    async def start(n_markets: int = 3, seed: int = 11, **options: Any) -> PolymarketSimulator:
        options.setdefault("rate", 0.0)
        sim = PolymarketSimulator(build_universe(n_markets, seed=seed), seed=seed, **options)
        await sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.stop()


@pytest.fixture
async def poly_ws(http: aiohttp.ClientSession) -> AsyncIterator[ConnectPoly]:
    """Factory: `await poly_ws(sim)` -> a connected `PolyClient`."""
    opened: list[aiohttp.ClientWebSocketResponse] = []

    async def connect(sim: PolymarketSimulator) -> PolyClient:
        ws = await http.ws_connect(sim.ws_url)
        opened.append(ws)
        return PolyClient(ws)

    yield connect
    for ws in opened:
        await ws.close()
