"""KalshiWebSocketClient: exact Kalshi order books over the v2 WebSocket.

Wire facts this relies on (protocols/kalshi.md §3-§6): a signed upgrade
(`GET /trade-api/ws/v2`, fresh signature per attempt); commands
``{"id", "cmd", "params"}``; data frames ``{"type", "sid", "seq", "msg"}`` with
`sid`/`seq` at the top level; `seq` per subscription, the snapshot consuming one;
`orderbook_delta` carrying a *change* of quantity at one level of a bids-only book;
sids restart on every connection; errors 10, 17 and 25 end a subscription.

Subscriptions. Each `subscribe` command covers at most `markets_per_subscription`
markets (default 1) and gets its own sid per channel. One market per sid is the
default because a seq gap only says that *some* frame of the sid was lost: with one
market per sid a gap costs one snapshot instead of one per market of a shared sid.
Dynamic adds on a live connection are new `subscribe` commands (never
`add_markets`), which keeps "a sid's markets" fixed from its `subscribed` ack on.
`use_yes_price` is always sent explicitly, and every book is built with the same
flag, because the venue has announced that the default will flip.

Integrity. A gap, a negative level, a delta the book cannot take, or a frame
rejected after it consumed a seq (the update is lost) puts the affected books in
RESYNCING (one status record is emitted, no price from a wrong book) and asks for
`update_subscription`/`get_snapshot`; if that fails or times out the market is
unsubscribed and subscribed again, alternately, until the base class's
`resync_attempts` are used up. A frame whose seq is not above the sid's last one is
a duplicate and is dropped, not treated as a gap. Deltas for a market that awaits
a snapshot (in the base class's `_awaiting`: just subscribed, reconnected, found
stale or wrong) are dropped: the snapshot on its way, sent in seq order on the
same sid, already contains them.

Venue stamps (`ts_ms`) that are not non-negative integers are counted as
`bad_timestamp` and dropped, the update itself still applies: a consumer's
decoder would refuse a `MarketPrice` carrying one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from markets.base_ws import BaseWebSocketClient
from markets.book import BookError, BookNotReady, KalshiOrderBook
from markets.kalshi.auth import KalshiCredentials, signing_path
from markets.models import Platform, venue_timestamp_ms
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

_Frame = dict[str, Any]


@dataclass(slots=True, eq=False)
class _Subscription:
    """One acknowledged sid on the current connection."""

    sid: int
    channel: str
    tickers: list[str]
    seq: int = 0  # last seq seen; 0 = none yet (seq starts at 1)


@dataclass(slots=True, eq=False)
class _Command:
    """A command awaiting its reply. `cancelled` holds, per channel, the markets
    dropped before a subscribe was acknowledged: its sid is trimmed on the ack."""

    kind: str
    tickers: list[str]
    channels: tuple[str, ...] = ()
    replies_left: int = 1
    cancelled: dict[str, set[str]] = field(default_factory=dict)


class KalshiWebSocketClient(BaseWebSocketClient):
    """Streams Kalshi books; see the module docstring. Uses one connection."""

    platform = Platform.KALSHI

    def __init__(self, credentials: KalshiCredentials, *, url: str = KALSHI_WS_URL,
                 use_yes_price: bool = True, channels: Iterable[str] = (BOOK,),
                 markets_per_subscription: int = 1, **options: Any) -> None:
        chosen = tuple(dict.fromkeys(channels))
        unknown = [c for c in chosen if c not in CHANNELS]
        if unknown:
            raise ValueError(f"unsupported Kalshi channel(s) {unknown}; choose from {sorted(CHANNELS)}")
        if BOOK not in chosen:
            raise ValueError(f"channels must include {BOOK!r}: books are built from it")
        if markets_per_subscription < 1:
            raise ValueError(f"markets_per_subscription must be >= 1, got {markets_per_subscription}")
        if options.get("max_markets_per_connection") is not None:
            raise ValueError("Kalshi carries every subscription on one connection")
        super().__init__(url=url, **options)
        self.use_yes_price = use_yes_price
        self.channels = chosen
        self.markets_per_subscription = markets_per_subscription
        self._credentials = credentials
        self._sign_path = signing_path(url) or "/trade-api/ws/v2"
        self._next_id = 1
        self._conn: WebSocketConnection | None = None
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
        }

    # -- connection and book hooks ------------------------------------------------

    async def _authenticate(self) -> dict[str, str]:
        return self._credentials.sign("GET", self._sign_path)

    def _new_book(self, market_id: str) -> KalshiOrderBook:
        return KalshiOrderBook(market_id, use_yes_price=self.use_yes_price)

    def _on_connected(self, connection: WebSocketConnection) -> None:
        self._reset_session()
        self._conn = connection

    def _on_disconnected(self, connection: WebSocketConnection) -> None:
        self._reset_session()

    def _reset_session(self) -> None:
        """Sids, seqs and pending commands belong to one connection."""
        self._conn = None
        self._subs.clear()
        self._book_sid.clear()
        self._commands.clear()

    # -- commands -------------------------------------------------------------------

    def _command(self, cmd: str, params: dict[str, Any], kind: str, tickers: list[str],
                 channels: tuple[str, ...] = ()) -> str:
        command_id = self._next_id
        self._next_id += 1
        self._commands[command_id] = _Command(kind, tickers, channels, max(1, len(channels)))
        return orjson.dumps({"id": command_id, "cmd": cmd, "params": params}).decode()

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

    def _handle_message(self, data: str, recv_ns: int) -> None:
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._reject("truncated_json" if exc.pos >= len(data) else "malformed_json", exc, data)
            return
        if type(frame) is not dict:
            self._reject("not_an_object", type(frame).__name__, data)
            return
        handler = self._handlers.get(frame.get("type"))
        if handler is None:
            self._reject("unknown_type", frame.get("type"), data)
            return
        try:
            handler(frame, recv_ns)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._reject("bad_field", exc, data)

    def _sequenced(self, frame: _Frame, snapshot_of: str | None) -> _Subscription | None:
        """Check the frame's seq against its sid; None when the frame must not be applied.

        A gap taints every market of the sid; a snapshot is complete for its own
        market, so it is still applied while the others are resynced.
        """
        sid, seq = frame["sid"], frame["seq"]
        if type(sid) is not int or type(seq) is not int:
            raise TypeError(f"sid and seq must be integers, got {sid!r} and {seq!r}")
        sub = self._subs.get(sid)
        if sub is None or sub.channel != BOOK:
            self.stats.dropped["unknown_sid"] += 1
            return None
        last = sub.seq
        if last and seq != last + 1:
            if seq <= last:
                self.stats.dropped["duplicate"] += 1
                return None
            self.stats.gaps += 1
            sub.seq = seq
            self._resync([t for t in sub.tickers if t != snapshot_of], f"sid {sid} seq gap {last} -> {seq}")
            return sub if snapshot_of is not None else None
        sub.seq = seq
        return sub

    def _on_snapshot(self, frame: _Frame, recv_ns: int) -> None:
        msg = frame["msg"]
        ticker = msg["market_ticker"]
        if type(ticker) is not str:
            raise TypeError(f"market_ticker must be a string, got {ticker!r}")
        sub = self._sequenced(frame, ticker)
        if sub is None:
            return
        book = self._books.get(ticker)
        if book is None or ticker not in sub.tickers:
            self.stats.dropped["unknown_market"] += 1
            return
        try:
            book.apply_snapshot(msg.get("yes_dollars_fp"), msg.get("no_dollars_fp"), self._stamp(msg))
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
        msg = frame["msg"]
        ticker = msg.get("market_ticker") if type(msg) is dict else None
        if type(ticker) is not str:
            # The frame consumed a seq but names no market: any book of the sid may be wrong.
            self._reject("bad_field", "delta without a market_ticker", frame)
            self._resync(sub.tickers, "unreadable delta")
            return
        book = self._books.get(ticker)
        if book is None or ticker not in sub.tickers:
            self.stats.dropped["unknown_market"] += 1
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

    def _on_ticker(self, frame: _Frame, recv_ns: int) -> None:
        msg = frame["msg"]
        self._set_last_trade(msg["market_ticker"], msg.get("price_dollars"), recv_ns)

    def _on_trade(self, frame: _Frame, recv_ns: int) -> None:
        msg = frame["msg"]
        self._set_last_trade(msg["market_ticker"], msg["yes_price_dollars"], recv_ns)

    def _set_last_trade(self, ticker: str, price: str | None, recv_ns: int) -> None:
        book = self._books.get(ticker)
        if book is None or price is None:
            return
        book.set_last_trade(price)
        if book.is_ready:
            self._emit(book, recv_ns)

    # -- command replies -------------------------------------------------------------------

    def _on_subscribed(self, frame: _Frame, recv_ns: int) -> None:
        msg = frame["msg"]
        sid, channel = msg["sid"], msg["channel"]
        command = self._commands.get(frame.get("id"))  # type: ignore[arg-type]
        if command is None or command.kind != "subscribe":
            log.warning("kalshi: 'subscribed' (sid %s, %s) for no pending subscribe (id %r)",
                        sid, channel, frame.get("id"))
            return
        command.replies_left -= 1
        if command.replies_left <= 0:
            del self._commands[frame["id"]]
        sub = _Subscription(sid, channel, list(command.tickers))
        self._subs[sid] = sub
        if channel == BOOK:
            for ticker in sub.tickers:
                self._book_sid[ticker] = sid
        cancelled = command.cancelled.get(channel)
        if cancelled and self._conn is not None:
            self._conn.queue(self._detach(cancelled, (channel,), cancel_pending=False))

    def _on_unsubscribed(self, frame: _Frame, recv_ns: int) -> None:
        self._commands.pop(frame.get("id"), None)  # type: ignore[arg-type]
        self._subs.pop(frame.get("sid"), None)  # type: ignore[arg-type]

    def _on_ok(self, frame: _Frame, recv_ns: int) -> None:
        self._commands.pop(frame.get("id"), None)  # type: ignore[arg-type]

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
        command = self._commands.pop(command_id, None) if command_id else None  # type: ignore[arg-type]
        if command is not None:
            self._command_failed(command, code, msg.get("market_ticker"))
        elif code in TERMINAL_ERRORS:
            self._subscription_ended(sid, code)

    def _command_failed(self, command: _Command, code: object, market: object) -> None:
        """A snapshot request or subscribe was refused: take the next resync step now
        (bounded by the ladder); a market the venue does not know is CLOSED instead.

        The error's `market_ticker` is optional; when the command named one market
        (the default, one market per subscription) that market is the one.
        """
        if command.kind not in ("subscribe", "get_snapshot"):
            return
        tickers = [t for t in command.tickers if t in self._books]
        if code == MARKET_NOT_FOUND:
            if market is None and len(command.tickers) == 1:
                market = command.tickers[0]
            if market in tickers:
                self._close_market(market, "market not found")  # type: ignore[arg-type]
                tickers.remove(market)  # type: ignore[arg-type]
        self._retry_snapshots(tickers)

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
            self._conn.queue(self._subscribe_frames(sub.tickers, (sub.channel,)))
