"""PolymarketWebSocketClient: the CLOB market channel, sharded, cross-checked, kept alive.

What this adds to `BaseWebSocketClient` (which supervises sockets, reconnects,
runs the staleness watchdog and fans prices out):

Ids. A user names a market by condition id (``0x``…) or by token id. Prices are
per token, so condition ids are resolved over REST (`resolver`, typically a
`PolymarketClient`) to the market's YES token: the token paying on "Yes", or on
outcome 0 for team-vs-team markets (`PolymarketMarketInfo.yes_token`). Only that
token is subscribed: the NO book is its exact mirror and would carry nothing new
while doubling traffic and the per-connection token count. The base keys
everything (books, connections, watchdog) by the id the user gave, which is also
the `market_id` of every published `MarketPrice`; the wire and the frame handler
speak token ids, and `_token_of` / `_token_books` translate. One token can be
published under one id only (asking for a condition id and its YES token at
once is refused), so a book never has two names.

Wire. The first message on every socket is
``{"assets_ids": [...], "type": "market", "initial_dump": true}``; later
additions and removals on the same socket are ``"operation": "subscribe" /
"unsubscribe"`` (a second ``type`` message gets ``INVALID OPERATION``). Each
connection therefore remembers whether its current session has sent the initial
form; a reconnect forgets, so the replay starts with the initial form again.
Keep-alive is the text ``PING`` every `ping_interval` seconds (5 s by default:
the venue cuts a socket after ~10 s without one, and a 10 s cadence sits on that
edge, so one late timer under load loses the socket), answered by text ``PONG``;
every frame, PONG included, feeds the base's `receive_timeout`, so a dead peer
is noticed within a few ping periods even on a quiet socket. A 403/429 refusal
of the handshake is never an authentication failure here: the feed is public and
takes no credentials, so such a refusal comes from the CDN in front of it and is
retried with backoff like a 5xx.

Lifecycle. Every subscription sets ``"custom_feature_enabled": true``, without
which the venue never sends `market_resolved` (it also brings `best_bid_ask`,
`new_market` and ``NO NEW ASSETS``, which are ignored). A resolved market is
published CLOSED once and unsubscribed; a condition id whose listing says it is
closed, inactive, not accepting orders or without an order book
(`why_not_streamable`) is published CLOSED at subscribe time and never subscribed.
Polymarket's `endDate` is no trading cutoff, so no close time is derived from it;
`set_close_time` is there for a caller who knows one.

Quiet tokens. Silence is not staleness: most tokens go minutes without a change.
With a `book_source` (a `PolymarketClient`; the hybrid passes itself) a token
silent for `stale_after` on an open socket is checked against REST `POST /books`
at a bounded rate (`markets.polymarket.quiet`) instead of being resubscribed: the
REST top of book (best bid and ask, price and size) equal to the local one keeps
it LIVE ("quiet and verified"), a different one resyncs it, and a check that
could not be made (REST error, token missing from the answer) makes it STALE
("unknown") until a later check or new data vouches for it again. A token that
received data after the check was asked for needs no verdict: the data is the
proof (and one in a dispute is left to the dispute rule below). (The summary's `hash` is not compared: its recipe has changed several
times and covers fields the socket never carries, §5.) Without a `book_source`
a quiet token can only be proven by resubscribing it, which is what the base
class does (STALE, then the snapshot ladder).

Integrity. There are no sequence numbers; `MarketChannel` compares each
`price_change`'s post-change `best_bid`/`best_ask` with the local book. The venue
disagrees with itself for a few messages after a sweep, so a mismatch is first
counted (`stats.disagreements`) and the book published STALE while it disagrees,
LIVE again from the frame that agrees; one that lasts more than
`mismatch_frames` frames of the token or `mismatch_seconds` (checked on every
housekeeping tick too, for a token that goes quiet mid-dispute) is counted in
`stats.gaps` and the token is resynced by resubscribing
it on its own socket (unsubscribe + subscribe with ``initial_dump``: the base
class's default resync, since the venue ignores a duplicate subscribe). That keeps
the fresh `book` in order with the updates that follow it, which a REST `/book`
fetched on the side cannot guarantee. `resync_attempts` defaults to 2 here: a
second resubscription is worth it (the snapshot itself can be lost to a bad frame)
before the base class considers the socket. A `tick_size_change` empties the book
until a fresh `book`; the venue does not always send one, so after
`tick_book_grace` seconds (not the whole `resync_timeout`) the same ladder
resubscribes the token. While a token waits for its `book` (subscribed,
reconnected, stalled, mismatched) its `price_change` entries are dropped.

Sharding. At most `max_tokens_per_connection` tokens (200 by default; the venue
silently drops initial snapshots past ~500) share a socket; more open further
supervised connections, all feeding one set of books and one price fan-out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Protocol

import orjson

from markets.base_ws import BaseWebSocketClient
from markets.book import BookError, PolymarketOrderBook
from markets.models import Platform, PriceStatus
from markets.polymarket.catalog import PolymarketMarketInfo, is_condition_id, why_not_streamable
from markets.polymarket.disputes import Disputes
from markets.polymarket.market_channel import BEST_MISMATCH, NOTICE_INVALID_OPERATION, MarketChannel
from markets.polymarket.quiet import BookSource, QuietBookVerifier
from markets.ws_connection import WebSocketConnection

POLYMARKET_WS_URL = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
PING = "PING"


class MarketResolver(Protocol):
    """Resolves condition ids to markets with their outcome tokens (PolymarketClient does)."""

    async def resolve_markets(self, condition_ids: Iterable[str]) -> Mapping[str, PolymarketMarketInfo]: ...


class PolymarketWebSocketClient(BaseWebSocketClient):
    """Streams Polymarket books over the public market channel (no credentials).

    `ping_interval` is the text-PING period (None disables it: the venue then drops
    the socket after ~10 s); `heartbeat` is the optional RFC 6455 ping period on
    top. `receive_timeout` (None: derived) defaults to three ping periods.
    `book_source` (e.g. a `PolymarketClient`) enables REST checks of quiet tokens,
    at most `verify_rate` requests/s of up to `verify_batch` tokens each. Other
    options are the base's (`stale_after`, `resync_timeout`, `resync_attempts`,
    backoff, ...).
    """

    platform: ClassVar[Platform] = Platform.POLYMARKET

    def __init__(
        self,
        *,
        url: str = POLYMARKET_WS_URL,
        max_tokens_per_connection: int = 200,
        ping_interval: float | None = 5.0,
        heartbeat: float | None = None,
        resolver: MarketResolver | None = None,
        book_source: BookSource | None = None,
        verify_rate: float = 2.0,
        verify_batch: int = 100,
        mismatch_frames: int = 5,
        mismatch_seconds: float = 2.0,
        tick_book_grace: float = 1.0,
        receive_timeout: float | None = None,
        stale_after: float = 60.0,
        resync_attempts: int = 2,
        **options: Any,
    ) -> None:
        if receive_timeout is None:
            receive_timeout = 3 * ping_interval if ping_interval else 60.0
        super().__init__(url=url, max_markets_per_connection=max_tokens_per_connection,
                         keepalive_interval=ping_interval, ping_interval=heartbeat,
                         receive_timeout=receive_timeout, stale_after=stale_after,
                         resync_attempts=resync_attempts, **options)
        self.resolver = resolver
        self.markets: dict[str, PolymarketMarketInfo] = {}
        """Resolved condition ids: which token pays on which outcome."""
        self._token_of: dict[str, str] = {}
        self._token_books: dict[str, PolymarketOrderBook] = {}
        self._initialized: set[WebSocketConnection] = set()
        if not tick_book_grace > 0:
            raise ValueError(f"tick_book_grace must be > 0 seconds, got {tick_book_grace!r}")
        self.tick_book_grace = tick_book_grace
        self._channel = MarketChannel(self._token_books, self.stats.last_message_ns, self._awaiting,
                                      Disputes(mismatch_frames, mismatch_seconds))
        self._verifier = None if book_source is None else QuietBookVerifier(
            book_source, self._verified, self.stats.verifications, rate=verify_rate, batch=verify_batch)

    # -- ids -----------------------------------------------------------------------

    def token_of(self, market_id: str) -> str | None:
        """The token whose book is published as `market_id` (None if not subscribed)."""
        return self._token_of.get(market_id)

    async def _resolve(self, market_ids: list[str]) -> None:
        """Map every new market id to the token to subscribe; refuse ambiguous or unknown ids."""
        pending: dict[str, str] = {}
        conditions = []
        for market_id in market_ids:
            if not isinstance(market_id, str) or not market_id:
                raise ValueError(f"market ids must be non-empty strings, got {market_id!r}")
            if market_id in self._token_of:
                continue
            if is_condition_id(market_id):
                conditions.append(market_id)
            elif market_id.isdigit():
                pending[market_id] = market_id
            else:
                raise ValueError(f"{market_id!r} is neither a condition id (0x + 64 hex) nor a token id")
        if conditions:
            if self.resolver is None:
                raise ValueError("condition ids need a resolver (e.g. PolymarketClient) to find their "
                                 f"tokens: {', '.join(conditions[:5])}")
            resolved = await self.resolver.resolve_markets(conditions)
            for condition_id in conditions:
                info = resolved.get(condition_id)
                if info is None:
                    raise ValueError(f"the resolver returned no market for condition id {condition_id}")
                self.markets[condition_id] = info
                pending[condition_id] = info.yes_token.token_id
                obstacle = why_not_streamable(info)
                if obstacle is not None:  # published CLOSED when subscribed, never subscribed on the wire
                    self.close_market(condition_id, f"listed as {obstacle}")
        owners = {token: market_id for market_id, token in self._token_of.items()}
        for market_id, token in pending.items():
            owner = owners.setdefault(token, market_id)
            if owner != market_id:
                raise ValueError(f"token {token} is already published as {owner}; "
                                 f"subscribe it under one id, not also as {market_id}")
        self._token_of.update(pending)

    async def subscribe(self, market_ids: Iterable[str]) -> None:
        """Resolve condition ids to their YES tokens, then subscribe (sharded by the base)."""
        self._check_usable()
        ids = list(dict.fromkeys(market_ids))
        await self._resolve(ids)
        await super().subscribe(ids)

    async def unsubscribe(self, market_ids: Iterable[str]) -> None:
        """Unsubscribe on the wire and forget the books; frames still in flight are dropped."""
        ids = [m for m in dict.fromkeys(market_ids) if m in self._token_of]
        tokens = [self._token_of[m] for m in ids]
        for token in tokens:
            self._token_books.pop(token, None)
        if self._verifier is not None:
            self._verifier.discard(tokens)
        await super().unsubscribe(ids)
        for market_id in ids:
            del self._token_of[market_id]
            self.markets.pop(market_id, None)

    # -- base hooks ------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the REST checks of quiet tokens, then everything the base owns."""
        if self._verifier is not None:
            await self._verifier.close()
        await super().close()

    async def _authenticate(self) -> dict[str, str]:
        return {}

    def _is_auth_refusal(self, status: int) -> bool:
        """Never: the feed is public, so a 403/429 is a CDN's refusal, i.e. a backoff."""
        return False

    def _on_quiet(self, connection: WebSocketConnection, market_ids: list[str], now: int) -> None:
        """Ask REST about quiet tokens instead of resubscribing them (module docstring)."""
        if self._verifier is None:
            super()._on_quiet(connection, market_ids, now)
        else:
            self._verifier.request(self._tokens(market_ids), now)

    def _verified(self, token: str, requested_ns: int, summary: Mapping[str, Any] | None) -> None:
        """The REST verdict on a quiet token: LIVE if the tops agree, resync if not,
        STALE ("unknown") if there was no usable answer."""
        book = self._token_books.get(token)
        counts = self.stats.verifications
        if book is None:
            return  # unsubscribed meanwhile
        market_id = book.market_id
        if (not book.is_ready or market_id in self._awaiting or token in self._channel.disputes
                or self.stats.last_message_ns.get(market_id, 0) > requested_ns):
            # Resyncing, in a dispute (its own rule decides), or data arrived since: nothing to decide.
            counts["superseded"] += 1
            return
        now = time.time_ns()
        reference = PolymarketOrderBook(token, market_id)
        try:
            if summary is None:
                raise BookError("no book in the REST answer")
            reference.apply_snapshot(summary["bids"], summary["asks"])
        except (BookError, KeyError, TypeError):
            counts["unavailable"] += 1
            self._mark_unknown([market_id], now)
            return
        if reference.best_bid == book.best_bid and reference.best_ask == book.best_ask:
            counts["confirmed"] += 1
            book.mark_verified()
            self._emit(book, now)
        else:
            counts["mismatch"] += 1
            self._resync([market_id], "quiet token disagrees with REST /books")

    def _await_tick_books(self, market_ids: list[str], now: int) -> None:
        """After a tick-size change, wait `tick_book_grace` for the venue's own `book`
        (it often sends none), then the snapshot ladder resubscribes the token: one
        step before attempt 0, so the whole ladder is still ahead."""
        start = now - int((self.resync_timeout - self.tick_book_grace) * 1_000_000_000)
        self._expect_snapshots(market_ids, -1, start)

    def _check_markets(self, connection: WebSocketConnection, now: int) -> None:
        """A dispute that outlived `mismatch_seconds` with no frame since (the token went
        quiet while its book disagreed) makes the book wrong: resync it."""
        for token in self._channel.disputes.expired(now):
            book = self._token_books.get(token)
            if book is not None and book.status is PriceStatus.STALE:
                self.stats.gaps += 1
                self._resync([book.market_id], BEST_MISMATCH)
        super()._check_markets(connection, now)

    def _new_book(self, market_id: str) -> PolymarketOrderBook:
        token = self._token_of[market_id]
        book = PolymarketOrderBook(token, market_id)
        self._token_books[token] = book
        return book

    def _tokens(self, market_ids: list[str]) -> list[str]:
        return [self._token_of[m] for m in market_ids]

    def _build_subscribe_message(self, market_ids: list[str]) -> list[str]:
        """The initial ``type: market`` form once per session, ``operation: subscribe`` after."""
        connection = self._connection_of(market_ids[0]) if market_ids else None
        message: dict[str, Any] = {"assets_ids": self._tokens(market_ids), "initial_dump": True,
                                   "custom_feature_enabled": True}
        if connection is not None and connection in self._initialized:
            message["operation"] = "subscribe"
        else:
            message["type"] = "market"
            if connection is not None:
                self._initialized.add(connection)
        return [orjson.dumps(message).decode()]

    def _build_unsubscribe_message(self, market_ids: list[str]) -> list[str]:
        return [orjson.dumps({"assets_ids": self._tokens(market_ids), "operation": "unsubscribe"}).decode()]

    def _on_connected(self, connection: WebSocketConnection) -> None:
        self._initialized.discard(connection)

    def _on_disconnected(self, connection: WebSocketConnection) -> None:
        self._initialized.discard(connection)

    def _keepalive(self) -> list[str]:
        return [PING]

    def _handle_message(self, data: str, recv_ns: int) -> None:
        outcome = self._channel.apply_frame(data, recv_ns)
        if outcome.notice is not None:
            if outcome.notice == NOTICE_INVALID_OPERATION:
                self._reject("invalid_operation", "the venue refused a subscription message", data)
            return
        emit = self._emit
        for book in outcome.changed.values():
            emit(book, recv_ns)
        for reason in outcome.rejected:
            self._reject(reason, data)
        for reason in outcome.dropped:
            self.stats.dropped[reason] += 1
        self.stats.disagreements += len(outcome.disputed)
        if outcome.resync:
            books = self._token_books
            for token, reason in outcome.resync:
                if reason == BEST_MISMATCH:
                    self.stats.gaps += 1
                self._resync([books[token].market_id], reason)
        if outcome.awaiting:
            self._await_tick_books([self._token_books[t].market_id for t in outcome.awaiting], recv_ns)
        for token in outcome.closed:
            self._close_market(self._token_books[token].market_id, "market_resolved")
