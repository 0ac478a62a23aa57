"""KalshiWebSocketClient: exact Kalshi order books over the v2 WebSocket.

Wire facts this relies on (protocols/kalshi.md §3-§6): a signed upgrade
(`GET /trade-api/ws/v2`, fresh signature per attempt); commands
``{"id", "cmd", "params"}``; data frames ``{"type", "sid", "seq", "msg"}`` with
`sid`/`seq` at the top level; `seq` per subscription, the snapshot consuming one;
`orderbook_delta` carrying a *change* of quantity at one level of a bids-only book;
sids restart on every connection; errors 10, 17 and 25 end a subscription.

Subscriptions. Each `subscribe` command covers at most `markets_per_subscription`
markets (default 100) and gets its own sid per channel. The venue limits commands
(error 27) and markets (error 26) per connection without publishing the numbers
(protocols/kalshi.md 7.2 and appendix), so thousands of markets must go out in
few commands: 2,000 markets are 20 subscribes, not 2,000. The price is that a seq
gap only says that *some* frame of the sid was lost, so it costs a snapshot of
every market of the sid (one `get_snapshot` command); gaps are rare on a healthy
connection, command storms are not. Dynamic adds on a live connection are new
`subscribe` commands (never `add_markets`), which keeps "a sid's markets" fixed
from its `subscribed` ack on.

Command pacing. Every frame the client sends is a command, and they leave through
a token bucket of `command_burst` commands refilled at `command_rate` per second;
the rest wait, in order, in the connection's outbox. Error 27 ("Too many
requests") means the venue did not execute the command: nothing more is sent for
a jittered, doubling backoff (`markets.backoff`, from `backoff_initial`, capped at
half the `resync_timeout` so the markets' snapshot deadlines survive it), then
the command goes again, and the client's own rate is halved (once per backoff;
each accepted command wins back a little, up to `command_rate`), so a budget set
above the venue's converges on it instead of overrunning it after every hold.
Snapshot requests held back by the budget start their `resync_timeout` only when
they are written. Error 26 ("Subscription market limit exceeded") means this
connection holds all the markets the venue allows: the refused markets are
listed in `refused_markets`, logged as such, and not retried at once (their
snapshot ladder retries at its own pace, in case markets were dropped since).
Kalshi carries everything on one connection here, so spreading them is the
caller's move (another client, i.e. another worker).
`use_yes_price` is always sent explicitly, and every book is built with the same
flag, because the venue has announced that the default will flip.

Integrity. A gap, a negative level, a delta the book cannot take, or a frame
rejected after it consumed a seq (the update is lost) puts the affected books in
RESYNCING (one status record is emitted, no price from a wrong book) and asks for
`update_subscription`/`get_snapshot`; if that fails or times out the market is
unsubscribed and subscribed again, alternately, until the base class's
`resync_attempts` are used up. A frame whose seq equals the sid's last one is a
duplicate (the venue repeats a frame right after itself) and is dropped; one below
it means the numbering the client holds is wrong (a bogus jump ahead would make
every later frame look like a duplicate) and is handled like a gap. Deltas for a market that awaits
a snapshot (in the base class's `_awaiting`: just subscribed, reconnected, found
stale or wrong) are dropped: the snapshot on its way, sent in seq order on the
same sid, already contains them.

Lifecycle. Every session also subscribes `market_lifecycle_v2` (option
`lifecycle`), which carries every market on the venue; events for our markets
close them (`deactivated`: paused; `determined`/`settled`: for good), reopen them
through a fresh snapshot (`activated`) or move their close time
(`close_date_updated`). A close itself has no event: the base class closes a
market when the close time it was given (`set_close_time`, from REST in the
hybrid client) passes. See markets/kalshi/lifecycle.py and markets/market_lifecycle.py.

Hostile input. Ids, sids and codes count only as JSON integers (`true` and `1.0`
equal 1 in Python and would otherwise act on command or sid 1); a `subscribed`
naming a sid already held, or a channel the command did not ask for, is refused;
an `unsubscribed` for a sid still held means the venue ended it, so its markets
resubscribe. A data frame for a market its sid never carried (`foreign_market`)
took one of the sid's seqs, so the sid's books resync; a ticker or trade print
counts only on a subscription of its own channel that carries the market. Any
frame refused after it took a seq resyncs its sid (`_consumed`).

Venue stamps (`ts_ms`) that are not non-negative integers are counted as
`bad_timestamp` and dropped, the update itself still applies: a consumer's
decoder would refuse a `MarketPrice` carrying one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from markets.backoff import backoff_delay
from markets.base_ws import BaseWebSocketClient
from markets.book import BookError, BookNotReady, KalshiOrderBook, LocalOrderBook
from markets.kalshi.auth import KalshiCredentials, signing_path
from markets.kalshi.lifecycle import CHANNEL as LIFECYCLE
from markets.kalshi.lifecycle import CLOSING_EVENTS, EVENT_FRAMES, REOPENING_EVENTS, LifecycleError, parse_lifecycle
from markets.models import Platform, PriceStatus, venue_timestamp_ms
from markets.ws_connection import WebSocketConnection

log = logging.getLogger(__name__)

KALSHI_WS_URL = "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
KALSHI_DEMO_WS_URL = "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2"

BOOK = "orderbook_delta"
TICKER = "ticker"
TRADE = "trade"
CHANNELS = frozenset({BOOK, TICKER, TRADE})
# Channels whose market set `update_subscription` can shrink; others are resubscribed.
_UPDATABLE = frozenset({BOOK})
# "the subscription is dead, resubscribe" (channel error, internal error, buffer overflow)
TERMINAL_ERRORS = frozenset({10, 17, 25})
MARKET_NOT_FOUND = 16
MARKET_LIMIT = 26
TOO_MANY_REQUESTS = 27
# The slowest the command rate gets after refusals (commands/s), and how much of the
# configured rate each accepted command wins back.
MIN_COMMAND_RATE = 0.5
RATE_RECOVERY = 0.05

_Frame = dict[str, Any]


@dataclass(slots=True, eq=False)
class _Subscription:
    """One acknowledged sid on the current connection."""

    sid: int
    channel: str
    tickers: list[str]
    seq: int = 0  # last seq seen; 0 = none yet (seq starts at 1)
    unproven_ns: int = 0
    """When an unreadable frame arrived that may have been this sid's (0: none since its last
    frame): until its next frame shows an unbroken seq, its books' continuity is not proven."""
    departed: set[str] = field(default_factory=set)
    """Tickers removed from this sid (delete_markets): their frames may still be in
    flight. A frame naming a ticker neither here nor in `tickers` is the venue's error."""


@dataclass(slots=True, eq=False)
class _Command:
    """A command awaiting its reply. `cancelled` holds, per channel, the markets
    dropped before a subscribe was acknowledged: its sid is trimmed on the ack."""

    kind: str
    tickers: list[str]
    channels: tuple[str, ...] = ()
    replies_left: int = 1
    cancelled: dict[str, set[str]] = field(default_factory=dict)
    cmd: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)  # channels of a subscribe already acknowledged


class KalshiWebSocketClient(BaseWebSocketClient):
    """Streams Kalshi books; see the module docstring. Uses one connection."""

    platform = Platform.KALSHI

    def __init__(self, credentials: KalshiCredentials, *, url: str = KALSHI_WS_URL,
                 use_yes_price: bool = True, channels: Iterable[str] = (BOOK,),
                 markets_per_subscription: int = 100, command_rate: float = 20.0,
                 command_burst: int = 40, lifecycle: bool = True, unproven_grace: float = 2.0,
                 **options: Any) -> None:
        chosen = tuple(dict.fromkeys(channels))
        unknown = [c for c in chosen if c not in CHANNELS]
        if unknown:
            raise ValueError(f"unsupported Kalshi channel(s) {unknown}; choose from {sorted(CHANNELS)}")
        if BOOK not in chosen:
            raise ValueError(f"channels must include {BOOK!r}: books are built from it")
        if markets_per_subscription < 1:
            raise ValueError(f"markets_per_subscription must be >= 1, got {markets_per_subscription}")
        if not command_rate > 0 or command_burst < 1:
            raise ValueError(f"command_rate must be > 0 and command_burst >= 1, "
                             f"got {command_rate!r} and {command_burst!r}")
        if not unproven_grace > 0:
            raise ValueError(f"unproven_grace must be > 0 seconds, got {unproven_grace!r}")
        if options.get("max_markets_per_connection") is not None:
            raise ValueError("Kalshi carries every subscription on one connection")
        # The venue pings every 10 s (protocols/kalshi.md §6): three missed pings end the session.
        super().__init__(url=url, **({"venue_ping_timeout": 30.0} | options))
        self.use_yes_price = use_yes_price
        self.channels = chosen
        self.markets_per_subscription = markets_per_subscription
        self.lifecycle = lifecycle
        """Subscribe `market_lifecycle_v2` on every session (see `_on_lifecycle`)."""
        self.unproven_grace = unproven_grace
        """Seconds a sid may stay without a frame after an unreadable one before it is resynced."""
        self.command_rate = command_rate
        self.command_burst = command_burst
        self.commands_sent = 0
        """Commands written to the socket (all sessions)."""
        self.refused_markets: set[str] = set()
        """Markets the venue refused with error 26 (this connection is full)."""
        self._rate = command_rate  # the current refill rate: halved by 27s, recovering
        self._budget = float(command_burst)
        self._budget_at = time.monotonic()
        self._hold_until = 0.0  # monotonic: after a 27, nothing goes out before this
        self._refusals = 0  # 27s since the last command the venue accepted
        self._queued: dict[str, list[str]] = {}  # unsent snapshot-requesting frame -> its markets
        self._credentials = credentials
        self._sign_path = signing_path(url) or "/trade-api/ws/v2"
        self._next_id = 1
        self._conn: WebSocketConnection | None = None
        self._consumed: _Subscription | None = None  # the sid whose seq the current frame took
        self._subs: dict[int, _Subscription] = {}
        self._book_sid: dict[str, int] = {}
        self._commands: dict[int, _Command] = {}
        self._handlers: dict[object, Callable[[_Frame, int], None]] = {
            "orderbook_delta": self._on_delta,
            "orderbook_snapshot": self._on_snapshot,
            "ticker": self._on_ticker,
            "trade": self._on_trade,
            "subscribed": self._on_subscribed,
            "unsubscribed": self._on_unsubscribed,
            "ok": self._on_ok,
            "error": self._on_error,
            LIFECYCLE: self._on_lifecycle,
            **{frame_type: self._on_lifecycle for frame_type in EVENT_FRAMES},
        }

    # -- connection and book hooks ------------------------------------------------

    async def _authenticate(self) -> dict[str, str]:
        return self._credentials.sign("GET", self._sign_path)

    def _new_book(self, market_id: str) -> KalshiOrderBook:
        return KalshiOrderBook(market_id, use_yes_price=self.use_yes_price)

    def _on_connected(self, connection: WebSocketConnection) -> None:
        self._reset_session()
        self._conn = connection

    def _connection_up(self, connection: WebSocketConnection, now: int) -> None:
        """After the books are resubscribed (they come first: they are what is waited
        for), the session's lifecycle subscription."""
        super()._connection_up(connection, now)
        if self.lifecycle:
            connection.queue(self._lifecycle_frames())

    def _lifecycle_frames(self) -> list[str]:
        """Subscribe every market's lifecycle: the channel takes no ticker filter, so the
        venue sends all of them and `_on_lifecycle` keeps ours."""
        return [self._command("subscribe", {"channels": [LIFECYCLE]}, "subscribe", [], (LIFECYCLE,))]

    def _on_disconnected(self, connection: WebSocketConnection) -> None:
        self._reset_session()

    def _on_quiet(self, connection: WebSocketConnection, market_ids: list[str], now: int) -> None:
        """A quiet market on an open session stays LIVE however long it is quiet: its
        sid's `seq` has been continuous (a gap resyncs at once) and the session is
        alive by heartbeats both ways (`markets.ws_connection`), so silence only
        means nothing traded. A market that no longer has an acknowledged sid has
        no such proof and takes the base's STALE-and-resync path."""
        subs, book_sid = self._subs, self._book_sid
        unproven = [t for t in market_ids if book_sid.get(t) not in subs]
        if unproven:
            super()._on_quiet(connection, unproven, now)

    def _reset_session(self) -> None:
        """Sids, seqs and pending commands belong to one connection."""
        self._conn = None
        self._subs.clear()
        self._book_sid.clear()
        self._commands.clear()
        self._queued.clear()  # the connection drops its unsent frames with the session

    # -- commands -------------------------------------------------------------------

    def _command(self, cmd: str, params: dict[str, Any], kind: str, tickers: list[str],
                 channels: tuple[str, ...] = (), cancelled: dict[str, set[str]] | None = None) -> str:
        command_id = self._next_id
        self._next_id += 1
        self._commands[command_id] = _Command(kind, tickers, channels, max(1, len(channels)),
                                              cancelled if cancelled is not None else {}, cmd, params)
        frame = orjson.dumps({"id": command_id, "cmd": cmd, "params": params}).decode()
        if kind == "get_snapshot" or (kind == "subscribe" and BOOK in channels):
            self._queued[frame] = tickers
        return frame

    def _frames_admitted(self, outbox: list[str]) -> int:
        """The command budget: a token bucket, and nothing at all during a 27 backoff."""
        now = time.monotonic()
        if now < self._hold_until:
            return 0
        self._budget = min(float(self.command_burst), self._budget + (now - self._budget_at) * self._rate)
        self._budget_at = now
        admitted = min(len(outbox), int(self._budget))
        self._budget -= admitted
        self.commands_sent += admitted
        if self._queued:
            now_ns = time.time_ns()
            for frame in outbox[:admitted]:
                tickers = self._queued.pop(frame, None)
                if tickers:
                    self._restart_snapshot_wait(tickers, now_ns)
        return admitted

    def _check_markets(self, connection: WebSocketConnection, now: int) -> None:
        """Snapshot requests still held by the command budget have not started waiting; sids
        left unproven by an unreadable frame for `unproven_grace` are resynced."""
        for tickers in self._queued.values():
            self._restart_snapshot_wait(tickers, now)
        grace = int(self.unproven_grace * 1_000_000_000)
        for sub in self._subs.values():
            if sub.unproven_ns and now - sub.unproven_ns >= grace:
                sub.unproven_ns = 0
                live = [t for t in sub.tickers
                        if (book := self._books.get(t)) is not None and book.status is PriceStatus.LIVE]
                if live:
                    self._resync(live, f"sid {sub.sid} silent since an unreadable frame")
        super()._check_markets(connection, now)

    def _accepted(self) -> None:
        """The venue executed a command: the next 27 starts the backoff from the bottom,
        and the rate creeps back toward `command_rate`."""
        self._refusals = 0
        if self._rate < self.command_rate:
            self._rate = min(self.command_rate, self._rate + RATE_RECOVERY * self.command_rate)

    def _subscribe_frames(self, tickers: list[str], channels: tuple[str, ...]) -> list[str]:
        size = self.markets_per_subscription
        frames = []
        for start in range(0, len(tickers), size):
            chunk = tickers[start:start + size]
            params: dict[str, Any] = {"channels": list(channels), "market_tickers": chunk}
            if BOOK in channels:
                params["use_yes_price"] = self.use_yes_price
            frames.append(self._command("subscribe", params, "subscribe", chunk, channels))
        return frames

    def _detach(self, tickers: Iterable[str], channels: Iterable[str], *, cancel_pending: bool = True) -> list[str]:
        """Frames removing `tickers` from their subscriptions on `channels`; local state
        changes at once, so later frames of a dropped sid count as unknown_sid. With
        `cancel_pending`, subscribes not yet acknowledged are marked so that their
        sids are trimmed when the ack arrives."""
        remove = set(tickers)
        channels = frozenset(channels)
        dead_sids: list[int] = []
        frames: list[str] = []
        for sid, sub in list(self._subs.items()):
            if sub.channel not in channels:
                continue
            gone = [t for t in sub.tickers if t in remove]
            if not gone:
                continue
            keep = [t for t in sub.tickers if t not in remove]
            if sub.channel == BOOK:
                self._forget_book_sid(sid, gone)
            if keep and sub.channel in _UPDATABLE:
                sub.tickers = keep
                sub.departed.update(gone)
                frames.append(self._command("update_subscription", {
                    "sid": sid, "action": "delete_markets", "market_tickers": gone},
                    "delete_markets", gone))
            else:
                dead_sids.append(sid)
                del self._subs[sid]
                if keep:
                    frames.extend(self._subscribe_frames(keep, (sub.channel,)))
        if dead_sids:
            frames.append(self._command("unsubscribe", {"sids": dead_sids}, "unsubscribe", []))
        if cancel_pending:
            for command in self._commands.values():
                if command.kind == "subscribe" and remove.intersection(command.tickers):
                    for channel in channels.intersection(command.channels):
                        command.cancelled.setdefault(channel, set()).update(remove.intersection(command.tickers))
        return frames

    def _forget_book_sid(self, sid: int, tickers: Iterable[str]) -> None:
        """Unmap `tickers` from `sid`; a ticker already resubscribed under a newer sid keeps that one."""
        book_sid = self._book_sid
        for ticker in tickers:
            if book_sid.get(ticker) == sid:
                del book_sid[ticker]

    def _build_subscribe_message(self, market_ids: list[str]) -> list[str]:
        return self._subscribe_frames(market_ids, self.channels)

    def _build_unsubscribe_message(self, market_ids: list[str]) -> list[str]:
        return self._detach(market_ids, self.channels)

    def _build_resync_message(self, market_ids: list[str], attempt: int) -> list[str]:
        """Even attempts: get_snapshot on the market's sid (a resubscription if it has
        none); odd attempts: unsubscribe + subscribe the book channel (the base class
        reconnects after `resync_attempts`)."""
        if attempt % 2:
            return self._detach(market_ids, (BOOK,)) + self._subscribe_frames(market_ids, (BOOK,))
        by_sid: dict[int, list[str]] = {}
        orphans: list[str] = []
        for ticker in market_ids:
            sid = self._book_sid.get(ticker)
            if sid is not None and sid in self._subs:
                by_sid.setdefault(sid, []).append(ticker)
            else:
                orphans.append(ticker)
        frames = [self._command("update_subscription", {
            "sid": sid, "action": "get_snapshot", "market_tickers": tickers}, "get_snapshot", tickers)
            for sid, tickers in by_sid.items()]
        if orphans:
            frames += self._detach(orphans, (BOOK,)) + self._subscribe_frames(orphans, (BOOK,))
        return frames

    # -- frames ---------------------------------------------------------------------

    def _lost_unknown_frame(self) -> None:
        """A frame nobody can read may have carried any subscription's next update. The next
        frame of that sid shows the gap by its seq (and resyncs it), so a busy sid needs
        nothing more; but a quiet market may send no next frame for minutes while its book
        stays LIVE on the strength of a seq that is now missing a frame. Every sid is marked
        unproven; one still without a frame after `unproven_grace` is resynced
        (`_check_markets`)."""
        now = time.time_ns()
        for sub in self._subs.values():
            if sub.channel == BOOK and not sub.unproven_ns:
                sub.unproven_ns = now

    def _handle_message(self, data: str, recv_ns: int) -> None:
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._reject("truncated_json" if exc.pos >= len(data) else "malformed_json", exc, data)
            self._lost_unknown_frame()
            return
        if type(frame) is not dict:
            self._reject("not_an_object", type(frame).__name__, data)
            self._lost_unknown_frame()
            return
        frame_type = frame.get("type")
        # Only a string names a handler: a list here is unhashable, and a number or
        # boolean must not pass for anything.
        handler = self._handlers.get(frame_type) if type(frame_type) is str else None
        if handler is None:
            self._reject("unknown_type", frame_type, data)
            return
        self._consumed = None
        try:
            handler(frame, recv_ns)
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            self._reject("bad_field", exc, data)
            if self._consumed is not None:
                # The frame took its sid's next seq, so the update it carried is lost.
                self._resync(self._consumed.tickers, "frame rejected after its seq")

    def _sequenced(self, frame: _Frame, snapshot_of: str | None) -> _Subscription | None:
        """Check the frame's seq against its sid; None when the frame must not be applied.

        A gap taints every market of the sid; a snapshot is complete for its own
        market, so it is still applied while the others are resynced.
        """
        sid, seq = frame["sid"], frame["seq"]
        if type(sid) is not int or type(seq) is not int or seq < 1:
            raise TypeError(f"sid and seq must be integers (seq >= 1), got {sid!r:.40} and {seq!r:.40}")
        sub = self._subs.get(sid)
        if sub is None or sub.channel != BOOK:
            self.stats.dropped["unknown_sid"] += 1
            return None
        last = sub.seq
        if last and seq != last + 1:
            if seq == last:  # the venue repeats a frame right after itself
                self.stats.dropped["duplicate"] += 1
                return None
            # A gap, or numbering that went back: then the last seq was wrong (a bogus
            # jump ahead would otherwise make every later frame look like a duplicate).
            self.stats.gaps += 1
            sub.seq = seq
            sub.unproven_ns = 0
            self._consumed = sub
            self._resync([t for t in sub.tickers if t != snapshot_of], f"sid {sid} seq {last} -> {seq}")
            return sub if snapshot_of is not None else None
        sub.seq = seq
        sub.unproven_ns = 0
        self._consumed = sub
        return sub

    def _on_snapshot(self, frame: _Frame, recv_ns: int) -> None:
        msg = frame.get("msg")
        ticker = msg.get("market_ticker") if type(msg) is dict else None
        sub = self._sequenced(frame, ticker if type(ticker) is str else None)
        if sub is None:
            return
        book = self._named_book(sub, ticker, frame)
        if book is None:
            return
        try:
            # An absent key is an empty side; a present one must be an array (the book checks).
            book.apply_snapshot(msg.get("yes_dollars_fp", ()), msg.get("no_dollars_fp", ()), self._stamp(msg))
        except BookError as exc:  # the book dropped its levels; ask again at once
            self._reject("bad_snapshot", exc)
            self._emit(book, recv_ns)
            self._retry_snapshots([ticker])
            return
        self.stats.last_message_ns[ticker] = recv_ns
        self._emit(book, recv_ns)

    def _on_delta(self, frame: _Frame, recv_ns: int) -> None:
        sub = self._sequenced(frame, None)
        if sub is None:
            return
        msg = frame.get("msg")
        ticker = msg.get("market_ticker") if type(msg) is dict else None
        book = self._named_book(sub, ticker, frame)
        if book is None:
            return
        if ticker in self._awaiting:
            self.stats.dropped["awaiting_snapshot"] += 1
            return
        ts_ms = msg.get("ts_ms")
        if type(ts_ms) is not int or ts_ms < 0:  # a decoded JSON int is always < MAX_VENUE_TS_MS
            ts_ms = self._stamp(msg)
        try:
            changed = book.apply_delta(msg["price_dollars"], msg["delta_fp"], msg["side"], ts_ms)
        except BookNotReady:
            # No snapshot on its way, yet none applied (a CLOSED market, say): the venue
            # broke its own ordering.
            self._reject("delta_before_snapshot", ticker)
            self._resync([ticker], "delta before snapshot")
            return
        except BookError as exc:
            self._reject("negative_level", exc)
            self._resync([ticker], "negative level")
            return
        except (KeyError, TypeError, ValueError) as exc:
            # The frame consumed a seq, so its update is lost: this book is now unknown.
            self._reject("bad_field", exc, frame)
            self._resync([ticker], "unreadable delta")
            return
        self.stats.last_message_ns[ticker] = recv_ns
        if changed:
            self._emit(book, recv_ns)

    def _stamp(self, msg: _Frame) -> int | None:
        """`ts_ms` if it is one (missing is fine); a bad one is counted and dropped."""
        try:
            return venue_timestamp_ms(msg.get("ts_ms"))
        except ValueError as exc:
            self._reject("bad_timestamp", exc)
            return None

    def _named_book(self, sub: _Subscription, ticker: object, frame: _Frame) -> LocalOrderBook | None:
        """The book a frame that took one of `sub`'s seqs names; None (counted) if none.

        A frame that names no market lost an update of some market of the sid, so
        every book of the sid resyncs.
        """
        if type(ticker) is str:
            return self._book_on(sub, ticker)
        self._reject("bad_field", f"{frame['type']} without a market_ticker", frame)
        self._resync(sub.tickers, f"unreadable {frame['type']}")
        return None

    def _book_on(self, sub: _Subscription, ticker: str) -> LocalOrderBook | None:
        """The book of `ticker` if `sub` carries it; None (counted) otherwise.

        A ticker the sid has dropped is a frame in flight. One it never carried is
        the venue's error, and on the book channel that frame also took one of the
        sid's seqs, which may have been meant for one of its markets: they resync.
        """
        if ticker in sub.tickers:
            book = self._books.get(ticker)
            if book is not None:
                return book
        elif ticker not in sub.departed:
            self._reject("foreign_market", f"sid {sub.sid} ({sub.channel}) carried {ticker!r:.100}")
            if sub.channel == BOOK:
                self._resync(sub.tickers, f"sid {sub.sid} carried a market it does not have")
            return None
        self.stats.dropped["unknown_market"] += 1
        return None

    def _on_ticker(self, frame: _Frame, recv_ns: int) -> None:
        msg = frame["msg"]
        self._set_last_trade(frame, msg["market_ticker"], msg.get("price_dollars"), recv_ns)

    def _on_trade(self, frame: _Frame, recv_ns: int) -> None:
        msg = frame["msg"]
        self._set_last_trade(frame, msg["market_ticker"], msg["yes_price_dollars"], recv_ns)

    def _set_last_trade(self, frame: _Frame, ticker: object, price: str | None, recv_ns: int) -> None:
        """A trade print, taken only from a subscription of the frame's own channel that
        carries the market: a stray frame must not change another market's last trade."""
        sid = frame.get("sid")
        sub = self._subs.get(sid) if type(sid) is int else None
        if sub is None or sub.channel != frame["type"]:
            self.stats.dropped["unknown_sid"] += 1
            return
        if type(ticker) is not str:
            raise TypeError(f"market_ticker must be a string, got {ticker!r:.80}")
        book = self._book_on(sub, ticker)
        if book is None or price is None:
            return
        book.set_last_trade(price)
        if book.is_ready:
            self._emit(book, recv_ns)

    # -- command replies -------------------------------------------------------------------

    def _on_subscribed(self, frame: _Frame, recv_ns: int) -> None:
        msg = frame["msg"]
        sid, channel = msg["sid"], msg["channel"]
        command = self._commands.get(_integer(frame.get("id")))  # type: ignore[arg-type]
        if command is None or command.kind != "subscribe":
            log.warning("kalshi: 'subscribed' (sid %.40r, %.40r) for no pending subscribe (id %.40r)",
                        sid, channel, frame.get("id"))
            return
        if _integer(sid) is None or sid < 1 or sid in self._subs or channel not in command.channels:
            # Taking it would map the command's markets onto a sid that is not theirs (or
            # replace another market's subscription); the snapshot ladder asks again.
            self._reject("bad_field", f"'subscribed' with sid {sid!r:.40} on channel {channel!r:.40} "
                         f"for a subscribe of {command.channels}", frame)
            return
        command.replies_left -= 1
        command.acked.add(channel)
        if command.replies_left <= 0:
            del self._commands[frame["id"]]
        sub = _Subscription(sid, channel, list(command.tickers))
        self._subs[sid] = sub
        if channel == BOOK:
            for ticker in sub.tickers:
                self._book_sid[ticker] = sid
        self._accepted()
        cancelled = command.cancelled.get(channel)
        if cancelled and self._conn is not None:
            self._conn.queue(self._detach(cancelled, (channel,), cancel_pending=False))

    def _on_unsubscribed(self, frame: _Frame, recv_ns: int) -> None:
        self._accepted()
        self._commands.pop(_integer(frame.get("id")), None)  # type: ignore[arg-type]
        sid = _integer(frame.get("sid"))
        if sid in self._subs:
            # We drop a sid locally before asking, so the venue ended one we still hold
            # (or a broken reply named it): its markets are not streamed any more.
            self._subscription_ended(sid, "unsubscribed")

    def _on_ok(self, frame: _Frame, recv_ns: int) -> None:
        self._accepted()
        self._commands.pop(_integer(frame.get("id")), None)  # type: ignore[arg-type]

    def _on_error(self, frame: _Frame, recv_ns: int) -> None:
        msg = frame["msg"]
        code, text = msg["code"], msg.get("msg")
        sid, command_id = frame.get("sid"), frame.get("id")
        # Counted by code; the table is keyed by the venue, so anything but a plausible
        # code shares one entry instead of growing it without bound.
        self.stats.venue_errors[str(code) if type(code) is int and 0 <= code < 1000 else "not_an_integer"] += 1
        held = self._log_limit.allow("venue_error")
        if held is not None:
            log.warning("kalshi: venue error %.20r %.200r (command %.20r, sid %.20r, market %.100r) "
                        "(%d similar not logged)", code, text, command_id, sid, msg.get("market_ticker"), held)
        command = self._commands.pop(_integer(command_id), None)  # type: ignore[arg-type]
        code = _integer(code)
        if command is not None:
            self._command_failed(command, code, msg.get("market_ticker"))
        elif code in TERMINAL_ERRORS:
            self._subscription_ended(sid, code)

    def _command_failed(self, command: _Command, code: object, market: object) -> None:
        """A snapshot request or subscribe was refused: take the next resync step now
        (bounded by the ladder); a market the venue does not know is CLOSED instead.
        A command refused for its rate (27) goes again after a backoff, whatever it
        was; a subscribe refused for the market limit (26) is reported, not retried.

        The error's `market_ticker` is optional; when the command named one market
        that market is the one.
        """
        if code == TOO_MANY_REQUESTS:
            self._resend_later(command)
            return
        if command.kind not in ("subscribe", "get_snapshot"):
            return
        tickers = [t for t in command.tickers if t in self._books]
        if code == MARKET_LIMIT:
            self._market_limit_reached(tickers)
            return
        if code == MARKET_NOT_FOUND:
            if market is None and len(command.tickers) == 1:
                market = command.tickers[0]
            if market in tickers:
                self._close_market(market, "market not found")  # type: ignore[arg-type]
                tickers.remove(market)  # type: ignore[arg-type]
        self._retry_snapshots(tickers)

    def _resend_later(self, command: _Command) -> None:
        """Error 27: the venue did not execute `command`. Hold every command for a
        jittered backoff that doubles with each refusal in a row, then send this one again."""
        now = time.monotonic()
        if now >= self._hold_until:  # the first refusal of a burst: slow down once
            self._rate = max(MIN_COMMAND_RATE, self._rate / 2)
            self._budget = 0.0
        delay = backoff_delay(self._refusals, self.backoff_initial,
                              min(self.backoff_max, self.resync_timeout / 2), self._rng)
        self._refusals += 1
        self._hold_until = max(self._hold_until, now + delay)
        if self._conn is None:
            return  # the session ended; the next one resubscribes everything
        params, channels = command.params, command.channels
        if command.acked:  # not the venue's way; never subscribe a channel twice (double deltas)
            channels = tuple(c for c in channels if c not in command.acked)
            if not channels:
                return
            params = {**params, "channels": list(channels)}
        self._conn.queue([self._command(command.cmd, params, command.kind, command.tickers,
                                        channels, command.cancelled)])

    def _market_limit_reached(self, tickers: list[str]) -> None:
        """Error 26: this connection holds as many markets as the venue allows."""
        self.refused_markets.update(tickers)
        log.error("kalshi: the venue refused %d market(s) with error 26 (subscription market limit "
                  "exceeded) after %d were subscribed on this connection: %s; they stay unstreamed "
                  "(retried only at the snapshot ladder's pace). Unsubscribe markets or stream "
                  "the rest from another client.", len(tickers), len(self._book_sid),
                  ", ".join(tickers[:10]))

    # -- lifecycle -------------------------------------------------------------------------

    def _on_lifecycle(self, frame: _Frame, recv_ns: int) -> None:
        """A frame of the lifecycle sid: every market's events, ours acted on.

        The sid's `seq` is checked so a lost event is at least counted (`stats.gaps`);
        nothing can be re-requested on this channel, but the close times set from REST
        and `close_date_updated` still close a market whose events were lost.
        """
        sid, seq = _integer(frame.get("sid")), _integer(frame.get("seq"))
        sub = self._subs.get(sid) if sid is not None else None
        if sub is None or sub.channel != LIFECYCLE:
            self.stats.dropped["unknown_sid"] += 1
            return
        if seq is not None:
            if sub.seq and seq != sub.seq + 1:
                if seq <= sub.seq:
                    self.stats.dropped["duplicate"] += 1
                    return
                self.stats.gaps += 1
                held = self._log_limit.allow("lifecycle_gap")
                if held is not None:
                    log.warning("kalshi: lifecycle events lost (sid %d seq %d -> %d); close times still "
                                "apply (%d similar not logged)", sid, sub.seq, seq, held)
            sub.seq = seq
        if frame.get("type") != LIFECYCLE:
            return  # event_lifecycle / event_fee_update: events, not markets
        try:
            event = parse_lifecycle(frame.get("msg"))
        except LifecycleError as exc:
            self._reject("bad_lifecycle", exc, frame)
            return
        ticker = event.ticker
        if ticker not in self._books:
            return  # another market's event: the channel carries the whole venue
        if event.event_type in CLOSING_EVENTS:
            self._close_market(ticker, event.event_type, CLOSING_EVENTS[event.event_type])
        elif event.event_type in REOPENING_EVENTS:
            self._reopen_market(ticker, event.event_type, REOPENING_EVENTS[event.event_type])
        elif event.close_ts is not None:
            self.set_close_time(ticker, event.close_ts)

    def _subscription_ended(self, sid: object, code: object) -> None:
        """Errors 10, 17 and 25 end a subscription: resubscribe its markets (all of them
        if the venue did not say which sid)."""
        sub = self._subs.pop(sid, None) if type(sid) is int else None
        if sub is None:
            if self._conn is not None:
                self._conn.request_reconnect(f"terminal_error_{code}")
        elif sub.channel == BOOK:
            self._forget_book_sid(sub.sid, sub.tickers)
            self._resync(sub.tickers, f"subscription {sub.sid} ended by error {code}", restart=True)
        elif self._conn is not None:
            self._conn.queue(self._lifecycle_frames() if sub.channel == LIFECYCLE
                             else self._subscribe_frames(sub.tickers, (sub.channel,)))


def _integer(value: object) -> int | None:
    """An id, sid or code as the venue means it: a JSON integer, else None.

    JSON ``true`` and ``1.0`` compare (and hash) equal to 1 in Python, so without
    this a malformed reply could act on command 1 or sid 1, i.e. on another market.
    """
    return value if type(value) is int else None
