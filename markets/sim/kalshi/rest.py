"""Kalshi REST v2 as the simulator serves it: discovery, books, balance, V2 orders.

Markets, events and series follow the shared game timetable (markets/sim/lifecycle.py):
`status`, `close_time` and `result` move as games pause, close and settle, and the
`status=open` listing lags a just-closed market (markets/sim/kalshi/lifecycle.py).

Market data needs no signature; `/portfolio/*` does.  Every request draws from
a per-key token bucket (per client address when unsigned), like the venue's
Basic tier: 200 read tokens/s, 100 write tokens/s, 10 tokens a request; an
empty bucket answers 429 `{"error": "too many requests"}` with no Retry-After.

Error bodies use the documented flat `{"code", "message", "details"}` shape,
except the duplicate-order 409, which the live venue was observed to nest under
`"error"` — clients must read both, so the simulator sends both.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from aiohttp import web

from markets.models import KALSHI_SIZE_PLACES, TICKS_PER_DOLLAR, parse_fixed
from markets.sim.kalshi import wire
from markets.sim.kalshi.auth import KEY_HEADER, AuthError
from markets.sim.kalshi.catalog import all_series, event_doc, series_matches
from markets.sim.kalshi.lifecycle import FILTERS, STATUS, listed_phase, result
from markets.sim.lifecycle import Phase
from markets.sim.universe import SimMarket

if TYPE_CHECKING:
    from markets.sim.kalshi.simulator import KalshiSimulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MARKET_STATUS_FILTERS = frozenset(FILTERS)
_Item = TypeVar("_Item")
TIME_IN_FORCE = frozenset({"fill_or_kill", "good_till_canceled", "immediate_or_cancel"})
SELF_TRADE = frozenset({"taker_at_cross", "maker"})
_COUNT = re.compile(r"^\d+(\.\d{1,2})?$")
_PRICE = re.compile(r"^\d*\.?\d+$")
START_BALANCE_CENTS = 100_000
# The verified API key id of a request (None for unsigned market-data calls).
KEY_ID = web.RequestKey("kalshi_key_id", str)


@dataclass(frozen=True)
class RateLimit:
    """Token buckets per key: refill per second, capacity, cost of one request."""

    read_refill: float = 200.0
    read_capacity: float = 200.0
    write_refill: float = 100.0
    write_capacity: float = 100.0
    cost: float = 10.0


class TokenBucket:
    def __init__(self, refill: float, capacity: float) -> None:
        self.refill = refill
        self.capacity = capacity
        self.tokens = capacity
        self._last = time.monotonic()

    def take(self, cost: float) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.refill)
        self._last = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


@dataclass(frozen=True)
class RecordedOrder:
    """An accepted V2 order as the simulator parsed it (prices in ticks, counts in hundredths)."""

    order_id: str
    client_order_id: str
    key_id: str
    ticker: str
    side: str
    price: int
    count: int
    time_in_force: str
    self_trade_prevention_type: str
    ts_ms: int
    body: dict[str, Any] = field(default_factory=dict)


def error_response(status: int, code: str, message: str, details: str = "") -> web.Response:
    return web.json_response({"code": code, "message": message, "details": details}, status=status,
                             dumps=wire.dumps)


def too_many_requests() -> web.Response:
    return web.json_response({"error": "too many requests"}, status=429, dumps=wire.dumps)


class BadRequest(Exception):
    """A 400 naming the offending parameter."""


class KalshiRest:
    """The REST routes and their state (orders, balances, rate-limit buckets)."""

    def __init__(self, sim: KalshiSimulator, rate_limit: RateLimit | None) -> None:
        self.sim = sim
        self.rate_limit = rate_limit
        self.orders: list[RecordedOrder] = []
        self.cancelled: set[str] = set()
        self._client_order_ids: set[tuple[str, str]] = set()
        self._buckets: dict[tuple[str, bool], TokenBucket] = {}
        self._root = ""

    def add_routes(self, app: web.Application, root: str) -> None:
        self._root = root
        app.middlewares.append(self._middleware)
        r = app.router
        r.add_get(f"{root}/markets", self._markets)
        r.add_get(f"{root}/markets/{{ticker}}", self._market)
        r.add_get(f"{root}/markets/{{ticker}}/orderbook", self._orderbook)
        r.add_get(f"{root}/events", self._events)
        r.add_get(f"{root}/events/{{event_ticker}}", self._event)
        r.add_get(f"{root}/series", self._series_list)
        r.add_get(f"{root}/series/{{series_ticker}}", self._series)
        r.add_get(f"{root}/portfolio/balance", self._balance)
        r.add_post(f"{root}/portfolio/events/orders", self._create_order)
        r.add_delete(f"{root}/portfolio/events/orders/{{order_id}}", self._cancel_order)
        r.add_post(f"{root}/portfolio/orders", self._legacy_order)

    # -- cross-cutting ---------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(self._root + "/"):
            return await handler(request)
        injected = self.sim.next_rest_fault()
        if injected == 429:
            return too_many_requests()
        if injected is not None:
            return error_response(injected, "internal_server_error", "simulated server error")
        key_id: str | None = None
        if request.path.startswith(f"{self._root}/portfolio/"):
            try:
                key_id = self.sim.keys.verify(request.headers, request.method, request.path)
            except AuthError as exc:
                return error_response(401, "authentication_error", str(exc))
        elif request.headers.get(KEY_HEADER):
            try:
                key_id = self.sim.keys.verify(request.headers, request.method, request.path)
            except AuthError:
                key_id = None  # market data does not need auth; an unverified key is not an identity
        if not self._allow(key_id or f"addr:{request.remote}", write=request.method != "GET"):
            return too_many_requests()
        request[KEY_ID] = key_id or ""
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(400, "invalid_parameters", str(exc))

    def _allow(self, identity: str, write: bool) -> bool:
        limit = self.rate_limit
        if limit is None:
            return True
        bucket = self._buckets.get((identity, write))
        if bucket is None:
            bucket = TokenBucket(limit.write_refill if write else limit.read_refill,
                                 limit.write_capacity if write else limit.read_capacity)
            self._buckets[(identity, write)] = bucket
        return bucket.take(limit.cost)

    # -- market data -------------------------------------------------------------------
    async def _markets(self, request: web.Request) -> web.Response:
        q = request.query
        limit = _int_param(q, "limit", 100, 1, 1000)
        tickers = set(filter(None, q.get("tickers", "").split(","))) or None
        markets = [(m, phase) for m, phase in self._listed(q)
                   if q.get("event_ticker", m.event_ticker) == m.event_ticker
                   and (tickers is None or m.kalshi_ticker in tickers)]
        page, cursor = _paginate(markets, limit, q.get("cursor", ""))
        return _json({"markets": [self._market_obj(m, phase) for m, phase in page],
                      "cursor": self._next_cursor(cursor)})

    def _listed(self, q: Any) -> list[tuple[SimMarket, Phase]]:
        """The markets a listing's `status` and `series_ticker` filters admit, each with the
        phase the listing shows (the `open` listing lags a just-closed market)."""
        status = _status_filter(q)
        lifecycle, now = self.sim.universe.lifecycle, time.time()
        return [(m, phase) for m in self.sim.universe.markets
                if q.get("series_ticker", m.series_ticker) == m.series_ticker
                and (phase := listed_phase(lifecycle, m, status, now)) is not None]

    async def _market(self, request: web.Request) -> web.Response:
        market = self._lookup(request.match_info["ticker"])
        return _json({"market": self._market_obj(market)})

    async def _orderbook(self, request: web.Request) -> web.Response:
        market = self._lookup(request.match_info["ticker"])
        depth = _int_param(request.query, "depth", 0, -(2**31), 100)
        book: dict[str, list[list[str]]] = {}
        for key, bids in zip(("yes_dollars", "no_dollars"), self.sim.book_levels(market.kalshi_ticker)):
            best = sorted(bids, reverse=True)[:depth] if depth > 0 else bids
            book[key] = wire.levels(bids, self.sim.level_order(best, shuffled=False))
        return _json({"orderbook_fp": book})

    async def _events(self, request: web.Request) -> web.Response:
        q = request.query
        limit = _int_param(q, "limit", 200, 1, 200)
        nested = _nested_markets(q)
        page, cursor = _paginate(self._listed(q), limit, q.get("cursor", ""))
        events = []
        for m, phase in page:
            event = event_doc(m)
            if nested:
                event["markets"] = [self._market_obj(m, phase)]
            events.append(event)
        return _json({"events": events, "cursor": self._next_cursor(cursor)})

    async def _event(self, request: web.Request) -> web.Response:
        """`GET /events/{event_ticker}`: the event, its markets at the top level (the
        older form) and, with `with_nested_markets=true`, inside the event as well."""
        ticker = request.match_info["event_ticker"]
        nested = _nested_markets(request.query)
        markets = [m for m in self.sim.universe.markets if m.event_ticker == ticker]
        if not markets:
            raise _not_found("event not found", ticker)
        docs = [self._market_obj(m) for m in markets]
        event = event_doc(markets[0])
        if nested:
            event["markets"] = docs
        return _json({"event": event, "markets": docs})

    async def _series_list(self, request: web.Request) -> web.Response:
        q = request.query
        tags = set(filter(None, q.get("tags", "").split(","))) or None
        return _json({"series": [doc for doc in all_series(self.sim.universe).values()
                                 if series_matches(doc, q.get("category"), tags)]})

    async def _series(self, request: web.Request) -> web.Response:
        ticker = request.match_info["series_ticker"]
        doc = all_series(self.sim.universe).get(ticker)
        if doc is None:
            raise _not_found("series not found", ticker)
        return _json({"series": doc})

    def _next_cursor(self, cursor: str) -> str | None:
        """The last page's cursor is "" (schema: "Empty if there are no more results")
        or null (pagination guide: "until the cursor is null"): a client must end on both."""
        return cursor or self.sim.wire_rng.choice(("", None))

    def _lookup(self, ticker: str) -> SimMarket:
        market = self.sim.universe.by_kalshi_ticker.get(ticker)
        if market is None:
            raise _not_found("market not found", ticker)
        return market

    def _market_obj(self, m: SimMarket, phase: Phase | None = None) -> dict[str, Any]:
        """The `Market` object; `phase` is what a (lagging) listing shows, default the current one."""
        ladder = self.sim.ladders[m.kalshi_ticker]
        stats = self.sim.stats(m.kalshi_ticker)
        bid, ask = ladder.best_bid(), ladder.best_ask()
        yes_bid = bid if bid is not None else 0
        yes_ask = ask if ask is not None else TICKS_PER_DOLLAR
        lifecycle = self.sim.universe.lifecycle
        phase = lifecycle.phase(m) if phase is None else phase
        close = datetime.fromtimestamp(lifecycle.close_time(m), UTC)
        settle_timer = lifecycle.config.settle_after
        team = m.kalshi_ticker.rsplit("-", 1)[1]
        return {
            "ticker": m.kalshi_ticker, "event_ticker": m.event_ticker, "market_type": "binary",
            "title": m.title, "subtitle": "",
            "yes_sub_title": team, "no_sub_title": team,
            "created_time": _iso(close - timedelta(days=14)),
            "updated_time": _iso(close - timedelta(days=1)),
            "open_time": _iso(close - timedelta(days=14)), "close_time": _iso(close),
            "expected_expiration_time": _iso(close + timedelta(seconds=lifecycle.config.determine_after)),
            "latest_expiration_time": _iso(close + timedelta(days=14)),
            "settlement_timer_seconds": int(settle_timer), "status": STATUS[phase],
            "notional_value_dollars": "1.0000",
            "yes_bid_dollars": wire.price_str(yes_bid), "yes_ask_dollars": wire.price_str(yes_ask),
            "no_bid_dollars": wire.price_str(TICKS_PER_DOLLAR - yes_ask),
            "no_ask_dollars": wire.price_str(TICKS_PER_DOLLAR - yes_bid),
            "yes_bid_size_fp": wire.count_str(ladder.bids.get(yes_bid, 0)),
            "yes_ask_size_fp": wire.count_str(ladder.asks.get(yes_ask, 0)),
            "last_price_dollars": wire.price_str(stats.last_price),
            "previous_yes_bid_dollars": wire.price_str(yes_bid),
            "previous_yes_ask_dollars": wire.price_str(yes_ask),
            "previous_price_dollars": wire.price_str(stats.last_price),
            "volume_fp": wire.count_str(stats.volume), "volume_24h_fp": wire.count_str(stats.volume),
            "liquidity_dollars": wire.price_str(sum(p * s for p, s in ladder.bids.items()) // 100),
            "open_interest_fp": wire.count_str(stats.open_interest),
            "result": result(lifecycle, m, phase), "can_close_early": True, "expiration_value": "",
            "rules_primary": f"If {team} wins the game, the market resolves to Yes.",
            "rules_secondary": "",
            "price_level_structure": m.price_level_structure,
            "price_ranges": [{"start": wire.price_str(a), "end": wire.price_str(b), "step": wire.price_str(s)}
                             for a, b, s in ladder.grid.ranges()],
        }

    # -- portfolio -----------------------------------------------------------------------
    async def _balance(self, request: web.Request) -> web.Response:
        return _json({"balance": START_BALANCE_CENTS, "portfolio_value": 0,
                      "updated_ts": int(time.time()),
                      "balance_dollars": wire.price_str(START_BALANCE_CENTS * 100)})

    async def _create_order(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise BadRequest("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        order = self._validate_order(body, request[KEY_ID])
        if (order.key_id, order.client_order_id) in self._client_order_ids:
            return web.json_response(
                {"error": {"code": "order_already_exists", "message": "order already exists",
                           "details": f"client_order_id {order.client_order_id} was already used"}},
                status=409, dumps=wire.dumps)
        if order.client_order_id:
            self._client_order_ids.add((order.key_id, order.client_order_id))
        self.orders.append(order)
        return _json({"order_id": order.order_id, "client_order_id": order.client_order_id,
                      "fill_count": "0.00", "remaining_count": wire.count_str(order.count),
                      "ts_ms": order.ts_ms}, status=201)

    async def _cancel_order(self, request: web.Request) -> web.Response:
        """Cancel a resting order of the caller's key; orders never fill here, so all of it goes."""
        order_id = request.match_info["order_id"]
        order = next((o for o in self.orders if o.order_id == order_id and o.key_id == request[KEY_ID]), None)
        if order is None or order_id in self.cancelled:
            return error_response(404, "not_found", "order not found", f"no open order {order_id}")
        self.cancelled.add(order_id)
        return _json({"order_id": order.order_id, "client_order_id": order.client_order_id,
                      "reduced_by": wire.count_str(order.count), "ts_ms": time.time_ns() // 1_000_000})

    async def _legacy_order(self, request: web.Request) -> web.Response:
        return error_response(410, "deprecated_v1_order_endpoint", "Please switch to the V2 endpoints",
                              "POST /portfolio/orders is retired; use POST /portfolio/events/orders")

    def _validate_order(self, body: dict[str, Any], key_id: str) -> RecordedOrder:
        for name in ("ticker", "side", "count", "price", "time_in_force", "self_trade_prevention_type"):
            if name not in body:
                raise BadRequest(f"missing required field {name}")
        ticker = _str_field(body, "ticker")
        market = self.sim.universe.by_kalshi_ticker.get(ticker)
        if market is None:
            raise BadRequest(f"ticker: market {ticker!r} not found")
        side = _enum_field(body, "side", frozenset({"bid", "ask"}))
        tif = _enum_field(body, "time_in_force", TIME_IN_FORCE)
        stp = _enum_field(body, "self_trade_prevention_type", SELF_TRADE)
        count_text = _str_field(body, "count")
        if not _COUNT.match(count_text) or (count := parse_fixed(count_text, KALSHI_SIZE_PLACES)) <= 0:
            raise BadRequest(f"count must be a positive fixed-point string with 0-2 decimals, got {count_text!r}")
        price_text = _str_field(body, "price")
        price = _price_ticks(price_text)
        if not self.sim.ladders[ticker].grid.contains(price):
            raise BadRequest(f"price {price_text} is not on the price grid of {ticker} "
                             f"({market.price_level_structure})")
        for flag in ("post_only", "reduce_only", "cancel_order_on_pause"):
            if flag in body and not isinstance(body[flag], bool):
                raise BadRequest(f"{flag} must be a boolean")
        for name, low, high in (("subaccount", 0, 32), ("exchange_index", -1, 2**31)):
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not low <= value <= high):
                raise BadRequest(f"{name} must be an integer in [{low}, {high}]")
        client_order_id = body.get("client_order_id", "")
        if not isinstance(client_order_id, str):
            raise BadRequest("client_order_id must be a string")
        return RecordedOrder(
            order_id=str(uuid.uuid4()), client_order_id=client_order_id, key_id=key_id,
            ticker=ticker, side=side, price=price, count=count,
            time_in_force=tif, self_trade_prevention_type=stp,
            ts_ms=time.time_ns() // 1_000_000, body=body)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=wire.dumps)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_param(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def _status_filter(query: Any) -> str | None:
    """A listing's `status` filter (filter vocabulary, not Market.status); unknown is a 400."""
    status = query.get("status")
    if status is not None and status not in MARKET_STATUS_FILTERS:
        raise BadRequest(f"status must be one of {sorted(MARKET_STATUS_FILTERS)}, got {status!r}")
    return status


def _nested_markets(query: Any) -> bool:
    nested = query.get("with_nested_markets", "false")
    if nested not in ("true", "false"):
        raise BadRequest(f"with_nested_markets must be true or false, got {nested!r}")
    return nested == "true"


def _not_found(message: str, details: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=wire.dumps({"code": "not_found", "message": message, "details": details}),
                            content_type="application/json")


def _paginate(items: list[_Item], limit: int, cursor: str) -> tuple[list[_Item], str]:
    """An opaque offset cursor; the empty cursor starts (and ends) the listing."""
    offset = 0
    if cursor:
        try:
            offset = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("o:"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise BadRequest(f"cursor {cursor!r} is not valid") from None
    page = items[offset:offset + limit]
    end = offset + len(page)
    return page, base64.urlsafe_b64encode(f"o:{end}".encode()).decode() if end < len(items) else ""


def _str_field(body: dict[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, got {type(value).__name__}")
    return value


def _enum_field(body: dict[str, Any], name: str, allowed: frozenset[str]) -> str:
    value = _str_field(body, name)
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


def _price_ticks(text: str) -> int:
    """A YES price in dollars as exact ticks; anything finer than a tick is off-grid.

    Deliberately stricter than `markets.models.parse_price_ticks`, which rounds
    for robust reading: the venue rejects a price it would have to round.
    """
    try:
        if not _PRICE.match(text):
            raise InvalidOperation
        value = Decimal(text) * TICKS_PER_DOLLAR
    except InvalidOperation:
        raise BadRequest(f"price must be a dollar string like '0.5600', got {text!r}") from None
    if value != value.to_integral_value() or not 0 < value < TICKS_PER_DOLLAR:
        raise BadRequest(f"price {text} must be strictly between 0 and 1 on a $0.0001 grid")
    return int(value)
