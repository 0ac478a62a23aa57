"""BaseWebSocketClient: supervised venue sockets feeding exact local books.

Shape
-----
A client owns the books (one per subscribed market), the latest emitted price per
market, the consumers (stream queues and listener callbacks), the counters, and one
or more `WebSocketConnection`s. A connection owns exactly one socket at a time and
the subset of markets subscribed over it; Kalshi uses one connection for
everything, Polymarket shards its tokens over several (`max_markets_per_connection`).
Every connection feeds the same books and the same emit point, so a consumer never
needs to know how the markets are spread over sockets.

Per connection there is one supervisor task with a reader and a housekeeper; how a
session runs and ends, and how it is reconnected, is told in `markets.ws_connection`.
The client keeps the market logic: the connection calls back into it when a session
starts (`_connection_up`: resubscribe), ends (`_connection_down`: books STALE), on
every frame (`_handle_message`) and on every housekeeping tick (`_check_markets`).
After `max_auth_failures` refused handshakes in a row the client fails with
`WebSocketAuthError`, which `connect()` raises and every `stream_prices` consumer
receives -- a stream never ends silently, it ends cleanly only when the client is
closed.

Snapshots and resyncs
---------------------
A market is *awaiting a snapshot* from the moment it is subscribed, reconnected,
found stale or found wrong until its book emits a LIVE price. While it waits, its
book is not known to be complete, so venue subclasses apply no incremental update
to it (``market_id in self._awaiting``): the snapshot on its way carries them. Each
wait has a deadline; on expiry the next attempt's frames come from
`_build_resync_message(market_ids, attempt)`. After `resync_attempts` attempts (or
when the hook returns []) the connection is reconnected -- unless another of its
markets is LIVE: then the connection demonstrably works, the fault is the market's,
and a reconnect would only take the healthy books down with it, so the market's
ladder starts again after one more `resync_timeout`. A market with no data for
`stale_after` seconds is only *quiet*: silence alone is not staleness (most real
markets go minutes without a change), so the watchdog hands it to the venue's
`_on_quiet`, which keeps it LIVE when the venue proves the book another way
(Kalshi's continuous `seq`, a Polymarket REST check) and otherwise marks it STALE
("unknown", the default) and starts the same ladder. Whether a *connection* is
alive is the connection's business (frames, protocol pings and pongs; see
`markets.ws_connection`). A subclass that *knows* a book is wrong (sequence gap, impossible level)
calls `_resync(market_ids, reason)`, which drops the levels (status RESYNCING,
emitted once, so no price is ever published from a book known to be wrong) and
starts it too. A crossed or locked book (bid >= ask) is never published: `_emit`
republishes the last good top as STALE for a grace of `crossed_grace_updates`
updates or `crossed_grace` seconds (a venue can disagree with itself for a moment),
then takes it for a wrong book and resyncs it.

Markets that end
----------------
A market that stops trading is published CLOSED once and then left alone: it is
unsubscribed on the wire, dropped from its connection's markets (so no reconnect
resubscribes it, no watchdog or snapshot request touches it, and nothing the venue
still sends for it can make it LIVE), while its book stays assigned for
`latest_price` and `unsubscribe`. What closes it: the venue (`_close_market` from a
venue hook: not found, paused, determined, resolved), the caller (`close_market`,
e.g. from REST), or its close time (`set_close_time`; checked by every
housekeeping tick, because a Kalshi close has no event at all). Why it closed
decides what reopens it (`markets.market_lifecycle.Closure`); a reopened market
goes RESYNCING and is LIVE again only from a fresh snapshot.

Hot path
--------
reader -> `_handle_message(data, recv_ns)` -> book update -> `_emit(book, recv_ns)`
when the book says its top may have changed. `_emit` builds the `MarketPrice`,
compares it with the last one emitted for that market (top of book, sizes, status,
last trade) and only on a real change stores it and hands it to the consumers.
Stream consumers get a `LatestPriceQueue` each (latest price per market wins,
bounded, never blocks the reader); listener callbacks are called inline and must
be quick. Problems are counted in `ClientStats` and logged at a bounded rate
(`LogLimiter`; see `markets.ws_stats` for why).

Extension points (what a venue subclass implements)
--------------------------------------------------
* ``platform`` class attribute.
* ``async _authenticate() -> dict[str, str]``: upgrade headers, fresh per attempt
  ({} if none).
* ``_new_book(market_id) -> LocalOrderBook``: an empty (RESYNCING) book for a market.
* ``_build_subscribe_message(market_ids) -> list[str]``: frames subscribing the markets,
  used after every (re)connect for all of a connection's markets and for dynamic adds.
* ``_build_unsubscribe_message(market_ids) -> list[str]``: frames unsubscribing them;
  called before the books are forgotten, whether or not the socket is up (so venue
  state can be pruned), and sent only if it is.
* ``_build_resync_message(market_ids, attempt) -> list[str]``: frames asking for fresh
  snapshots, attempt 0, 1, ... < ``resync_attempts``; [] means "nothing left to try,
  reconnect". The default resubscribes (unsubscribe + subscribe) every attempt.
* ``_handle_message(data, recv_ns) -> None``: parse one frame (once), apply it, set
  ``self.stats.last_message_ns[market_id] = recv_ns`` for every market it carried data
  for (the watchdog reads it), call ``self._emit(book, recv_ns)`` when a top may have
  changed, count bad frames with ``self._reject(reason, detail, data)``. It runs
  synchronously in the reader: frames it must send go through ``_resync`` /
  ``_retry_snapshots`` or ``connection.queue(frames)`` (the connection handed to
  ``_on_connected``, or ``self._connection_of(market_id)``) and are flushed by the
  reader right after it returns. It must
  never raise for bad input; if it does anyway, the reader counts
  ``rejected["handler_error"]`` and carries on.
* Subclasses read ``self._books`` (market id -> book, created by ``subscribe``) and
  ``self._awaiting`` (market ids waiting for a snapshot: apply no incremental update
  to their books; only membership is theirs to test); other underscore state belongs
  to the base class. Multi-market hand-offs: ``_resync`` (book known wrong),
  ``_retry_snapshots`` (a snapshot request failed), ``_close_market`` (the venue says
  the market is gone, paused or settled), ``_reopen_market`` (it trades again),
  ``_expect_snapshots`` (a snapshot was asked for by other means).
* ``_on_connected(connection)`` / ``_on_disconnected(connection)``: reset per-session
  venue state (e.g. Kalshi sids restart on every connection).
* ``_on_quiet(connection, market_ids, now)``: usable books with no data for
  ``stale_after`` seconds on an open session (at most once per ``stale_after`` per
  market). Default: STALE and resync; override when the venue can prove a quiet
  book (keep it LIVE) or check it (``_mark_unknown`` makes it STALE meanwhile).
* ``_is_auth_refusal(status) -> bool``: whether a refused handshake blames our
  credentials (counted towards ``max_auth_failures``) or is a backoff.
* ``_keepalive() -> list[str]``: application-level pings sent every
  ``keepalive_interval`` seconds (Polymarket's text "PING"); the venue's protocol
  pings are answered by the connection's reader (and count as liveness), and our
  own protocol pings run every ``ping_interval`` seconds (aiohttp heartbeat;
  nothing received within half of it after a ping = dead peer).
* ``_frames_admitted(outbox) -> int``: how many queued frames may go out now, for a
  venue that limits its command rate (Kalshi); the rest wait, in order, and a
  subclass calls ``_restart_snapshot_wait`` for the snapshot requests among them.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from typing import ClassVar, Self

import aiohttp

from markets.backoff import backoff_delay
from markets.book import LocalOrderBook
from markets.market_lifecycle import Closure, MarketLifecycle
from markets.models import MarketPrice, Platform, PriceStatus
from markets.price_queue import LatestPriceQueue, QueueClosed
from markets.ws_connection import WebSocketConnection
from markets.ws_stats import ClientStats, LogLimiter

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_LIVE = PriceStatus.LIVE
_CLOSED = PriceStatus.CLOSED
_AUTH_STATUSES = frozenset({401, 403})

PriceCallback = Callable[[MarketPrice], None]


class WebSocketAuthError(Exception):
    """The venue refused the WebSocket handshake (401/403) max_auth_failures times in a row."""


class ClientClosedError(RuntimeError):
    """The client was closed; it cannot connect or subscribe again."""


class BaseWebSocketClient(abc.ABC):
    """Venue-neutral streaming client; see the module docstring for the design.

    Options (seconds unless noted): `receive_timeout` (no frame of any kind --
    data, replies, the venue's protocol pings, our pings' pongs -- on a connection
    with markets -> reconnect; None disables), `venue_ping_timeout` (no protocol
    PING from a venue that promises them -> reconnect; None, the default, for a
    venue that does not ping), `stale_after` (silence after which a
    market is handed to `_on_quiet`), `resync_timeout` (how long a snapshot may take before the next
    attempt), `resync_attempts` (attempts before reconnecting), `max_msg_size`
    (bytes; a bigger frame is rejected and the socket reconnected),
    `backoff_initial`/`backoff_max` (reconnect delays, doubled per failed attempt,
    jittered to 50-100 %), `healthy_after` (a session this long resets the
    backoff), `max_auth_failures` (consecutive 401/403 before WebSocketAuthError),
    `ping_interval` (our protocol pings; None disables), `keepalive_interval`
    (application pings from `_keepalive`; None disables), `connect_timeout`,
    `close_timeout`, `send_timeout` (a batch of frames not written by then means
    the peer stopped reading: reconnect), `watchdog_interval` (housekeeping
    period, default derived from the timeouts), `max_markets_per_connection`
    (None = one connection),
    `crossed_grace_updates` / `crossed_grace` (how many further updates, and how
    many seconds, a LIVE book may stay crossed or locked before it is taken for a
    wrong book and resynced; see `_emit`),
    `max_pending_prices` (per stream queue), `compress` (permessage-deflate window
    bits; 0 = off, which saves CPU on the hot path).
    """

    platform: ClassVar[Platform]

    def __init__(
        self,
        *,
        url: str,
        session: aiohttp.ClientSession | None = None,
        receive_timeout: float | None = 60.0,
        venue_ping_timeout: float | None = None,
        stale_after: float = 30.0,
        resync_timeout: float = 10.0,
        resync_attempts: int = 4,
        max_msg_size: int = 16 * 1024 * 1024,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        healthy_after: float = 30.0,
        max_auth_failures: int = 3,
        ping_interval: float | None = 10.0,
        keepalive_interval: float | None = None,
        connect_timeout: float = 10.0,
        close_timeout: float = 2.0,
        send_timeout: float = 10.0,
        watchdog_interval: float | None = None,
        max_markets_per_connection: int | None = None,
        max_pending_prices: int = 100_000,
        compress: int = 0,
        crossed_grace_updates: int = 5,
        crossed_grace: float = 1.0,
    ) -> None:
        for name, value in (("stale_after", stale_after), ("resync_timeout", resync_timeout),
                            ("crossed_grace", crossed_grace),
                            ("backoff_initial", backoff_initial), ("backoff_max", backoff_max),
                            ("connect_timeout", connect_timeout), ("close_timeout", close_timeout),
                            ("send_timeout", send_timeout),
                            ("receive_timeout", receive_timeout), ("ping_interval", ping_interval),
                            ("venue_ping_timeout", venue_ping_timeout),
                            ("keepalive_interval", keepalive_interval),
                            ("watchdog_interval", watchdog_interval)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        if max_markets_per_connection is not None and max_markets_per_connection < 1:
            raise ValueError(f"max_markets_per_connection must be >= 1 or None, got {max_markets_per_connection!r}")
        if healthy_after < 0:
            raise ValueError(f"healthy_after must be >= 0 seconds, got {healthy_after!r}")
        for name, count in (("max_auth_failures", max_auth_failures), ("max_msg_size", max_msg_size),
                            ("max_pending_prices", max_pending_prices),
                            ("resync_attempts", resync_attempts),
                            ("crossed_grace_updates", crossed_grace_updates)):
            if count < 1:
                raise ValueError(f"{name} must be >= 1, got {count!r}")
        self.url = url
        self.receive_timeout = receive_timeout
        self.venue_ping_timeout = venue_ping_timeout
        self.stale_after = stale_after
        self.resync_timeout = resync_timeout
        self.resync_attempts = resync_attempts
        self.max_msg_size = max_msg_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.healthy_after = healthy_after
        self.max_auth_failures = max_auth_failures
        self.ping_interval = ping_interval
        self.keepalive_interval = keepalive_interval
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.send_timeout = send_timeout
        self.watchdog_interval = watchdog_interval or min(
            1.0, max(0.01, min(t for t in (stale_after, resync_timeout, receive_timeout) if t) / 4))
        self.max_markets_per_connection = max_markets_per_connection
        self.max_pending_prices = max_pending_prices
        self.compress = compress
        self.crossed_grace_updates = crossed_grace_updates
        self.crossed_grace = crossed_grace
        self._crossed_grace_ns = int(crossed_grace * _NS)
        self._crossed: dict[str, tuple[int, int]] = {}  # market -> (first crossed ns, crossed updates)
        self.stats = ClientStats()
        self._session = session
        self._owns_session = session is None
        self._connections: list[WebSocketConnection] = []
        self._books: dict[str, LocalOrderBook] = {}
        self._conn_of: dict[str, WebSocketConnection] = {}
        self._latest: dict[str, MarketPrice] = {}
        self._awaiting: dict[str, tuple[int, int]] = {}  # market -> (deadline ns, attempt)
        self._quiet_checked: dict[str, int] = {}  # market -> when it was last handed to _on_quiet
        self._lifecycle = MarketLifecycle()
        self._sinks: list[tuple[frozenset[str] | None, PriceCallback]] = []
        self._streams: set[LatestPriceQueue] = set()
        self._stale_after_ns = int(stale_after * _NS)
        self._resync_timeout_ns = int(resync_timeout * _NS)
        self._rng = random.Random()
        self._log_limit = LogLimiter()
        self._closed = False
        self._failure: BaseException | None = None

    # -- venue hooks -------------------------------------------------------------

    @abc.abstractmethod
    async def _authenticate(self) -> dict[str, str]:
        """Headers for the upgrade request, computed fresh for every attempt."""

    @abc.abstractmethod
    def _new_book(self, market_id: str) -> LocalOrderBook:
        """An empty book for a newly subscribed market."""

    @abc.abstractmethod
    def _build_subscribe_message(self, market_ids: list[str]) -> list[str]:
        """Frames that subscribe `market_ids` on the current connection."""

    @abc.abstractmethod
    def _build_unsubscribe_message(self, market_ids: list[str]) -> list[str]:
        """Frames that unsubscribe `market_ids`; also the place to prune venue state."""

    @abc.abstractmethod
    def _handle_message(self, data: str, recv_ns: int) -> None:
        """Parse and apply one text frame (see the module docstring for the rules)."""

    def _build_resync_message(self, market_ids: list[str], attempt: int) -> list[str]:
        """Frames asking for fresh snapshots; [] once there is nothing left but reconnecting.

        Default: resubscribe (unsubscribe + subscribe) on every attempt.
        """
        return self._build_unsubscribe_message(market_ids) + self._build_subscribe_message(market_ids)

    def _on_connected(self, connection: WebSocketConnection) -> None:
        """A new session started on `connection`, before its markets are resubscribed."""

    def _on_disconnected(self, connection: WebSocketConnection) -> None:
        """The session on `connection` ended; its books are already marked STALE."""

    def _keepalive(self) -> list[str]:
        """Application-level keep-alive frames, sent every `keepalive_interval` seconds."""
        return []

    def _frames_admitted(self, outbox: list[str]) -> int:
        """How many of the queued frames may be written now (a venue that limits its
        command rate holds the rest back; they stay queued in order). Default: all."""
        return len(outbox)

    def _is_auth_refusal(self, status: int) -> bool:
        """Whether a handshake refused with HTTP `status` blames our credentials.

        Default: 401 and 403 do (a signed venue refusing the key); everything else
        (429, 5xx) is a backoff. A public feed overrides this: without credentials
        a 403/429 can only come from something in front of the venue (a CDN).
        """
        return status in _AUTH_STATUSES

    def _on_quiet(self, connection: WebSocketConnection, market_ids: list[str], now: int) -> None:
        """These usable books on an open session had no data for `stale_after` seconds.

        Silence alone proves nothing either way, so a venue that can prove a book
        another way overrides this (Kalshi: continuous `seq`; Polymarket: a REST
        check). This default is for a venue with no such proof: the book is unknown,
        so it is marked STALE (emitted once) and fresh snapshots are asked for.
        """
        self.stats.stale_trips += len(market_ids)
        log.warning("%s: no data for %.3f s on %d market(s): %s", connection.name, self.stale_after,
                    len(market_ids), ", ".join(market_ids[:10]))
        self._mark_unknown(market_ids, now)
        self._request_snapshots(connection, market_ids, 0, now)

    def _mark_unknown(self, market_ids: Iterable[str], now: int) -> None:
        """LIVE books whose truth nobody can vouch for right now: STALE, emitted once."""
        books = self._books
        for market_id in market_ids:
            book = books.get(market_id)
            if book is not None and book.status is _LIVE:
                book.mark_stale()
                self._emit(book, now)

    # -- public API ----------------------------------------------------------------

    @property
    def subscribed(self) -> set[str]:
        return set(self._books)

    @property
    def connections(self) -> tuple[WebSocketConnection, ...]:
        return tuple(self._connections)

    @property
    def closed(self) -> bool:
        return self._closed

    def book(self, market_id: str) -> LocalOrderBook | None:
        return self._books.get(market_id)

    def latest_price(self, market_id: str) -> MarketPrice | None:
        """The last price emitted for the market (None before its first snapshot)."""
        return self._latest.get(market_id)

    async def connect(self) -> None:
        """Start the connections and wait until each has completed a handshake.

        Transient failures (refused or dropped connections, 5xx) are retried with
        backoff, so wrap this in `asyncio.timeout` to bound the wait; repeated
        401/403 raise WebSocketAuthError.
        """
        self._check_usable()
        if not self._connections:
            self._add_connection()
        for connection in self._connections:
            connection.start()
        await asyncio.gather(*(asyncio.shield(c.established) for c in self._connections))

    async def close(self) -> None:
        """Stop every connection, end every stream cleanly, release the HTTP session."""
        if self._closed:
            return
        self._closed = True
        closed = ClientClosedError(f"{type(self).__name__} is closed")
        for connection in self._connections:
            if not connection.established.done():  # wakes a connect() still waiting
                connection.established.set_exception(closed)
                connection.established.exception()
        await asyncio.gather(*(c.stop() for c in self._connections))
        for queue in list(self._streams):
            queue.close()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def subscribe(self, market_ids: Iterable[str]) -> None:
        """Subscribe markets not yet subscribed; their books start RESYNCING until a snapshot."""
        self._check_usable()
        new = [m for m in dict.fromkeys(market_ids) if m not in self._books]
        for market_id in new:
            if not isinstance(market_id, str) or not market_id:
                raise ValueError(f"market ids must be non-empty strings, got {market_id!r}")
        now = time.time_ns()
        for connection, ids in self._assign(new).items():
            for market_id in ids:
                self._books[market_id] = self._new_book(market_id)
                self._conn_of[market_id] = connection
            ids = self._still_trading(ids, now)
            connection.markets.update(ids)
            if connection.connected and ids:
                self._expect_snapshots(ids, 0, now)
                await connection.send(self._build_subscribe_message(ids))
            connection.start()

    def set_close_time(self, market_id: str, when: datetime | float | None) -> None:
        """When the market stops trading (aware datetime or Unix seconds; None forgets it).

        The client closes the market itself when this passes, because the venue may
        not say so (Kalshi closes silently on the book channel). Works before or after
        `subscribe`; a close moved into the future reopens a market closed only by its
        close time (through a fresh snapshot). See `markets.market_lifecycle`.
        """
        close_ns = self._lifecycle.set_close_time(market_id, when)
        if close_ns is None:
            return
        now = time.time_ns()
        if close_ns > now:
            self._reopen_market(market_id, "close time moved into the future", Closure.CLOSE_TIME)
        elif market_id in self._books:
            self._close_market(market_id, "close_time passed", Closure.CLOSE_TIME)

    def close_market(self, market_id: str, reason: str, closure: Closure = Closure.FINAL) -> None:
        """The caller knows the market does not trade (e.g. its REST status): publish it
        CLOSED once and stop streaming it; before `subscribe`, it is remembered and the
        market is published CLOSED when subscribed, without a subscription on the wire."""
        self._close_market(market_id, reason, closure)

    async def unsubscribe(self, market_ids: Iterable[str]) -> None:
        """Unsubscribe on the wire and forget the books, prices, counters and known close
        times and closures of the markets (closed ones included)."""
        for connection, ids in self._by_connection(dict.fromkeys(market_ids)).items():
            frames = self._build_unsubscribe_message(ids)
            connection.markets.difference_update(ids)
            for market_id in ids:
                del self._books[market_id]
                del self._conn_of[market_id]
                self._latest.pop(market_id, None)
                self._awaiting.pop(market_id, None)
                self._quiet_checked.pop(market_id, None)
                self._crossed.pop(market_id, None)
                self._lifecycle.forget(market_id)
                self.stats.last_message_ns.pop(market_id, None)
            if connection.connected:
                await connection.send(frames)

    def add_listener(self, callback: PriceCallback) -> None:
        """Call `callback(price)` inline on every emitted change (keep it quick; errors are counted)."""
        self._sinks.append((None, callback))

    def remove_listener(self, callback: PriceCallback) -> None:
        self._sinks = [(accept, sink) for accept, sink in self._sinks if sink != callback]

    async def stream_prices(self, market_ids: Iterable[str]) -> AsyncIterator[MarketPrice]:
        """Subscribe and yield each change of top of book or status of these markets.

        Each stream has its own conflating queue: a slow consumer sees the latest
        price of every market, never an unbounded backlog. The stream ends when the
        client is closed (also while it is still connecting); a terminal failure
        (e.g. WebSocketAuthError) is raised. Leaving the stream does not unsubscribe
        (other consumers may share markets).
        """
        self._check_usable()
        ids = list(dict.fromkeys(market_ids))
        queue = LatestPriceQueue(self.max_pending_prices)
        sink = (frozenset(ids), queue.put)
        self._sinks.append(sink)
        self._streams.add(queue)
        try:
            try:
                await self.connect()
                await self.subscribe(ids)
            except ClientClosedError:
                return
            for market_id in ids:
                price = self._latest.get(market_id)
                if price is not None:
                    queue.put(price)
            while True:
                try:
                    price = await queue.get()
                except QueueClosed:
                    return
                yield price
        finally:
            self._streams.discard(queue)
            if sink in self._sinks:
                self._sinks.remove(sink)

    # -- for subclasses ------------------------------------------------------------

    def _emit(self, book: LocalOrderBook, recv_ns: int) -> None:
        """Publish the book's top if it differs from the last emitted one (hot path).

        No price from a crossed or locked book (bid >= ask) is ever published: the
        consumer keeps the last top it got, re-marked STALE (see `_withhold_crossed`).
        """
        price = book.to_market_price(recv_ns)
        market_id = price.market_id
        if self._awaiting and book.status is _LIVE:  # a snapshot landed: the wait is over
            self._awaiting.pop(market_id, None)
            if not self._awaiting:
                self._sessions_delivered()
        if book.is_crossed:
            withheld = self._withhold_crossed(book, price, recv_ns)
            if withheld is None:
                return
            price = withheld
        elif self._crossed:
            self._crossed.pop(market_id, None)
        prev = self._latest.get(market_id)
        if (prev is not None and prev.yes_bid == price.yes_bid and prev.yes_ask == price.yes_ask
                and prev.yes_bid_size == price.yes_bid_size and prev.yes_ask_size == price.yes_ask_size
                and prev.status is price.status and prev.last_trade == price.last_trade):
            return
        self._latest[market_id] = price
        for accept, sink in self._sinks:
            if accept is None or market_id in accept:
                try:
                    sink(price)
                except Exception:
                    self.stats.listener_errors += 1
                    held = self._log_limit.allow("listener_error")
                    if held is not None:
                        log.exception("price listener %r failed (%d similar not logged)", sink, held)

    def _withhold_crossed(self, book: LocalOrderBook, price: MarketPrice, now: int) -> MarketPrice | None:
        """What to publish instead of a crossed book's top; None: nothing.

        A crossing can be a moment's disagreement (the venue reports a sweep's new
        level before the removal of the one it took), so a LIVE book gets a grace of
        `crossed_grace_updates` further updates and `crossed_grace` seconds (the
        housekeeper enforces the time on a book that goes quiet while crossed); past
        it the book is wrong and is resynced. Meanwhile the consumer sees its last
        top again with the book's status, which `to_market_price` already reads as
        STALE (the first time, with no top yet, the sides are empty).
        """
        market_id = price.market_id
        if book.status is _LIVE:
            first_ns, updates = self._crossed.get(market_id, (now, -1))
            updates += 1
            if updates >= self.crossed_grace_updates or now - first_ns >= self._crossed_grace_ns:
                self._resync_crossed([market_id])
                return None
            self._crossed[market_id] = (first_ns, updates)
            self.stats.dropped["crossed_book"] += 1
        else:
            self._crossed.pop(market_id, None)
        prev = self._latest.get(market_id)
        if prev is None:
            return price._replace(yes_bid=None, yes_ask=None, yes_bid_size=None, yes_ask_size=None)
        return prev._replace(status=price.status, recv_ts_ns=now)

    def _resync_crossed(self, market_ids: list[str]) -> None:
        """Books that stayed crossed past the grace are wrong books: counted, resynced."""
        for market_id in market_ids:
            self._crossed.pop(market_id, None)
            self._reject("crossed_book", f"{market_id}: bid >= ask past {self.crossed_grace_updates} "
                         f"update(s) or {self.crossed_grace} s")
        self._resync(market_ids, "crossed book")

    def _expire_crossed(self, connection: WebSocketConnection, now: int) -> None:
        """The time half of the crossed-book grace, for books no update touches."""
        deadline = now - self._crossed_grace_ns
        expired = [m for m, (first_ns, _) in self._crossed.items()
                   if first_ns <= deadline and m in connection.markets]
        if expired:
            self._resync_crossed(expired)

    def _sessions_delivered(self) -> None:
        """Every awaited snapshot has landed: each open session has proved itself, so its
        reconnect backoff may start again from the bottom (`WebSocketConnection.delivered`)."""
        for connection in self._connections:
            if connection.connected:
                connection.delivered = True

    def _resync(self, market_ids: Iterable[str], reason: str, *, restart: bool = False) -> None:
        """The books of these markets are known to be wrong: drop their levels (RESYNCING,
        emitted once) and ask for fresh snapshots. A market whose snapshot is already
        on its way keeps that request, unless `restart` (the request is known lost)."""
        now = time.time_ns()
        fresh: list[str] = []
        for market_id in market_ids:
            book = self._books.get(market_id)
            if book is None or book.status is _CLOSED:
                continue
            book.mark_resyncing()
            self._emit(book, now)
            if restart or market_id not in self._awaiting:
                fresh.append(market_id)
        for connection, ids in self._by_connection(fresh).items():
            held = self._log_limit.allow("resync")
            if held is not None:
                log.warning("%s: resyncing %d market(s) (%s): %s (%d similar not logged)", connection.name,
                            len(ids), reason, ", ".join(ids[:10]), held)
            self._request_snapshots(connection, ids, 0, now)

    def _retry_snapshots(self, market_ids: Iterable[str]) -> None:
        """A snapshot request failed outright: take the next step of the ladder now
        instead of waiting for its deadline."""
        now = time.time_ns()
        for connection, ids in self._by_connection(market_ids).items():
            self._advance(connection, ids, now)

    def _close_market(self, market_id: str, reason: str, closure: Closure = Closure.FINAL) -> None:
        """The market does not trade (gone, settled, paused, past its close time): CLOSED,
        published once, unsubscribed on the wire and left out of reconnects, watchdog and
        snapshot requests. The book and its connection stay assigned (so `unsubscribe`
        and `_reopen_market` find them); `closure` says what may reopen it."""
        self._lifecycle.record_close(market_id, closure)
        book = self._books.get(market_id)
        connection = self._conn_of.get(market_id)
        if book is None or connection is None or (book.status is _CLOSED and market_id not in connection.markets):
            return  # not subscribed, or closed already
        log.info("%s: market %s closed: %s", self.platform, market_id, reason)  # routine, not a fault
        self._awaiting.pop(market_id, None)
        if market_id in connection.markets:
            connection.markets.discard(market_id)
            connection.queue(self._build_unsubscribe_message([market_id]))
        book.mark_closed()
        self._emit(book, time.time_ns())

    def _reopen_market(self, market_id: str, reason: str, closure: Closure) -> None:
        """The venue reopened a market closed for `closure` (a reactivation, a close moved
        into the future): its old levels are worthless, so it comes back RESYNCING and
        goes LIVE only from a fresh snapshot."""
        now = time.time_ns()
        if not self._lifecycle.reopen(market_id, closure, now):
            return
        book = self._books.get(market_id)
        connection = self._conn_of.get(market_id)
        if book is None or connection is None or book.status is not _CLOSED:
            return  # not subscribed: `subscribe` will find it open
        log.info("%s: market %s reopened: %s", self.platform, market_id, reason)
        connection.markets.add(market_id)
        book.mark_resyncing()
        self._emit(book, now)
        if connection.connected:
            self._expect_snapshots([market_id], 0, now)
            connection.queue(self._build_subscribe_message([market_id]))

    def _still_trading(self, market_ids: list[str], now: int) -> list[str]:
        """The markets not known to be closed; the others are closed here (CLOSED, once)."""
        trading = []
        for market_id in market_ids:
            closure = self._lifecycle.closed_reason(market_id, now)
            if closure is None:
                trading.append(market_id)
            else:
                self._close_market(market_id, f"known closed ({closure})", closure)
        return trading

    def _close_due(self, now: int) -> None:
        """Close the subscribed markets whose close time has come (no venue event needed)."""
        for market_id in self._lifecycle.due(now):
            if market_id in self._books:
                self._close_market(market_id, "close_time passed", Closure.CLOSE_TIME)

    def _reject(self, reason: str, detail: object, data: object = "") -> None:
        """Count a bad frame under `reason` (a fixed string, never wire text) and log
        why at a bounded rate. `detail` and the frame `data` (text or decoded) are only
        formatted when the line is actually written."""
        self.stats.rejected[reason] += 1
        held = self._log_limit.allow(reason)
        if held is not None:
            log.warning("%s: rejected frame (%s): %.300r; frame %.200s (%d similar not logged)",
                        self.platform, reason, detail, data, held)

    def _connection_of(self, market_id: str) -> WebSocketConnection | None:
        """The connection a market is subscribed over (for frames sent from sync code)."""
        return self._conn_of.get(market_id)

    # -- connection callbacks (market logic lives here, socket logic in the connection) --

    def _connection_up(self, connection: WebSocketConnection, now: int) -> None:
        self._on_connected(connection)
        self._close_due(now)
        ids = sorted(connection.markets)
        if ids:
            self._expect_snapshots(ids, 0, now)
            connection.queue(self._build_subscribe_message(ids))

    def _connection_down(self, connection: WebSocketConnection, reason: str) -> None:
        self.stats.disconnects[reason] += 1
        now = time.time_ns()
        for market_id in connection.markets:
            self._awaiting.pop(market_id, None)
            book = self._books[market_id]
            book.mark_stale()
            self._emit(book, now)
        self._on_disconnected(connection)

    def _check_markets(self, connection: WebSocketConnection, now: int) -> None:
        """Quiet markets and snapshot deadlines for one connection's markets.

        A market is *quiet* when its book is usable (LIVE, or STALE on a session that
        is up) and neither data nor a quiet check touched it for `stale_after`; it is
        handed to `_on_quiet` at most once per `stale_after`, so a venue hook that asks
        somebody (REST) is bounded by the watchdog itself."""
        self._close_due(now)
        if self._crossed:
            self._expire_crossed(connection, now)
        books, awaiting, last, checked = self._books, self._awaiting, self.stats.last_message_ns, self._quiet_checked
        since = now - self._stale_after_ns
        quiet: list[str] = []
        expired: list[str] = []
        for market_id in connection.markets:
            entry = awaiting.get(market_id)
            if entry is not None:
                if now >= entry[0]:
                    expired.append(market_id)
            elif (books[market_id].is_ready
                  and max(last.get(market_id, connection.connected_ns), checked.get(market_id, 0)) < since):
                quiet.append(market_id)
        if quiet:
            for market_id in quiet:
                checked[market_id] = now
            self._on_quiet(connection, quiet, now)
        if expired:
            log.warning("%s: snapshot not received within %.3f s for %d market(s): %s", connection.name,
                        self.resync_timeout, len(expired), ", ".join(expired[:10]))
            self._advance(connection, expired, now)

    def _advance(self, connection: WebSocketConnection, ids: list[str], now: int) -> None:
        """Move each market to the next attempt of its snapshot ladder."""
        by_attempt: dict[int, list[str]] = {}
        for market_id in ids:
            entry = self._awaiting.get(market_id)
            by_attempt.setdefault(0 if entry is None else entry[1] + 1, []).append(market_id)
        for attempt, group in sorted(by_attempt.items()):
            self._request_snapshots(connection, group, attempt, now)

    def _request_snapshots(self, connection: WebSocketConnection, ids: list[str], attempt: int,
                           now: int) -> None:
        """Send attempt `attempt` of the snapshot ladder; when none is left, reconnect
        only if nothing on the connection is LIVE (see "Snapshots and resyncs"). A closed
        market (no longer among the connection's markets) is never asked for."""
        ids = [m for m in ids if m in connection.markets]
        if not ids:
            return
        frames = self._build_resync_message(ids, attempt) if attempt < self.resync_attempts else []
        if frames:
            self.stats.resyncs += len(ids)
            self._expect_snapshots(ids, attempt, now)
            connection.queue(frames)
        elif self._carries_live_books(connection, ids):
            log.warning("%s: no snapshot after %d attempt(s) for %d market(s) (%s); the connection "
                        "carries live books, so retrying after %.3f s", connection.name, attempt,
                        len(ids), ", ".join(ids[:10]), self.resync_timeout)
            self._expect_snapshots(ids, -1, now)  # the next step after the pause is attempt 0
        else:
            connection.request_reconnect("resync_failed")

    def _carries_live_books(self, connection: WebSocketConnection, excluding: list[str]) -> bool:
        skip = set(excluding)
        books = self._books
        return any(books[m].status is _LIVE for m in connection.markets if m not in skip)

    def _expect_snapshots(self, ids: Iterable[str], attempt: int, now: int) -> None:
        deadline = now + self._resync_timeout_ns
        for market_id in ids:
            self._awaiting[market_id] = (deadline, attempt)

    def _restart_snapshot_wait(self, ids: Iterable[str], now: int) -> None:
        """The snapshot requests of these markets are only now on the wire (a command
        budget held them back): their `resync_timeout` counts from now, at the same
        attempt, so a queue of paced requests never expires into more requests."""
        deadline = now + self._resync_timeout_ns
        awaiting = self._awaiting
        for market_id in ids:
            entry = awaiting.get(market_id)
            if entry is not None:
                awaiting[market_id] = (deadline, entry[1])

    def _auth_error(self, refusal: aiohttp.WSServerHandshakeError, count: int) -> WebSocketAuthError:
        """Why the client gives up after `count` refused handshakes in a row; the
        client builds it because the credentials being blamed are the client's."""
        return WebSocketAuthError(
            f"{self.platform} WebSocket handshake to {self.url} refused with "
            f"HTTP {refusal.status} ({refusal.message}) {count} times in a row; "
            "check the API key id, the private key, and that both belong to "
            "this environment")

    def _fail(self, connection: WebSocketConnection, error: BaseException) -> None:
        """A connection cannot continue: every consumer learns why (credentials are shared,
        so this is client-wide)."""
        if self._failure is None:
            self._failure = error
        if not connection.established.done():
            connection.established.set_exception(error)
            connection.established.exception()  # retrieved here; connect() re-raises it
        for queue in list(self._streams):
            queue.close(error)

    # -- internals -------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise ClientClosedError(f"{type(self).__name__} is closed")

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _add_connection(self) -> WebSocketConnection:
        connection = WebSocketConnection(self, len(self._connections))
        self._connections.append(connection)
        return connection

    def _assign(self, market_ids: list[str]) -> dict[WebSocketConnection, list[str]]:
        """Spread new markets over connections, filling existing ones first."""
        limit = self.max_markets_per_connection
        assignment: dict[WebSocketConnection, list[str]] = {}
        for market_id in market_ids:
            target = next((c for c in self._connections
                           if limit is None or len(c.markets) + len(assignment.get(c, ())) < limit), None)
            if target is None:
                target = self._add_connection()
            assignment.setdefault(target, []).append(market_id)
        return assignment

    def _by_connection(self, market_ids: Iterable[str]) -> dict[WebSocketConnection, list[str]]:
        """Subscribed markets grouped by the connection that carries them, in the given order;
        ids not (or no longer) subscribed are skipped, as frames for them would be wrong."""
        conn_of = self._conn_of
        groups: dict[WebSocketConnection, list[str]] = {}
        for market_id in market_ids:
            connection = conn_of.get(market_id)
            if connection is not None:
                groups.setdefault(connection, []).append(market_id)
        return groups

    def _backoff_delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_initial, self.backoff_max, self._rng)
