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
Keep-alive is the text ``PING`` every `ping_interval` seconds, answered by text
``PONG``; every frame, PONG included, feeds the base's `receive_timeout`, so a
dead peer is noticed within a few ping periods even on a quiet socket.

Integrity. There are no sequence numbers; `MarketChannel` compares each
`price_change`'s post-change `best_bid`/`best_ask` with the local book. A
mismatch is counted in `stats.gaps` and the token is resynced by resubscribing
it on its own socket (unsubscribe + subscribe with ``initial_dump``: the base
class's default resync, since the venue ignores a duplicate subscribe). That keeps
the fresh `book` in order with the updates that follow it, which a REST `/book`
fetched on the side cannot guarantee. `resync_attempts` defaults to 2 here: a
second resubscription is worth it (the snapshot itself can be lost to a bad frame)
before the base class considers the socket. A `tick_size_change` empties the book
until the venue's next `book`; if that does not arrive within `resync_timeout`,
the same ladder takes over. While a token waits for its `book` (subscribed,
reconnected, stalled, mismatched) its `price_change` entries are dropped.

Sharding. At most `max_tokens_per_connection` tokens (200 by default; the venue
silently drops initial snapshots past ~500) share a socket; more open further
supervised connections, all feeding one set of books and one price fan-out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Protocol

import orjson

from markets.base_ws import BaseWebSocketClient
from markets.book import PolymarketOrderBook
from markets.models import Platform
from markets.polymarket.catalog import PolymarketMarketInfo, is_condition_id
from markets.polymarket.market_channel import BEST_MISMATCH, NOTICE_INVALID_OPERATION, MarketChannel
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
    top. `receive_timeout` (None: derived) defaults to three ping periods. Other
    options are the base's (`stale_after`, `resync_timeout`, `resync_attempts`,
    backoff, ...).
    """

    platform: ClassVar[Platform] = Platform.POLYMARKET

    def __init__(
        self,
        *,
        url: str = POLYMARKET_WS_URL,
        max_tokens_per_connection: int = 200,
        ping_interval: float | None = 10.0,
        heartbeat: float | None = None,
        resolver: MarketResolver | None = None,
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
        self._channel = MarketChannel(self._token_books, self.stats.last_message_ns, self._awaiting)

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
        for market_id in ids:
            self._token_books.pop(self._token_of[market_id], None)
        await super().unsubscribe(ids)
        for market_id in ids:
            del self._token_of[market_id]
            self.markets.pop(market_id, None)

    # -- base hooks ------------------------------------------------------------------

    async def _authenticate(self) -> dict[str, str]:
        return {}

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
        message: dict[str, Any] = {"assets_ids": self._tokens(market_ids), "initial_dump": True}
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
        if outcome.resync:
            books = self._token_books
            for token, reason in outcome.resync:
                if reason == BEST_MISMATCH:
                    self.stats.gaps += 1
                self._resync([books[token].market_id], reason)
        if outcome.awaiting:
            self._expect_snapshots([self._token_books[t].market_id for t in outcome.awaiting], 0, recv_ns)
