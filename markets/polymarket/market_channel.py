"""Apply Polymarket market-channel frames to per-token books.

This is the whole wire protocol of the market channel on the receive side, kept
free of sockets so it can be tested and benchmarked on its own and so that one
`MarketChannel` can serve every connection of a sharded client (a token lives on
exactly one connection, but the books live in one dict).

What a frame can be, in the order it is checked:
- plain text, not JSON: ``PONG`` (the answer to our text ``PING``), ``NO NEW
  ASSETS``, ``INVALID OPERATION`` — returned as a notice, never parsed;
- a JSON array (the initial dump: one `book` per token) or a JSON object, each
  dispatched on `event_type`.

There are no sequence numbers on this channel, so integrity rests on the
post-change `best_bid`/`best_ask` that every `price_change` entry carries: after a
frame is applied, each touched book is compared with the last entry seen for it
(correct whether the venue means "after this entry" or "after this event"). The
venue itself disagrees with its levels for a few messages after a sweep
(`markets.polymarket.disputes`), so a mismatch is first a *dispute*: counted in
`FrameOutcome.disputed`, the book published STALE (never LIVE while it is known to
disagree) and LIVE again from the frame that agrees. A dispute that outlasts the
`Disputes` limits (frames or seconds), or an entry that cannot be applied, means
the book is wrong: it is dropped (RESYNCING) and reported for a resync. A `book`
settles any dispute. For the same reason a `price_change`
is only ever applied to a book that has had a `book` since it was last in doubt:
after a reconnect or a stall the old levels may lack updates, and an update that
happens to agree with the old top would otherwise make them LIVE again (the venue
is known to skip initial snapshots and stream updates regardless). The owner says
which markets are in doubt (`awaiting`). Nothing here raises on bad input; every
problem comes back as a reason string to count.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, MutableMapping
from typing import Any

import orjson

from markets.book import BookError, PolymarketOrderBook
from markets.models import PriceStatus, parse_price_ticks, venue_timestamp_ms
from markets.polymarket.disputes import Disputes

NOTICE_PONG = "PONG"
NOTICE_INVALID_OPERATION = "INVALID OPERATION"
NOTICE_NO_NEW_ASSETS = "NO NEW ASSETS"

# Reasons reported in FrameOutcome.rejected / .resync (stable strings: they are counters).
MALFORMED = "malformed_json"
UNKNOWN_TEXT = "unknown_text_frame"
NOT_AN_OBJECT = "not_an_object"
NO_EVENT_TYPE = "missing_event_type"
UNKNOWN_EVENT = "unknown_event_type"
BAD_FIELD = "bad_field"
BAD_BOOK = "bad_book"
BAD_LEVEL = "bad_price_change"
BAD_TIMESTAMP = "bad_timestamp"
BEST_MISMATCH = "best_mismatch"

# Reasons reported in FrameOutcome.dropped: data discarded on purpose, not bad input.
UNKNOWN_ASSET = "unknown_asset"
AWAITING_SNAPSHOT = "awaiting_snapshot"
MARKET_CLOSED = "market_closed"

_IGNORED_EVENTS = frozenset({"best_bid_ask", "new_market"})
"""Custom-feature events: only sent when asked for, and they carry nothing a book needs."""


class FrameOutcome:
    """What one frame did: books to publish, books to resync, problems to count."""

    __slots__ = ("changed", "resync", "rejected", "dropped", "awaiting", "closed", "disputed", "notice")

    def __init__(self) -> None:
        self.changed: dict[str, PolymarketOrderBook] = {}
        """Books whose top of book, status or last trade may have changed, by token id."""
        self.resync: list[tuple[str, str]] = []
        """(token id, reason): the book is known to be wrong and needs a fresh snapshot."""
        self.rejected: list[str] = []
        """One reason per problem that was skipped (the book itself may still be fine)."""
        self.dropped: list[str] = []
        """One reason per event or entry discarded on purpose (unsubscribed token, book awaiting a snapshot)."""
        self.awaiting: list[str] = []
        """Tokens that entered a new tick-size epoch and wait for the venue's next `book`."""
        self.closed: list[str] = []
        """Tokens whose market the venue resolved (`market_resolved`): they never trade again."""
        self.disputed: list[str] = []
        """Tokens whose book disagrees with this frame's best prices, not yet for too long (STALE)."""
        self.notice: str | None = None
        """A non-JSON text frame (PONG, INVALID OPERATION, NO NEW ASSETS)."""


def _timestamp(value: Any, outcome: FrameOutcome) -> int | None:
    """Millisecond string → int; a bad one is counted and dropped, and the data still applies."""
    try:
        return venue_timestamp_ms(value)
    except ValueError:
        outcome.rejected.append(BAD_TIMESTAMP)
        return None


class MarketChannel:
    """Routes decoded market-channel events to the books in `books` (keyed by token id).

    The mapping is shared with the owner, which adds a book when it subscribes a
    token and removes it on unsubscribe; events for tokens not in it are dropped
    (in flight after an unsubscribe). `last_seen`, when given, gets the receive time
    of every frame that carried data for a book, keyed by the book's `market_id`:
    that is what a staleness watchdog reads, and a change deep in the book counts
    as data even though it changes no top. `awaiting`, also keyed by `market_id`,
    holds the markets whose book is in doubt until their next `book`; their
    `price_change` entries are dropped. `disputes` says how long a book may disagree
    with the venue's best prices before it is resynced (default `Disputes()`).
    """

    __slots__ = ("books", "last_seen", "awaiting", "disputes", "_handlers")

    def __init__(self, books: MutableMapping[str, PolymarketOrderBook],
                 last_seen: MutableMapping[str, int] | None = None, awaiting: Container[str] = (),
                 disputes: Disputes | None = None) -> None:
        self.books = books
        self.last_seen: MutableMapping[str, int] = {} if last_seen is None else last_seen
        self.awaiting = awaiting
        self.disputes = Disputes() if disputes is None else disputes
        self._handlers = {
            "book": self._on_book,
            "price_change": self._on_price_change,
            "last_trade_price": self._on_last_trade,
            "tick_size_change": self._on_tick_size_change,
            "market_resolved": self._on_market_resolved,
        }

    def apply_frame(self, data: str, recv_ns: int = 0) -> FrameOutcome:
        """Parse one text frame (received at `recv_ns`) and apply every event in it."""
        outcome = FrameOutcome()
        if data[:1] not in ("{", "["):
            text = data.strip()
            if text in (NOTICE_PONG, NOTICE_INVALID_OPERATION, NOTICE_NO_NEW_ASSETS):
                outcome.notice = text
            else:
                outcome.rejected.append(UNKNOWN_TEXT)
            return outcome
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError:
            outcome.rejected.append(MALFORMED)
            return outcome
        if isinstance(decoded, list):
            for event in decoded:
                self.apply_event(event, outcome, recv_ns)
        else:
            self.apply_event(decoded, outcome, recv_ns)
        return outcome

    def apply_event(self, event: Any, outcome: FrameOutcome, recv_ns: int = 0) -> None:
        """Apply one decoded event object; problems are recorded in `outcome`."""
        if not isinstance(event, dict):
            outcome.rejected.append(NOT_AN_OBJECT)
            return
        event_type = event.get("event_type")
        handler = self._handlers.get(event_type) if isinstance(event_type, str) else None
        if handler is not None:
            handler(event, outcome, recv_ns)
        elif not isinstance(event_type, str):
            outcome.rejected.append(NO_EVENT_TYPE)
        elif event_type not in _IGNORED_EVENTS:
            outcome.rejected.append(UNKNOWN_EVENT)

    # -- per event type ------------------------------------------------------------

    def _book_for(self, event: Mapping[str, Any], outcome: FrameOutcome,
                  recv_ns: int) -> PolymarketOrderBook | None:
        asset_id = event.get("asset_id")
        if not isinstance(asset_id, str):
            outcome.rejected.append(BAD_FIELD)
            return None
        book = self.books.get(asset_id)
        if book is None:
            outcome.dropped.append(UNKNOWN_ASSET)
        elif book.status is PriceStatus.CLOSED:  # in flight after the close: a snapshot must not revive it
            outcome.dropped.append(MARKET_CLOSED)
            return None
        else:
            self.last_seen[book.market_id] = recv_ns
        return book

    def _on_book(self, event: dict[str, Any], outcome: FrameOutcome, recv_ns: int) -> None:
        """A full replacement, whether it is the first dump or the venue's post-trade resend."""
        book = self._book_for(event, outcome, recv_ns)
        if book is None:
            return
        bids, asks = event.get("bids"), event.get("asks")
        ts_ms = _timestamp(event.get("timestamp"), outcome)
        before = (book.best_bid, book.best_ask, book.status, book.last_trade_ticks)
        try:  # the book refuses a side that is not an array of levels (missing, "", {}, ...)
            book.apply_snapshot(bids, asks, ts_ms)  # type: ignore[arg-type]
        except BookError:
            outcome.rejected.append(BAD_BOOK)
            outcome.resync.append((book.token_id, BAD_BOOK))
        else:
            self._book_extras(book, event, outcome)
        self.disputes.settle(book.token_id)  # replaced, or dropped for a resync
        if (book.best_bid, book.best_ask, book.status, book.last_trade_ticks) != before:
            outcome.changed[book.token_id] = book

    @staticmethod
    def _book_extras(book: PolymarketOrderBook, event: Mapping[str, Any], outcome: FrameOutcome) -> None:
        """Optional `tick_size` / `last_trade_price` on a book: a later no-op tick change is then recognised."""
        try:
            if (tick := event.get("tick_size")) is not None:
                book.tick_size = parse_price_ticks(tick)
            if (last := event.get("last_trade_price")) not in (None, ""):
                book.set_last_trade(last)
        except (TypeError, ValueError):
            outcome.rejected.append(BAD_FIELD)

    def _on_price_change(self, event: dict[str, Any], outcome: FrameOutcome, recv_ns: int) -> None:
        entries = event.get("price_changes")
        if not isinstance(entries, list) or not entries:  # an event that changes nothing is not one
            outcome.rejected.append(BAD_FIELD)
            return
        ts_ms = _timestamp(event.get("timestamp"), outcome)
        books, last_seen, awaiting = self.books, self.last_seen, self.awaiting
        last_entry: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                outcome.rejected.append(NOT_AN_OBJECT)
                continue
            asset_id = entry.get("asset_id")
            if not isinstance(asset_id, str):
                outcome.rejected.append(BAD_FIELD)
                continue
            book = books.get(asset_id)
            if book is None:  # often the sibling of a subscribed token; counted like any data not ours
                outcome.dropped.append(UNKNOWN_ASSET)
                continue
            market_id = book.market_id
            last_seen[market_id] = recv_ns
            if market_id in awaiting or not book.is_ready:
                outcome.dropped.append(AWAITING_SNAPSHOT)
                continue
            try:
                if book.apply_delta(entry["price"], entry["size"], entry["side"], ts_ms):
                    outcome.changed[book.token_id] = book
            except (KeyError, TypeError, ValueError):
                self._drop(book, BAD_LEVEL, outcome)
                outcome.rejected.append(BAD_LEVEL)
                last_entry.pop(book.token_id, None)  # a dropped book has nothing to check
                continue
            last_entry[book.token_id] = entry
        for token_id, entry in last_entry.items():
            book = books[token_id]
            best_bid, best_ask = entry.get("best_bid"), entry.get("best_ask")
            consistent: bool | None
            try:
                consistent = book.matches_best(best_bid, best_ask)
            except (TypeError, ValueError):
                outcome.rejected.append(BAD_FIELD)
                consistent = None  # cannot be checked
            if token_id in self.disputes and (consistent is None or best_bid is None or best_ask is None):
                consistent = False  # only a frame naming both best prices, and agreeing, ends a dispute
            if consistent is None:
                continue
            if consistent:
                self.disputes.settle(token_id)
            elif self.disputes.disagree(token_id, recv_ns):
                self._drop(book, BEST_MISMATCH, outcome)
            else:
                book.mark_stale()  # applying the entries made it LIVE: not while it disagrees
                outcome.changed[token_id] = book
                outcome.disputed.append(token_id)

    def _drop(self, book: PolymarketOrderBook, reason: str, outcome: FrameOutcome) -> None:
        """The local book is known wrong: empty it and ask for a fresh one."""
        self.disputes.settle(book.token_id)
        book.mark_resyncing()
        outcome.changed[book.token_id] = book
        outcome.resync.append((book.token_id, reason))

    def _on_last_trade(self, event: dict[str, Any], outcome: FrameOutcome, recv_ns: int) -> None:
        """A trade print: last trade only, never the book (the venue resends `book` after trades)."""
        book = self._book_for(event, outcome, recv_ns)
        if book is None:
            return
        before = book.last_trade_ticks
        try:
            book.set_last_trade(event["price"])
        except (KeyError, TypeError, ValueError):
            outcome.rejected.append(BAD_FIELD)
            return
        if book.last_trade_ticks != before:
            outcome.changed[book.token_id] = book

    def _on_tick_size_change(self, event: dict[str, Any], outcome: FrameOutcome, recv_ns: int) -> None:
        """A new tick epoch: old levels may be off-grid, so wait for the next `book`."""
        book = self._book_for(event, outcome, recv_ns)
        if book is None:
            return
        try:
            started = book.apply_tick_size_change(event["new_tick_size"], event.get("old_tick_size"))
        except (KeyError, TypeError, ValueError):
            outcome.rejected.append(BAD_FIELD)
            return
        if started:
            outcome.changed[book.token_id] = book
            outcome.awaiting.append(book.token_id)

    def _on_market_resolved(self, event: dict[str, Any], outcome: FrameOutcome, recv_ns: int) -> None:
        assets = event.get("assets_ids")
        if not isinstance(assets, list):
            outcome.rejected.append(BAD_FIELD)
            return
        for asset_id in assets:
            book = self.books.get(asset_id) if isinstance(asset_id, str) else None
            if book is not None and book.status is not PriceStatus.CLOSED:
                book.mark_closed()
                outcome.changed[book.token_id] = book
                outcome.closed.append(book.token_id)
