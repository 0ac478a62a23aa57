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

Per connection there is one *supervisor* task. It opens the socket (fresh upgrade
headers from `_authenticate()` on every attempt), resubscribes the connection's
markets, and then runs two child tasks until either ends:

* the reader -- the only task that ever calls `receive()` on that socket. It stamps
  each frame once with `time.time_ns()`, counts it, and hands it to
  `_handle_message`. It never waits on a consumer.
* the housekeeper -- wakes every `watchdog_interval` (or when asked) to run the
  per-market staleness watchdog, to escalate snapshot requests that did not land
  in `resync_timeout`, to apply the connection-wide `receive_timeout`, to send
  venue keep-alives, and to flush frames queued by synchronous code.

Whatever ends a session -- the peer's CLOSE, a CLOSED or ERROR frame, aiohttp's own
ping/pong heartbeat failing (dead peer), a receive timeout, a send that could not
be written within `send_timeout` (a peer that stopped reading would otherwise hold
the sender, and with it the timers, forever), or a resync that could not be
repaired -- takes the same path: the supervisor cancels both children,
closes the socket, marks the connection's books STALE (and emits that), waits an
exponential backoff with jitter (reset only once a session stayed up for
`healthy_after` seconds), and connects again. There is no detached reconnect task
and no second reader. Handshakes refused with 401/403 are counted; after
`max_auth_failures` in a row the client fails with `WebSocketAuthError`, which
`connect()` raises and every `stream_prices` consumer receives -- a stream never
ends silently, it ends cleanly only when the client is closed.

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
ladder starts again after one more `resync_timeout`. The watchdog marks a LIVE
market STALE when it had no data for `stale_after` seconds and starts the same
ladder; a subclass that *knows* a book is wrong (sequence gap, impossible level)
calls `_resync(market_ids, reason)`, which drops the levels (status RESYNCING,
emitted once, so no price is ever published from a book known to be wrong) and
starts it too.

Hot path
--------
reader -> `_handle_message(data, recv_ns)` -> book update -> `_emit(book, recv_ns)`
when the book says its top may have changed. `_emit` builds the `MarketPrice`,
compares it with the last one emitted for that market (top of book, sizes, status,
last trade) and only on a real change stores it and hands it to the consumers.
Stream consumers get a `LatestPriceQueue` each (latest price per market wins,
bounded, never blocks the reader); listener callbacks are called inline and must
be quick. Problems are counted every time but logged through a per-kind limiter
(`LogLimiter`): a venue that starts sending a new message type, or a handler bug
that trips on every frame, must cost a counter increment per frame, not a log
line (a log record costs more than handling the frame).

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
  the market is gone), ``_expect_snapshots`` (a snapshot was asked for by other means).
* ``_on_connected(connection)`` / ``_on_disconnected(connection)``: reset per-session
  venue state (e.g. Kalshi sids restart on every connection).
* ``_keepalive() -> list[str]``: application-level pings sent every
  ``keepalive_interval`` seconds (Polymarket's text "PING"); protocol-level pings are
  answered by aiohttp (autoping) and our own protocol pings run every
  ``ping_interval`` seconds (aiohttp heartbeat; no PONG within half of it = dead peer).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import aiohttp
from aiohttp import WSMsgType

from markets.book import LocalOrderBook
from markets.models import MarketPrice, Platform, PriceStatus
from markets.price_queue import LatestPriceQueue, QueueClosed

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_LIVE = PriceStatus.LIVE
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_ENDED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})
_AUTH_STATUSES = frozenset({401, 403})

PriceCallback = Callable[[MarketPrice], None]


class LogLimiter:
    """Lets the first occurrence of each kind of problem through, then one per
    `interval` seconds, reporting how many were held back in between.

    Kinds are fixed strings chosen by the code (rejection reasons and the like),
    never text from the wire, so the table stays as small as the code's vocabulary.
    """

    __slots__ = ("interval", "_next", "_held")

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def allow(self, kind: str) -> int | None:
        """None: do not log this one. Otherwise log it, with the returned count of
        occurrences held back since the last line of this kind."""
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._held[kind] += 1
            return None
        self._next[kind] = now + self.interval
        return self._held.pop(kind, 0)


class WebSocketAuthError(Exception):
    """The venue refused the WebSocket handshake (401/403) max_auth_failures times in a row."""


class ClientClosedError(RuntimeError):
    """The client was closed; it cannot connect or subscribe again."""


@dataclass(slots=True)
class ClientStats:
    """Counters a worker reads for its status report.

    `rejected` counts bad frames by reason (malformed JSON, unknown type, a wrong
    field, an impossible level, ...); `dropped` counts frames discarded on purpose
    (duplicates, deltas that arrive while a snapshot is awaited, frames for a market
    just unsubscribed). `bytes` counts characters of text frames (JSON is ASCII, so
    that is bytes). `last_message_ns` is the receive time of the last data frame per
    market.
    """

    messages: int = 0
    bytes: int = 0
    connects: int = 0
    reconnects: int = 0
    resyncs: int = 0
    stale_trips: int = 0
    gaps: int = 0
    listener_errors: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    venue_errors: Counter[str] = field(default_factory=Counter)
    handshake_failures: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    last_message_ns: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """Plain-data copy (safe to serialize or compare later)."""
        return {
            "messages": self.messages,
            "bytes": self.bytes,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "resyncs": self.resyncs,
            "stale_trips": self.stale_trips,
            "gaps": self.gaps,
            "listener_errors": self.listener_errors,
            "rejected": dict(self.rejected),
            "dropped": dict(self.dropped),
            "venue_errors": dict(self.venue_errors),
            "handshake_failures": dict(self.handshake_failures),
            "disconnects": dict(self.disconnects),
            "last_message_ns": dict(self.last_message_ns),
        }


class WebSocketConnection:
    """One supervised socket and the markets subscribed over it (see the module docstring)."""

    def __init__(self, client: BaseWebSocketClient, index: int) -> None:
        self.client = client
        self.name = f"{client.platform}-ws-{index}"
        self.markets: set[str] = set()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sessions = 0
        self.connected_ns = 0
        self.last_frame_ns = 0
        self.established: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox: list[str] = []
        self._drop_reason: str | None = None
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- sending -----------------------------------------------------------------

    def queue(self, frames: Iterable[str]) -> None:
        """Queue frames from synchronous code; the reader or housekeeper sends them next."""
        if self.ws is not None:
            self._outbox.extend(frames)
            self._wake.set()

    async def send(self, frames: Iterable[str]) -> None:
        """Send now (after anything already queued). Without a socket, or on one that
        is going down, frames are lost, which is fine: every session starts by
        resubscribing everything."""
        ws = self.ws
        if ws is not None:
            self._outbox.extend(frames)
            await self._flush(ws)

    async def _flush(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send the outbox in order; the lock keeps batches from interleaving when a
        send waits for the socket to drain. A drain that does not come within
        `send_timeout` (the peer stopped reading) ends the session: waiting longer
        would hold the housekeeper, and through the lock the reader, indefinitely."""
        async with self._send_lock:
            frames, self._outbox = self._outbox, []
            try:
                async with asyncio.timeout(self.client.send_timeout):
                    for frame in frames:
                        await ws.send_str(frame)
            except TimeoutError:
                log.warning("%s: peer not reading; %d frame(s) unsent after %.3f s", self.name,
                            len(frames), self.client.send_timeout)
                self.request_reconnect("send_timeout")
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
                log.debug("%s: send failed (%s); the next session resubscribes", self.name, exc)

    def request_reconnect(self, reason: str) -> None:
        """Ask the supervisor to end this session and reconnect (safe from sync code)."""
        if self.ws is not None and self._drop_reason is None:
            self._drop_reason = reason
            self._wake.set()

    # -- supervision -------------------------------------------------------------

    async def _supervise(self) -> None:
        client = self.client
        loop = asyncio.get_running_loop()
        attempt = 0
        auth_failures = 0
        try:
            while True:
                try:
                    ws = await self._open()
                except aiohttp.WSServerHandshakeError as exc:
                    client.stats.handshake_failures[str(exc.status)] += 1
                    if exc.status in _AUTH_STATUSES:
                        auth_failures += 1
                        if auth_failures >= client.max_auth_failures:
                            raise WebSocketAuthError(
                                f"{client.platform} WebSocket handshake to {client.url} refused with "
                                f"HTTP {exc.status} ({exc.message}) {auth_failures} times in a row; "
                                "check the API key id, the private key, and that both belong to "
                                "this environment") from None
                    log.warning("%s: handshake refused: HTTP %s %s", self.name, exc.status, exc.message)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    client.stats.handshake_failures[type(exc).__name__] += 1
                    log.warning("%s: cannot connect to %s: %r", self.name, client.url, exc)
                else:
                    auth_failures = 0
                    started = loop.time()
                    await self._run_session(ws)
                    if loop.time() - started >= client.healthy_after:
                        attempt = 0
                delay = client._backoff_delay(attempt)
                attempt += 1
                log.info("%s: reconnecting in %.3f s (attempt %d)", self.name, delay, attempt)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an auth failure, or a bug: fail loudly, never silently
            if not isinstance(exc, WebSocketAuthError):
                log.exception("%s: supervisor failed", self.name)
            client._fail(self, exc)

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        client = self.client
        headers = await client._authenticate()
        async with asyncio.timeout(client.connect_timeout):
            return await client._http().ws_connect(
                client.url,
                headers=headers,
                autoping=True,
                heartbeat=client.ping_interval,
                max_msg_size=client.max_msg_size,
                compress=client.compress,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=client.close_timeout),
            )

    async def _run_session(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        client = self.client
        now = time.time_ns()
        self.ws = ws
        self.connected_ns = self.last_frame_ns = now
        self._drop_reason = None
        client.stats.connects += 1
        if self.sessions:
            client.stats.reconnects += 1
        self.sessions += 1
        reason = "stopped"
        try:
            client._connection_up(self, now)
            if not self.established.done():
                self.established.set_result(None)
            await self._flush(ws)
            reason = await self._serve(ws)
        finally:
            self.ws = None
            self._outbox.clear()
            client._connection_down(self, reason)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(client.close_timeout):
                    await ws.close()

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Run reader and housekeeper until one of them ends; return why."""
        reader = asyncio.create_task(self._read(ws), name=f"{self.name}-reader")
        keeper = asyncio.create_task(self._housekeep(ws), name=f"{self.name}-housekeeper")
        try:
            done, _ = await asyncio.wait((reader, keeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            keeper.cancel()
            await asyncio.gather(reader, keeper, return_exceptions=True)
        finished = done.pop()
        if finished.cancelled():
            return "stopped"
        error = finished.exception()
        if error is not None:
            log.error("%s: session task failed: %r", self.name, error, exc_info=error)
            return "internal_error"
        return finished.result()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """The only receive loop of this socket. Returns why the socket ended."""
        client = self.client
        stats = client.stats
        handle = client._handle_message
        receive = ws.receive
        while True:
            msg = await receive()
            kind = msg.type
            if kind is _TEXT:
                data = msg.data
            elif kind is _BINARY:
                try:
                    data = msg.data.decode()
                except UnicodeDecodeError:
                    client._reject("binary_not_utf8", len(msg.data), "")
                    continue
            elif kind in _ENDED:
                log.warning("%s: closed by peer (code %s)", self.name, ws.close_code)
                return "peer_closed"
            elif kind is WSMsgType.ERROR:
                error = msg.data
                if isinstance(error, aiohttp.WebSocketError) and error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                    client._reject("oversized", error, "")
                    return "oversized_frame"
                log.warning("%s: socket error: %r", self.name, error)
                return "socket_error"
            else:
                continue
            recv_ns = time.time_ns()
            stats.messages += 1
            stats.bytes += len(data)
            self.last_frame_ns = recv_ns
            try:
                handle(data, recv_ns)
            except Exception:
                stats.rejected["handler_error"] += 1
                held = client._log_limit.allow("handler_error")
                if held is not None:
                    log.exception("%s: handler failed on frame %.200s (%d similar not logged)",
                                  self.name, data, held)
            if self._outbox:
                await self._flush(ws)

    async def _housekeep(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Timers of one session: watchdog, resync deadlines, receive timeout, keep-alives."""
        client = self.client
        wake = self._wake
        receive_timeout_ns = None if client.receive_timeout is None else int(client.receive_timeout * _NS)
        keepalive_ns = None if client.keepalive_interval is None else int(client.keepalive_interval * _NS)
        next_keepalive = self.connected_ns + (keepalive_ns or 0)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(client.watchdog_interval):
                    await wake.wait()
            wake.clear()
            now = time.time_ns()
            if self._drop_reason is None:
                if (receive_timeout_ns is not None and self.markets
                        and now - self.last_frame_ns > receive_timeout_ns):
                    log.warning("%s: no frame for %.3f s", self.name, (now - self.last_frame_ns) / _NS)
                    self._drop_reason = "receive_timeout"
                else:
                    client._check_markets(self, now)
            if self._drop_reason is not None:
                return self._drop_reason
            if keepalive_ns is not None and now >= next_keepalive:
                self._outbox.extend(client._keepalive())
                next_keepalive = now + keepalive_ns
            if self._outbox:
                await self._flush(ws)


class BaseWebSocketClient(abc.ABC):
    """Venue-neutral streaming client; see the module docstring for the design.

    Options (seconds unless noted): `receive_timeout` (no frame at all on a
    connection with markets -> reconnect; None disables), `stale_after` (per-market
    watchdog), `resync_timeout` (how long a snapshot may take before the next
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
    ) -> None:
        for name, value in (("stale_after", stale_after), ("resync_timeout", resync_timeout),
                            ("backoff_initial", backoff_initial), ("backoff_max", backoff_max),
                            ("connect_timeout", connect_timeout), ("close_timeout", close_timeout),
                            ("send_timeout", send_timeout),
                            ("receive_timeout", receive_timeout), ("ping_interval", ping_interval),
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
                            ("resync_attempts", resync_attempts)):
            if count < 1:
                raise ValueError(f"{name} must be >= 1, got {count!r}")
        self.url = url
        self.receive_timeout = receive_timeout
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
        self.stats = ClientStats()
        self._session = session
        self._owns_session = session is None
        self._connections: list[WebSocketConnection] = []
        self._books: dict[str, LocalOrderBook] = {}
        self._conn_of: dict[str, WebSocketConnection] = {}
        self._latest: dict[str, MarketPrice] = {}
        self._awaiting: dict[str, tuple[int, int]] = {}  # market -> (deadline ns, attempt)
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
            connection.markets.update(ids)
            if connection.connected:
                self._expect_snapshots(ids, 0, now)
                await connection.send(self._build_subscribe_message(ids))
            connection.start()

    async def unsubscribe(self, market_ids: Iterable[str]) -> None:
        """Unsubscribe on the wire and forget the books, prices and counters of the markets."""
        by_connection: dict[WebSocketConnection, list[str]] = {}
        for market_id in dict.fromkeys(market_ids):
            connection = self._conn_of.get(market_id)
            if connection is not None:
                by_connection.setdefault(connection, []).append(market_id)
        for connection, ids in by_connection.items():
            frames = self._build_unsubscribe_message(ids)
            connection.markets.difference_update(ids)
            for market_id in ids:
                del self._books[market_id]
                del self._conn_of[market_id]
                self._latest.pop(market_id, None)
                self._awaiting.pop(market_id, None)
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
        """Publish the book's top if it differs from the last emitted one (hot path)."""
        price = book.to_market_price(recv_ns)
        market_id = price.market_id
        if self._awaiting and price.status is _LIVE:  # a snapshot landed: the wait is over
            self._awaiting.pop(market_id, None)
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

    def _resync(self, market_ids: Iterable[str], reason: str, *, restart: bool = False) -> None:
        """The books of these markets are known to be wrong: drop their levels (RESYNCING,
        emitted once) and ask for fresh snapshots. A market whose snapshot is already
        on its way keeps that request, unless `restart` (the request is known lost)."""
        now = time.time_ns()
        fresh: dict[WebSocketConnection, list[str]] = {}
        for market_id in market_ids:
            book = self._books.get(market_id)
            if book is None:
                continue
            book.mark_resyncing()
            self._emit(book, now)
            if restart or market_id not in self._awaiting:
                fresh.setdefault(self._conn_of[market_id], []).append(market_id)
        for connection, ids in fresh.items():
            held = self._log_limit.allow("resync")
            if held is not None:
                log.warning("%s: resyncing %d market(s) (%s): %s (%d similar not logged)", connection.name,
                            len(ids), reason, ", ".join(ids[:10]), held)
            self._request_snapshots(connection, ids, 0, now)

    def _retry_snapshots(self, market_ids: Iterable[str]) -> None:
        """A snapshot request failed outright: take the next step of the ladder now
        instead of waiting for its deadline."""
        by_connection: dict[WebSocketConnection, list[str]] = {}
        for market_id in market_ids:
            if market_id in self._books:
                by_connection.setdefault(self._conn_of[market_id], []).append(market_id)
        now = time.time_ns()
        for connection, ids in by_connection.items():
            self._advance(connection, ids, now)

    def _close_market(self, market_id: str, reason: str) -> None:
        """The venue says the market cannot be streamed (gone, not found): CLOSED, no retries."""
        book = self._books.get(market_id)
        if book is None:
            return
        log.warning("%s: market %s closed: %s", self.platform, market_id, reason)
        self._awaiting.pop(market_id, None)
        book.mark_closed()
        self._emit(book, time.time_ns())

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
        """Watchdog and snapshot deadlines for one connection's markets."""
        books, awaiting, last = self._books, self._awaiting, self.stats.last_message_ns
        since = now - self._stale_after_ns
        stale: list[str] = []
        expired: list[str] = []
        for market_id in connection.markets:
            entry = awaiting.get(market_id)
            if entry is not None:
                if now >= entry[0]:
                    expired.append(market_id)
            elif books[market_id].status is _LIVE and last.get(market_id, connection.connected_ns) < since:
                stale.append(market_id)
        if stale:
            self.stats.stale_trips += len(stale)
            log.warning("%s: no data for %.3f s on %d market(s): %s", connection.name, self.stale_after,
                        len(stale), ", ".join(stale[:10]))
            for market_id in stale:
                book = books[market_id]
                book.mark_stale()
                self._emit(book, now)
            self._request_snapshots(connection, stale, 0, now)
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
        only if nothing on the connection is LIVE (see "Snapshots and resyncs")."""
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

    def _backoff_delay(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** min(attempt, 32))
        return self._rng.uniform(ceiling / 2, ceiling)
