"""The CLOB REST API the simulator serves: books, prices, markets, price history.

Shapes and errors follow what the real host returns, including the parts that
trip clients: book levels run worst->best, `/markets` pages with base64 offsets
until the `LTE=` end marker, a missing `token_id` is a 400 "Invalid token id"
and an unknown one (or one whose market is resolved) a 404 "No orderbook exists for
the requested token id".
`/books` silently leaves out tokens it does not know, as the batch endpoint does.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import orjson
from aiohttp import web

from markets.models import TICKS_PER_DOLLAR

from .catalog import Directory, rest_book
from .state import MarketState
from .wire import price_text

START_CURSOR = "MA=="
END_CURSOR = "LTE="
MAX_BATCH = 500
NO_ORDERBOOK = "No orderbook exists for the requested token id"
INTERVAL_SECONDS = {"1h": 3_600, "6h": 21_600, "1d": 86_400, "1w": 604_800, "1m": 2_592_000}


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


class ClobRoutes:
    """Request handlers over a `Directory`; `page_size` is the `/markets` page length."""

    def __init__(self, directory: Directory, page_size: int) -> None:
        self.directory = directory
        self.page_size = page_size

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/book", self.book)
        app.router.add_post("/books", self.books)
        app.router.add_get("/price", self.price)
        app.router.add_get("/midpoint", self.midpoint)
        app.router.add_get("/prices-history", self.prices_history)
        app.router.add_get("/markets", self.markets)
        app.router.add_get("/markets/{condition_id}", self.market)

    def _token(self, request: web.Request) -> tuple[str, MarketState] | web.Response:
        token_id = request.query.get("token_id", "").strip()
        if not token_id:
            return error_response(400, "Invalid token id")
        state = self.directory.by_token.get(token_id)
        if state is None or not self.directory.has_book(token_id):
            return error_response(404, NO_ORDERBOOK)
        return token_id, state

    async def book(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        token_id, state = found
        return json_response(rest_book(state, token_id))

    async def books(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return error_response(400, f"Invalid payload: body is not JSON ({exc})")
        if not isinstance(body, list) or not all(
                isinstance(item, dict) and isinstance(item.get("token_id"), str) for item in body):
            return error_response(
                400, 'Invalid payload: expected a JSON list of {"token_id": "<id>"} objects')
        if len(body) > MAX_BATCH:
            return error_response(400, f"Invalid payload: at most {MAX_BATCH} token ids per request")
        books = [rest_book(self.directory.by_token[item["token_id"]], item["token_id"])
                 for item in body if self.directory.has_book(item["token_id"])]
        return json_response(books)

    async def price(self, request: web.Request) -> web.Response:
        """`side=BUY` answers the best bid, `SELL` the best ask (docs.polymarket.com
        get-market-price: "Returns the best bid price for BUY side or best ask price for
        SELL side"), i.e. the side of the book that holds BUY or SELL orders."""
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        token_id, state = found
        side = request.query.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            return error_response(400, f"Invalid side {request.query.get('side')!r}: use BUY or SELL")
        bid, ask = state.token_top(token_id)
        price = bid if side == "BUY" else ask
        if price is None:
            return error_response(404, f"No {'bids' if side == 'BUY' else 'asks'} in the orderbook "
                                       "for the requested token id")
        return json_response({"price": price_text(price)})

    async def midpoint(self, request: web.Request) -> web.Response:
        found = self._token(request)
        if isinstance(found, web.Response):
            return found
        token_id, state = found
        mid = state.token_mid(token_id)
        if mid is None:
            return error_response(404, "No midpoint: one side of the orderbook is empty")
        return json_response({"mid": price_text(mid)})

    async def prices_history(self, request: web.Request) -> web.Response:
        """Recorded mids of a token, one point per `fidelity`-minute bucket (last wins).

        An unknown token gets an empty history, as the real endpoint returns for
        ids it has no trades for.
        """
        query = request.query
        token_id = query.get("market", "").strip()
        if not token_id:
            return error_response(400, "missing required query parameter: market (a token id)")
        window = _history_window(query)
        if isinstance(window, web.Response):
            return window
        start, end, fidelity = window
        state = self.directory.by_token.get(token_id)
        if state is None:
            return json_response({"history": []})
        mirror = not state.is_yes(token_id)
        buckets: dict[int, tuple[int, int]] = {}
        for second, mid in state.mids:
            if start <= second <= end:
                buckets[second // (fidelity * 60)] = (second, mid)
        history = [{"t": second, "p": (TICKS_PER_DOLLAR - mid if mirror else mid) / TICKS_PER_DOLLAR}
                   for second, mid in buckets.values()]
        return json_response({"history": history})

    async def markets(self, request: web.Request) -> web.Response:
        cursor = request.query.get("next_cursor", START_CURSOR) or START_CURSOR
        listings = self.directory.listings
        if cursor == END_CURSOR:
            offset = len(listings)
        else:
            try:
                offset = int(base64.b64decode(cursor, validate=True).decode())
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return error_response(400, f"invalid next_cursor {cursor!r}")
            if offset < 0:
                return error_response(400, f"invalid next_cursor {cursor!r}")
        page = listings[offset: offset + self.page_size]
        end = offset + len(page)
        next_cursor = END_CURSOR if end >= len(listings) else base64.b64encode(
            str(end).encode()).decode()
        data = [self.directory.clob_market(item) for item in page]
        return json_response({"limit": self.page_size, "count": len(data),
                              "next_cursor": next_cursor, "data": data})

    async def market(self, request: web.Request) -> web.Response:
        listing = self.directory.by_condition.get(request.match_info["condition_id"])
        if listing is None:
            return error_response(404, "market not found")
        return json_response(self.directory.clob_market(listing))


def _history_window(query: Any) -> tuple[int, int, int] | web.Response:
    """(start, end, fidelity minutes) from `interval` or `startTs`/`endTs`, which exclude each other."""
    now = int(time.time())
    try:
        fidelity = int(query.get("fidelity", "1"))
        if fidelity < 1:
            raise ValueError
    except ValueError:
        return error_response(400, f"invalid fidelity {query.get('fidelity')!r}: minutes, >= 1")
    interval = query.get("interval")
    has_range = "startTs" in query or "endTs" in query
    if interval is not None and has_range:
        return error_response(400, "interval and startTs/endTs are mutually exclusive")
    if interval is not None:
        if interval in ("max", "all"):
            return 0, now, fidelity
        if interval not in INTERVAL_SECONDS:
            return error_response(400, f"invalid interval {interval!r}: use 1h, 6h, 1d, 1w, 1m or max")
        return now - INTERVAL_SECONDS[interval], now, fidelity
    try:
        start = int(query.get("startTs", "0"))
        end = int(query.get("endTs", str(now)))
    except ValueError:
        return error_response(400, "startTs and endTs must be unix seconds")
    if start > end:
        return error_response(400, "startTs is after endTs")
    return start, end, fidelity
