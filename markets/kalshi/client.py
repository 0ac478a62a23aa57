"""Kalshi REST client and the hybrid (REST + WebSocket) client.

`KalshiClient` covers what the data layer and a trader need over REST
(protocols/kalshi.md §8): market discovery with cursor pagination, one market,
its order book, events, series, the balance, and placing / cancelling orders on
the current V2 endpoint (the legacy ``/portfolio/orders`` POST answers 410).

Two Kalshi habits shape the code:

* The REST order book (``orderbook_fp``) holds bids only, YES and NO, as
  ``[dollars, count]`` string pairs whose array order has been seen both
  ascending and descending.  It is loaded into a `KalshiOrderBook`, which takes
  the best level by value, so the array order never matters.
* Orders are validated before they are sent.  A wrong price is not something
  to "round to the nearest tick" on somebody's behalf: a price off the 4-decimal
  grid or outside (0, 1), a count with more than 2 decimals, or an unknown enum
  raises `OrderValidationError` and nothing goes on the wire.

Reads and order mutations draw on separate token buckets, mirroring Kalshi's
separate read and write limits (Basic tier: 20 reads/s, 10 writes/s).

`HybridKalshiClient` is a `KalshiClient` whose `stream_prices` comes from a
`KalshiWebSocketClient` and whose `get_market_price` answers from the live
WebSocket book when it can (markets/hybrid.py), so a strategy that asks for a
price it is already streaming costs no REST request.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from markets.base import BaseMarketClient, ParamValue, TokenBucket, VenueError, path_segment
from markets.book import BookError, KalshiOrderBook
from markets.hybrid import WebSocketPrices
from markets.kalshi.auth import KalshiAuthError, KalshiCredentials
from markets.kalshi.lifecycle import LifecycleError, market_closure, parse_close_time
from markets.kalshi.ws_client import KALSHI_WS_URL, KalshiWebSocketClient
from markets.models import (
    KALSHI_SIZE_PLACES,
    PRICE_PLACES,
    TICKS_PER_DOLLAR,
    MarketPrice,
    format_fixed,
    format_price,
)

log = logging.getLogger(__name__)

KALSHI_REST_URL = "https://external-api.kalshi.com/trade-api/v2"
KALSHI_DEMO_REST_URL = "https://external-api.demo.kalshi.co/trade-api/v2"

ORDER_SIDES = frozenset({"bid", "ask"})
TIME_IN_FORCE = frozenset({"fill_or_kill", "good_till_canceled", "immediate_or_cancel"})
SELF_TRADE_PREVENTION = frozenset({"taker_at_cross", "maker"})

MAX_MARKETS_PAGE = 1000
MAX_EVENTS_PAGE = 200
# Markets per REST listing when learning close times (comma-joined tickers stay well
# inside a URL at 100).
LIFECYCLE_BATCH = 100
_ORDER_MUTATION_PREFIXES = ("/portfolio/events/orders", "/portfolio/orders")


class OrderValidationError(ValueError):
    """An order argument is invalid; raised before anything is sent."""


class Page(NamedTuple):
    """One page of a cursor-paginated listing; `cursor` is None on the last page."""

    items: list[dict[str, Any]]
    cursor: str | None


def _exact_units(value: object, places: int, name: str) -> int:
    """`value` as an exact integer count of 10**-places, refusing anything finer.

    Floats are read through their shortest repr (0.56 -> "0.56"), so a float
    literal means what it looks like; booleans are refused because True is 1.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError(f"{name} must be a decimal number, got {type(value).__name__} {value!r}")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name} is not a decimal number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    scaled = number.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{name} {value!r} has more than {places} decimal places")
    return int(scaled)


def _order_price(price: object) -> str:
    """The YES price as Kalshi's 4-decimal string; must be strictly inside (0, 1)."""
    ticks = _exact_units(price, PRICE_PLACES, "price")
    if not 0 < ticks < TICKS_PER_DOLLAR:
        raise ValueError(f"price must be strictly between 0 and 1 dollar, got {price!r}")
    return format_price(ticks)


def _order_count(count: object) -> str:
    """The contract count as a 2-decimal string; must be positive."""
    units = _exact_units(count, KALSHI_SIZE_PLACES, "count")
    if units <= 0:
        raise ValueError(f"count must be positive, got {count!r}")
    return format_fixed(units, KALSHI_SIZE_PLACES)


def _require_choice(value: object, allowed: frozenset[str], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return str(value)


def _require_text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def _optional_flags(**flags: object) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for name, value in flags.items():
        if value is None:
            continue
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean, got {value!r}")
        out[name] = value
    return out


def _optional_int(value: object, name: str, minimum: int, maximum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return value


_ORDER_INT_BOUNDS: dict[str, tuple[int, int | None]] = {
    "expiration_time": (1, None),
    "subaccount": (0, 32),
    "exchange_index": (-1, None),
}


def _order_body(ticker: object, side: object, price: object, count: object, time_in_force: object,
                self_trade_prevention_type: object, client_order_id: object, order_group_id: object,
                *, flags: Mapping[str, object], integers: Mapping[str, object]) -> dict[str, Any]:
    """The V2 create-order body (kalshi.md §8.6), or ValueError naming the first bad argument.

    Optional fields are sent only when given, so the venue's defaults apply.
    """
    body: dict[str, Any] = {
        "ticker": _require_text(ticker, "ticker"),
        "client_order_id": (str(uuid.uuid4()) if client_order_id is None
                            else _require_text(client_order_id, "client_order_id")),
        "side": _require_choice(side, ORDER_SIDES, "side"),
        "count": _order_count(count),
        "price": _order_price(price),
        "time_in_force": _require_choice(time_in_force, TIME_IN_FORCE, "time_in_force"),
        "self_trade_prevention_type": _require_choice(
            self_trade_prevention_type, SELF_TRADE_PREVENTION, "self_trade_prevention_type"),
    }
    body.update(_optional_flags(**flags))
    for name, value in integers.items():
        low, high = _ORDER_INT_BOUNDS[name]
        checked = _optional_int(value, name, low, high)
        if checked is not None:
            body[name] = checked
    if order_group_id is not None:
        body["order_group_id"] = _require_text(order_group_id, "order_group_id")
    if "expiration_time" in body and body["time_in_force"] != "good_till_canceled":
        raise ValueError("expiration_time is only valid with time_in_force='good_till_canceled'")
    return body


class KalshiClient(BaseMarketClient):
    """Kalshi Trade API v2 over REST.

    Market data needs no credentials; the portfolio endpoints (balance,
    orders) are signed and raise `KalshiAuthError` when none were given.
    """

    venue = "kalshi"

    def __init__(
        self,
        credentials: KalshiCredentials | None = None,
        *,
        base_url: str = KALSHI_REST_URL,
        read_rate: float = 20.0,
        write_rate: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(base_url, rate=read_rate, **options)
        self.credentials = credentials
        self.write_limiter = TokenBucket(write_rate)

    def __repr__(self) -> str:
        signed = "signed" if self.credentials is not None else "unsigned"
        return f"{type(self).__name__}({self.base_url!r}, {signed})"

    # -- base hooks ----------------------------------------------------------------

    def _auth_headers(self, method: str, url_path: str) -> dict[str, str]:
        if self.credentials is None:
            raise KalshiAuthError(f"Kalshi credentials are required for {method} {url_path}")
        return self.credentials.sign(method, url_path)

    def _bucket_for(self, method: str, path: str) -> TokenBucket:
        if method != "GET" and path.startswith(_ORDER_MUTATION_PREFIXES):
            return self.write_limiter
        return self.rate_limiter

    # -- pagination ----------------------------------------------------------------

    async def _page(self, path: str, key: str, params: Mapping[str, ParamValue]) -> Page:
        body = await self._request("GET", path, params=params)
        items = self._field(body, key, "GET", path)
        if not isinstance(items, list):
            raise self._unexpected("GET", path, body, f"{key!r} is not a list")
        cursor = body.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            # Treating it as "no more pages" would end a listing early without a word.
            raise self._unexpected("GET", path, body, f"'cursor' is not a string: {cursor!r}")
        return Page(items, cursor or None)

    async def _iterate(self, path: str, key: str, params: Mapping[str, ParamValue],
                       max_pages: int | None) -> AsyncGenerator[dict[str, Any], None]:
        """Follow cursors to the end; a cursor the venue repeats would loop forever, so it is an error."""
        cursor: str | None = None
        seen: set[str] = set()
        pages = 0
        while max_pages is None or pages < max_pages:
            page = await self._page(path, key, {**params, "cursor": cursor})
            pages += 1
            for item in page.items:
                yield item
            if page.cursor is None:
                return
            if page.cursor in seen:
                raise self._unexpected("GET", path, None, f"pagination cursor {page.cursor!r} repeated")
            seen.add(page.cursor)
            cursor = page.cursor

    @staticmethod
    def _limit(limit: int, maximum: int) -> int:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
            raise ValueError(f"page limit must be an integer in [1, {maximum}], got {limit!r}")
        return limit

    # -- markets -------------------------------------------------------------------

    @staticmethod
    def _market_filters(status: str | None, event_ticker: str | None, series_ticker: str | None,
                        tickers: Sequence[str] | None, extra: Mapping[str, ParamValue]) -> dict[str, ParamValue]:
        # `tickers` is one comma-separated value on /markets (not repeated keys).
        return {"status": status, "event_ticker": event_ticker, "series_ticker": series_ticker,
                "tickers": ",".join(tickers) if tickers else None, **extra}

    async def get_markets_page(
        self, *, limit: int = 100, cursor: str | None = None, status: str | None = None,
        event_ticker: str | None = None, series_ticker: str | None = None,
        tickers: Sequence[str] | None = None, **extra: ParamValue,
    ) -> Page:
        """One page of `GET /markets`; pass the returned cursor back for the next."""
        params = self._market_filters(status, event_ticker, series_ticker, tickers, extra)
        params.update(limit=self._limit(limit, MAX_MARKETS_PAGE), cursor=cursor)
        return await self._page("/markets", "markets", params)

    def iter_markets(
        self, *, page_size: int = 200, max_pages: int | None = None, status: str | None = None,
        event_ticker: str | None = None, series_ticker: str | None = None,
        tickers: Sequence[str] | None = None, **extra: ParamValue,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every market matching the filters, page after page (close it if you stop early)."""
        params = self._market_filters(status, event_ticker, series_ticker, tickers, extra)
        params["limit"] = self._limit(page_size, MAX_MARKETS_PAGE)
        return self._iterate("/markets", "markets", params, max_pages)

    async def get_market(self, ticker: str) -> dict[str, Any]:
        path = f"/markets/{path_segment(ticker, 'ticker')}"
        return self._object(self._field(await self._request("GET", path), "market", "GET", path), "GET", path)

    async def get_orderbook(self, ticker: str, *, depth: int = 0) -> KalshiOrderBook:
        """The market's book (all levels when depth is 0) as a YES-scale `KalshiOrderBook`.

        The REST book always prices NO bids on the NO scale, hence
        ``use_yes_price=False`` whatever a WebSocket subscription uses.
        """
        path = f"/markets/{path_segment(ticker, 'ticker')}/orderbook"
        params = {"depth": _optional_int(depth, "depth", 0, 100)}
        book_fp = self._field(await self._request("GET", path, params=params), "orderbook_fp", "GET", path)
        if not isinstance(book_fp, Mapping):
            raise self._unexpected("GET", path, book_fp, "'orderbook_fp' is not an object")
        book = KalshiOrderBook(ticker, use_yes_price=False)
        try:
            book.apply_snapshot(book_fp.get("yes_dollars", ()), book_fp.get("no_dollars", ()))
        except (BookError, TypeError) as exc:
            raise self._unexpected("GET", path, book_fp, f"unusable order book: {exc}") from None
        return book

    async def get_market_price(self, market_id: str) -> MarketPrice:
        """Top of book from a fresh REST order book (one request)."""
        book = await self.get_orderbook(market_id)
        return book.to_market_price(recv_ts_ns=time.time_ns())

    # -- events and series ---------------------------------------------------------

    @staticmethod
    def _event_filters(status: str | None, series_ticker: str | None, with_nested_markets: bool | None,
                       extra: Mapping[str, ParamValue]) -> dict[str, ParamValue]:
        return {"status": status, "series_ticker": series_ticker,
                "with_nested_markets": with_nested_markets, **extra}

    async def get_events_page(
        self, *, limit: int = 100, cursor: str | None = None, status: str | None = None,
        series_ticker: str | None = None, with_nested_markets: bool | None = None, **extra: ParamValue,
    ) -> Page:
        params = self._event_filters(status, series_ticker, with_nested_markets, extra)
        params.update(limit=self._limit(limit, MAX_EVENTS_PAGE), cursor=cursor)
        return await self._page("/events", "events", params)

    def iter_events(
        self, *, page_size: int = 200, max_pages: int | None = None, status: str | None = None,
        series_ticker: str | None = None, with_nested_markets: bool | None = None, **extra: ParamValue,
    ) -> AsyncGenerator[dict[str, Any], None]:
        params = self._event_filters(status, series_ticker, with_nested_markets, extra)
        params["limit"] = self._limit(page_size, MAX_EVENTS_PAGE)
        return self._iterate("/events", "events", params, max_pages)

    async def get_event(self, event_ticker: str, *, with_nested_markets: bool = False) -> dict[str, Any]:
        """The event object; with nested markets they sit under ``event["markets"]``."""
        path = f"/events/{path_segment(event_ticker, 'event_ticker')}"
        body = await self._request("GET", path, params={"with_nested_markets": with_nested_markets})
        event = self._object(self._field(body, "event", "GET", path), "GET", path)
        if "markets" in body and "markets" not in event:
            event = {**event, "markets": body["markets"]}
        return event

    async def get_series_list(self, **filters: ParamValue) -> list[dict[str, Any]]:
        series = self._field(await self._request("GET", "/series", params=filters), "series", "GET", "/series")
        return self._list(series, "GET", "/series")

    async def get_series(self, series_ticker: str) -> dict[str, Any]:
        path = f"/series/{path_segment(series_ticker, 'series_ticker')}"
        return self._object(self._field(await self._request("GET", path), "series", "GET", path), "GET", path)

    # -- portfolio (signed) --------------------------------------------------------

    async def get_balance(self, *, subaccount: int | None = None) -> dict[str, Any]:
        """``{"balance": cents, "portfolio_value": cents, "updated_ts": ...}`` (plus newer fields)."""
        params = {"subaccount": _optional_int(subaccount, "subaccount", 0, 32)}
        body = await self._request("GET", "/portfolio/balance", params=params, signed=True)
        self._field(body, "balance", "GET", "/portfolio/balance")
        return body

    async def place_order(
        self,
        ticker: str,
        side: str,
        price: str | float | Decimal,
        count: str | int | float | Decimal,
        *,
        time_in_force: str = "good_till_canceled",
        self_trade_prevention_type: str = "taker_at_cross",
        client_order_id: str | None = None,
        post_only: bool | None = None,
        reduce_only: bool | None = None,
        cancel_order_on_pause: bool | None = None,
        expiration_time: int | None = None,
        order_group_id: str | None = None,
        subaccount: int | None = None,
        exchange_index: int | None = None,
    ) -> dict[str, Any]:
        """Place an order on ``POST /portfolio/events/orders``; returns the venue's 201 body.

        `side` and `price` are on the YES leg: buying NO at q is
        ``side="ask", price=1 - q``.  A `client_order_id` is generated when not
        given so a caller can always reconcile the order.  The request is not
        retried after a timeout or 5xx: the order may have been placed.
        """
        try:
            body = _order_body(ticker, side, price, count, time_in_force, self_trade_prevention_type,
                               client_order_id, order_group_id,
                               flags={"post_only": post_only, "reduce_only": reduce_only,
                                      "cancel_order_on_pause": cancel_order_on_pause},
                               integers={"expiration_time": expiration_time, "subaccount": subaccount,
                                         "exchange_index": exchange_index})
        except ValueError as exc:
            raise OrderValidationError(str(exc)) from None
        return await self._request("POST", "/portfolio/events/orders", json=body, signed=True)

    async def cancel_order(self, order_id: str, *, market_ticker: str | None = None) -> dict[str, Any]:
        """Cancel on ``DELETE /portfolio/events/orders/{order_id}`` (the ticker helps shard routing)."""
        path = f"/portfolio/events/orders/{path_segment(order_id, 'order_id')}"
        params = {"market_ticker": None if market_ticker is None else _require_text(market_ticker, "market_ticker")}
        return await self._request("DELETE", path, params=params, signed=True)


class HybridKalshiClient(WebSocketPrices, KalshiClient):
    """REST for queries and orders, WebSocket for prices (the rules are in markets/hybrid.py).

    Before streaming, one REST listing per `LIFECYCLE_BATCH` markets tells the
    WebSocket client each market's `close_time` (a Kalshi close has no WebSocket
    event, so the client closes the market itself when it passes) and which markets
    do not trade at all right now (published CLOSED at once, never subscribed).
    """

    def __init__(
        self,
        credentials: KalshiCredentials,
        *,
        rest_url: str = KALSHI_REST_URL,
        ws_url: str = KALSHI_WS_URL,
        use_yes_price: bool = True,
        rest_options: Mapping[str, Any] | None = None,
        ws_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(credentials, base_url=rest_url, **(rest_options or {}))
        self.ws = KalshiWebSocketClient(credentials, url=ws_url,
                                        use_yes_price=use_yes_price, **(ws_options or {}))

    def stream_prices(self, market_ids: Iterable[str], interval: float | None = None) -> AsyncIterator[MarketPrice]:
        """Live prices from the WebSocket, after `learn_lifecycle`; `interval` is ignored."""
        return self._stream_with_lifecycle(list(dict.fromkeys(market_ids)))

    async def _stream_with_lifecycle(self, tickers: list[str]) -> AsyncIterator[MarketPrice]:
        await self.learn_lifecycle(tickers)
        async for price in self.ws.stream_prices(tickers):
            yield price

    async def learn_lifecycle(self, tickers: Sequence[str]) -> None:
        """Tell the WebSocket client what REST says of these markets: close times, and
        closures for markets not trading now (see `markets.kalshi.lifecycle.market_closure`).

        A listing that fails is logged and skipped: the markets then stream without a
        known close time (their lifecycle events still close them), which is better
        than not streaming them at all.
        """
        for start in range(0, len(tickers), LIFECYCLE_BATCH):
            chunk = list(tickers[start:start + LIFECYCLE_BATCH])
            try:
                markets = [market async for market in self.iter_markets(tickers=chunk, page_size=len(chunk))]
            except VenueError as exc:
                log.warning("kalshi: no close times for %d market(s) (%s); streaming them without",
                            len(chunk), exc)
                continue
            for market in markets:
                self._apply_lifecycle(market)

    def _apply_lifecycle(self, market: Mapping[str, Any]) -> None:
        ticker = market.get("ticker")
        if not isinstance(ticker, str):
            return
        try:
            close = parse_close_time(market)
        except LifecycleError as exc:
            log.warning("kalshi: market %s: %s", ticker, exc)
            close = None
        if close is not None:
            self.ws.set_close_time(ticker, close)
        closure = market_closure(market)
        if closure is not None:
            self.ws.close_market(ticker, f"REST status {market.get('status')!r}, close_time "
                                 f"{market.get('close_time')!r}", closure)
