"""Polymarket REST: Gamma discovery, CLOB books/prices/history, orders, and the hybrid client.

Polymarket splits its public REST over two hosts with separate rate limits
(protocols/polymarket.md §7, §9.1): Gamma (`gamma-api`) describes markets and
events, the CLOB (`clob`) serves books, prices and history. Each host is its own
`BaseMarketClient` here, so each has its own pooled session and its own token
bucket: a burst of discovery calls never starves book fetches, and vice versa.
`PolymarketClient` is the CLOB client and owns a `GammaClient` as `.gamma`.

Markets are named two ways: a condition id (``0x`` + 64 hex, the market) and
token ids (one per outcome). Prices are per token. Whenever a caller names a
market by condition id, the client resolves it to its tokens (Gamma first, in
batches of 100, then CLOB `/markets/{id}` for anything Gamma's implicit
``closed=false`` filter hid) and quotes the YES token (`PolymarketMarketInfo.yes_token`).
Resolutions are cached: a market's tokens never change.

Placing orders needs EIP-712 signing from the optional `polymarket-orders` extra
(markets/polymarket/orders.py); without it `place_order` raises a clear error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from markets.base import BaseMarketClient, JSONValue, ParamValue, VenueError, path_segment
from markets.book import BookError, PolymarketOrderBook
from markets.hybrid import WebSocketPrices
from markets.models import (
    TICKS_PER_DOLLAR,
    MarketPrice,
    Platform,
    PriceStatus,
    parse_price_ticks,
    ticks_to_dollars,
    venue_timestamp_ms,
)
from markets.polymarket.catalog import (
    CatalogDecodeError,
    GammaEvent,
    PolymarketMarketInfo,
    decode_clob_market,
    decode_gamma_event,
    decode_gamma_market,
    is_condition_id,
)
from markets.polymarket.orders import (
    OrderPlacer,
    OrderRequest,
    PolymarketOrderCredentials,
    PolymarketOrdersUnavailable,
    load_sdk,
)

log = logging.getLogger(__name__)

POLYMARKET_CLOB_URL = "https://clob.polymarket.com"
POLYMARKET_GAMMA_URL = "https://gamma-api.polymarket.com"

CURSOR_START = "MA=="
CURSOR_END = "LTE="
"""The CLOB's listing cursors: the first page, and the marker that there is no next page."""

BOOKS_BATCH = 500
GAMMA_BATCH = 100
"""Gamma caps `limit` at 100 and takes at most 100 ids per filter (§7.2)."""

HISTORY_INTERVALS = frozenset({"1h", "6h", "1d", "1w", "1m", "max"})


def _ms(value: Any) -> int | None:
    """The book's millisecond timestamp, or None when it is not one (an ISO date, a negative
    or oversized number): a book summary stays usable without its stamp, but a stamp the bus
    codec would refuse must never reach a `MarketPrice`."""
    try:
        return venue_timestamp_ms(value)
    except ValueError:
        return None


def _quote_ticks(value: Any, empty: int) -> int | None:
    """A Gamma quote field in ticks; like the WebSocket, it writes an empty side as 0 (bid) / 1 (ask)."""
    if value is None or value == "":
        return None
    ticks = parse_price_ticks(value)
    return None if ticks == empty else ticks


def _require_id(value: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _PolymarketRest(BaseMarketClient):
    """Market-record decoding shared by both hosts: a wrong shape is a VenueError naming the path."""

    undecodable: int = 0
    """Listed markets skipped because their outcome/token fields could not be decoded."""

    def _decoded(self, decoder: Any, raw: Any, method: str, path: str) -> Any:
        try:
            return decoder(raw)
        except CatalogDecodeError as exc:
            raise self._unexpected(method, path, None, str(exc)) from None

    def _listing(self, decoder: Any, items: list[Any], path: str) -> list[Any]:
        """Decode a listing page, skipping (with a warning and a count) entries that cannot be decoded.

        Listings span years of markets, some with legacy or empty token fields; one
        of them must not hide every other market. A single fetched market still raises.
        """
        decoded = []
        for raw in items:
            try:
                decoded.append(decoder(raw))
            except CatalogDecodeError as exc:
                self._skipped(path, str(exc))
        return decoded

    def _skipped(self, path: str, problem: str) -> None:
        self.undecodable += 1
        log.warning("%s GET %s: skipping a listed market: %s", self.venue, path, problem)


class GammaClient(_PolymarketRest):
    """Gamma: market and event discovery, with outcome/token pairing decoded."""

    venue = "polymarket-gamma"

    def __init__(self, base_url: str = POLYMARKET_GAMMA_URL, *, rate: float = 25.0, **options: Any) -> None:
        super().__init__(base_url, rate=rate, **options)

    async def get_markets(
        self, *, limit: int = GAMMA_BATCH, offset: int = 0, active: bool | None = None,
        closed: bool | None = None, condition_ids: Sequence[str] | None = None,
        clob_token_ids: Sequence[str] | None = None, slug: Sequence[str] | None = None,
        tag_id: int | None = None, **extra: ParamValue,
    ) -> list[PolymarketMarketInfo]:
        """One `GET /markets` page (offset pagination; Gamma caps `limit` at 100)."""
        params: dict[str, ParamValue] = {
            "limit": limit, "offset": offset, "active": active, "closed": closed,
            "condition_ids": list(condition_ids) if condition_ids else None,
            "clob_token_ids": list(clob_token_ids) if clob_token_ids else None,
            "slug": list(slug) if slug else None, "tag_id": tag_id, **extra}
        markets, _ = await self._markets_page(params)
        return markets

    async def _markets_page(self, params: Mapping[str, ParamValue]) -> tuple[list[PolymarketMarketInfo], int]:
        """The decoded markets of one page and how many the venue listed.

        The two differ when entries are skipped as undecodable, and only the
        listed count tells a full page from the last one.
        """
        body = self._list(await self._request("GET", "/markets", params=params), "GET", "/markets")
        return self._listing(decode_gamma_market, body, "/markets"), len(body)

    async def get_events(
        self, *, limit: int = GAMMA_BATCH, offset: int = 0, active: bool | None = None,
        closed: bool | None = None, tag_id: int | None = None, slug: Sequence[str] | None = None,
        **extra: ParamValue,
    ) -> list[GammaEvent]:
        """One `GET /events` page, each event with its markets decoded (the docs' preferred listing)."""
        params: dict[str, ParamValue] = {
            "limit": limit, "offset": offset, "active": active, "closed": closed, "tag_id": tag_id,
            "slug": list(slug) if slug else None, **extra}
        body = self._list(await self._request("GET", "/events", params=params), "GET", "/events")
        events = self._listing(decode_gamma_event, body, "/events")
        for event in events:
            for problem in event.undecodable:
                self._skipped("/events", problem)
        return events

    async def iter_markets(self, *, page_size: int = GAMMA_BATCH, **filters: ParamValue
                           ) -> AsyncIterator[PolymarketMarketInfo]:
        """Every market matching `filters` (query parameters), page by page until a short page.

        `page_size` may not exceed Gamma's silent cap of 100: a larger one would
        make the first (capped) page look like the last.
        """
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= GAMMA_BATCH:
            raise ValueError(f"page_size must be an integer in [1, {GAMMA_BATCH}], got {page_size!r}")
        offset = 0
        previous: list[str] = []
        while True:
            markets, listed = await self._markets_page({**filters, "limit": page_size, "offset": offset})
            ids = [market.condition_id for market in markets]
            if ids and ids == previous:  # an endpoint that ignores `offset` would be walked forever
                raise self._unexpected("GET", "/markets", None, f"offset {offset} returned the previous page again")
            for market in markets:
                yield market
            if listed < page_size:
                return
            offset += listed
            previous = ids

    async def get_market_price(self, market_id: str) -> MarketPrice:
        """Gamma's cached quote (`bestBid`/`bestAsk`/`lastTradePrice` of outcome 0).

        Coarser than the CLOB book (no sizes, refreshed by Gamma on its own
        schedule); `PolymarketClient.get_market_price` reads the real book. The
        quote is outcome 0's, so any other token (a NO token, or a "Yes" listed
        second) is quoted as its mirror.
        """
        by_condition = is_condition_id(market_id)
        key = "condition_ids" if by_condition else "clob_token_ids"
        body = self._list(await self._request("GET", "/markets", params={key: [market_id]}), "GET", "/markets")
        if not body:
            raise VenueError(self.venue, "GET", self._base_path + "/markets", 200, body,
                             reason=f"no market {market_id}")
        raw = self._object(body[0], "GET", "/markets")
        info = self._decoded(decode_gamma_market, raw, "GET", "/markets")
        try:
            bid, ask, last = (_quote_ticks(raw.get(name), empty)
                              for name, empty in (("bestBid", 0), ("bestAsk", TICKS_PER_DOLLAR),
                                                  ("lastTradePrice", 0)))
        except ValueError as exc:
            raise self._unexpected("GET", "/markets", raw, str(exc)) from None
        quoted = info.yes_token.token_id if by_condition else market_id
        if info.tokens and info.tokens[0].token_id != quoted:
            bid, ask, last = (None if ask is None else TICKS_PER_DOLLAR - ask,
                              None if bid is None else TICKS_PER_DOLLAR - bid,
                              None if last is None else TICKS_PER_DOLLAR - last)
        status = PriceStatus.CLOSED if info.closed else PriceStatus.LIVE
        return MarketPrice(market_id, None if bid is None else ticks_to_dollars(bid),
                           None if ask is None else ticks_to_dollars(ask), None, None, Platform.POLYMARKET,
                           status, None if last is None else ticks_to_dollars(last), None, time.time_ns())


class PolymarketClient(_PolymarketRest):
    """The CLOB REST API (books, prices, history, listings, orders) plus `.gamma`."""

    venue = "polymarket"

    def __init__(
        self,
        *,
        clob_url: str = POLYMARKET_CLOB_URL,
        gamma_url: str = POLYMARKET_GAMMA_URL,
        rate: float = 50.0,
        gamma_rate: float = 25.0,
        order_credentials: PolymarketOrderCredentials | None = None,
        **options: Any,
    ) -> None:
        super().__init__(clob_url, rate=rate, **options)
        self.gamma = GammaClient(gamma_url, rate=gamma_rate, **options)
        self.order_credentials = order_credentials
        self._markets: dict[str, PolymarketMarketInfo] = {}
        self._placer: OrderPlacer | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(clob={self.base_url!r}, gamma={self.gamma.base_url!r})"

    async def close(self) -> None:
        try:
            await self.gamma.close()
        finally:
            await super().close()

    # -- books -----------------------------------------------------------------------

    def _checked_book(self, body: JSONValue, method: str, path: str) -> dict[str, Any]:
        book = self._object(body, method, path)
        if not isinstance(book.get("bids"), list) or not isinstance(book.get("asks"), list):
            raise self._unexpected(method, path, body, "a book needs 'bids' and 'asks' lists")
        return book

    async def get_book(self, token_id: str) -> dict[str, Any]:
        """`GET /book`: the raw summary (levels worst to best, ms timestamp), shape-checked."""
        body = await self._request("GET", "/book", params={"token_id": _require_id(token_id, "token_id")})
        return self._checked_book(body, "GET", "/book")

    async def get_books(self, token_ids: Iterable[str]) -> list[dict[str, Any]]:
        """`POST /books` in batches of 500 (a read, so safe to retry)."""
        ids = list(dict.fromkeys(token_ids))
        books: list[dict[str, Any]] = []
        for chunk in _chunks(ids, BOOKS_BATCH):
            body = await self._request("POST", "/books", json=[{"token_id": t} for t in chunk], idempotent=True)
            books.extend(self._checked_book(raw, "POST", "/books") for raw in self._list(body, "POST", "/books"))
        return books

    async def get_order_book(self, token_id: str, market_id: str | None = None) -> PolymarketOrderBook:
        """The token's book loaded into a `PolymarketOrderBook` (published as `market_id` if given)."""
        raw = await self.get_book(token_id)
        book = PolymarketOrderBook(token_id, market_id)
        try:
            load_book_summary(book, raw)
        except (BookError, TypeError) as exc:
            raise self._unexpected("GET", "/book", raw, f"unusable order book: {exc}") from None
        return book

    # -- prices and history ------------------------------------------------------------

    async def _price_field(self, path: str, params: Mapping[str, ParamValue], key: str) -> float:
        body = self._object(await self._request("GET", path, params=params), "GET", path)
        value = self._field(body, key, "GET", path)
        try:
            return ticks_to_dollars(parse_price_ticks(value))
        except (TypeError, ValueError) as exc:
            raise self._unexpected("GET", path, body, f"bad {key!r}: {exc}") from None

    async def get_price(self, token_id: str, side: str) -> float:
        """`GET /price`: side BUY is the best bid (the best resting BUY order), SELL the best ask.

        As documented (docs.polymarket.com get-market-price); note it is not "what a
        buyer would pay", which is the best ask (`side="SELL"`).
        """
        if side not in ("BUY", "SELL"):
            raise ValueError(f"side must be 'BUY' or 'SELL', got {side!r}")
        return await self._price_field("/price", {"token_id": token_id, "side": side}, "price")

    async def get_midpoint(self, token_id: str) -> float:
        return await self._price_field("/midpoint", {"token_id": token_id}, "mid")

    async def get_prices_history(
        self, token_id: str, *, interval: str | None = None, fidelity: int | None = None,
        start_ts: int | None = None, end_ts: int | None = None,
    ) -> list[tuple[int, float]]:
        """`GET /prices-history` as (unix seconds, price) points; `interval` excludes a start/end range."""
        if interval is not None and (start_ts is not None or end_ts is not None):
            raise ValueError("interval and start_ts/end_ts are mutually exclusive")
        if interval is not None and interval not in HISTORY_INTERVALS:
            raise ValueError(f"interval must be one of {sorted(HISTORY_INTERVALS)}, got {interval!r}")
        params = {"market": _require_id(token_id, "token_id"), "interval": interval, "fidelity": fidelity,
                  "startTs": start_ts, "endTs": end_ts}
        body = self._object(await self._request("GET", "/prices-history", params=params), "GET", "/prices-history")
        history = body.get("history")
        if not isinstance(history, list):
            raise self._unexpected("GET", "/prices-history", body, "no 'history' list")
        try:
            return [(int(point["t"]), float(point["p"])) for point in history]
        except (KeyError, TypeError, ValueError) as exc:
            raise self._unexpected("GET", "/prices-history", body, f"bad history point: {exc}") from None

    # -- listings ------------------------------------------------------------------------

    async def get_markets_page(self, cursor: str = CURSOR_START) -> tuple[list[PolymarketMarketInfo], str]:
        """One page of CLOB `GET /markets` and the next cursor (``LTE=`` after the last page)."""
        body = self._object(await self._request("GET", "/markets", params={"next_cursor": cursor}),
                            "GET", "/markets")
        data, next_cursor = body.get("data"), body.get("next_cursor")
        if not isinstance(data, list) or not isinstance(next_cursor, str):
            raise self._unexpected("GET", "/markets", body, "a page needs 'data' and 'next_cursor'")
        return self._listing(decode_clob_market, data, "/markets"), next_cursor

    async def iter_markets(self, cursor: str = CURSOR_START) -> AsyncIterator[PolymarketMarketInfo]:
        """Every CLOB market, following `next_cursor` until ``LTE=``; a repeated cursor is an error."""
        seen = {cursor}
        while cursor != CURSOR_END:
            page, cursor = await self.get_markets_page(cursor)
            for market in page:
                yield market
            if cursor != CURSOR_END and cursor in seen:
                raise self._unexpected("GET", "/markets", None, f"pagination cursor {cursor!r} repeated")
            seen.add(cursor)

    async def get_clob_market(self, condition_id: str) -> PolymarketMarketInfo:
        path = f"/markets/{path_segment(condition_id, 'condition_id')}"
        body = self._object(await self._request("GET", path), "GET", path)
        return self._decoded(decode_clob_market, body, "GET", path)

    # -- id resolution ---------------------------------------------------------------------

    async def resolve_markets(self, condition_ids: Iterable[str]) -> dict[str, PolymarketMarketInfo]:
        """Condition id → market (tokens paired with outcomes), cached; unknown ids raise ValueError."""
        requested = list(dict.fromkeys(condition_ids))
        wanted = [cid for cid in requested if cid not in self._markets]
        for chunk in _chunks(wanted, GAMMA_BATCH):
            for market in await self.gamma.get_markets(condition_ids=chunk, limit=GAMMA_BATCH):
                self._markets[market.condition_id] = market
        missing = [cid for cid in wanted if cid not in self._markets]
        results = await asyncio.gather(*(self.get_clob_market(cid) for cid in missing), return_exceptions=True)
        unknown = []
        for cid, result in zip(missing, results):
            if isinstance(result, PolymarketMarketInfo):
                self._markets[cid] = result
            elif isinstance(result, VenueError) and result.status == 404:
                unknown.append(cid)
            elif isinstance(result, BaseException):
                raise result
        if unknown:
            raise ValueError(f"unknown Polymarket condition id(s): {', '.join(unknown)}")
        return {cid: self._markets[cid] for cid in requested}

    async def _quoted_token(self, market_id: str) -> str:
        """The token whose book quotes `market_id`: the YES token of a condition id, else the token itself."""
        if is_condition_id(market_id):
            return (await self.resolve_markets([market_id]))[market_id].yes_token.token_id
        return market_id

    async def get_market_price(self, market_id: str) -> MarketPrice:
        """The top of the CLOB book; `market_id` may be a condition id or a token id."""
        token_id = await self._quoted_token(market_id)
        book = await self.get_order_book(token_id, market_id)
        return book.to_market_price(time.time_ns())

    # -- orders ------------------------------------------------------------------------------

    async def place_order(
        self, token_id: str, side: str, price: str | float, size: str | float, *,
        order_type: str = "GTC", tick_size: str | None = None, neg_risk: bool | None = None,
        post_only: bool = False,
    ) -> Any:
        """Sign (EIP-712, V2) and post a limit order through the `polymarket-orders` extra.

        Raises PolymarketOrdersUnavailable when the extra is not installed or no
        order credentials were given, PolymarketOrderError for a bad argument;
        returns the venue's response to `POST /order`.
        """
        order = OrderRequest.build(token_id, side, price, size, order_type=order_type, tick_size=tick_size,
                                   neg_risk=neg_risk, post_only=post_only)
        if self._placer is None:
            load_sdk()
            if self.order_credentials is None:
                raise PolymarketOrdersUnavailable(
                    "placing orders needs PolymarketOrderCredentials (order_credentials=...)")
            self._placer = OrderPlacer(self.base_url, self.order_credentials)
        return await self._placer.place(order)


def load_book_summary(book: PolymarketOrderBook, raw: Mapping[str, Any]) -> None:
    """Replace `book` with a REST book summary (the same level shape as a WS `book`)."""
    book.apply_snapshot(raw["bids"], raw["asks"], _ms(raw.get("timestamp")))
    try:
        if (tick := raw.get("tick_size")) not in (None, ""):
            book.tick_size = parse_price_ticks(tick)
        if (last := raw.get("last_trade_price")) not in (None, ""):
            book.set_last_trade(last)
    except (TypeError, ValueError) as exc:
        raise BookError(f"{book.token_id}: bad book summary field: {exc}") from None


class HybridPolymarketClient(WebSocketPrices, PolymarketClient):
    """REST for discovery, history and orders; the market channel for prices (rules in markets/hybrid.py)."""

    def __init__(
        self,
        *,
        clob_url: str = POLYMARKET_CLOB_URL,
        gamma_url: str = POLYMARKET_GAMMA_URL,
        ws_url: str | None = None,
        rest_options: Mapping[str, Any] | None = None,
        ws_options: Mapping[str, Any] | None = None,
    ) -> None:
        # Imported here so the REST client does not pull in the WebSocket stack.
        from markets.polymarket.ws_client import POLYMARKET_WS_URL, PolymarketWebSocketClient

        super().__init__(clob_url=clob_url, gamma_url=gamma_url, **(rest_options or {}))
        # The REST side also checks quiet tokens for the socket (ws_options may override).
        self.ws = PolymarketWebSocketClient(url=ws_url or POLYMARKET_WS_URL, resolver=self,
                                            **({"book_source": self} | dict(ws_options or {})))
