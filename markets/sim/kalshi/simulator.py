"""`KalshiSimulator`: the Kalshi Trade API (WebSocket v2 + REST v2) served locally.

The simulator's truth is its ladders (YES scale, two-sided).  On the Kalshi
wire a YES ask at p is a NO bid at 1 - p, so `book_levels()` gives tests the
book in the venue's own terms — YES bids and NO bids on the NO scale — to
compare a client's reconstruction against.

Games end on the universe's timetable: the book channel just goes quiet at the
close, `market_lifecycle_v2` subscribers (every market, no filter) hear of pauses,
reactivations, early closes, determinations and settlements, and REST follows
(`markets/sim/kalshi/lifecycle.py`).
"""

from __future__ import annotations

import random
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from markets.models import TICKS_PER_DOLLAR
from markets.sim.activity import ActivityMix
from markets.sim.faults import FaultPlan
from markets.sim.kalshi import wire
from markets.sim.kalshi.auth import AuthError, KeyRegistry
from markets.sim.kalshi.rest import KalshiRest, RateLimit, error_response
from markets.sim.kalshi.lifecycle import lifecycle_msg
from markets.sim.kalshi.ws import BOOK, LIFECYCLE, TICKER, TRADE, CommandLimits, KalshiConnection, Subscription
from markets.sim.ladder import VENUE_DEPTH, LevelChange, SimLadder
from markets.sim.sendlog import SendLog
from markets.sim.server import CLOSE_TIMEOUT, SimServer
from markets.sim.lifecycle import Transition
from markets.sim.universe import TAPERED_DECI_CENT, SimMarket, Universe

WS_PATH = "/trade-api/ws/v2"
REST_ROOT = "/trade-api/v2"
CENT = 100
DECI_CENT = 10
# Share of price strings sent with 3 decimals ("0.960") instead of 4 ("0.9600").
SHORT_PRICE_SHARE = 0.25
# Share of book frames whose prices and counts are JSON numbers rather than strings
# (seen live: protocols/kalshi.md appendix).
NUMERIC_SHARE = 0.1
# Share of snapshots that carry `ts_ms`: the docs page lists none on snapshots,
# a third-party client decodes one, so the simulator sends it only sometimes.
SNAPSHOT_TS_SHARE = 0.5
# aiohttp's own default: bytes buffered in the transport before a send waits.
WRITER_LIMIT = 256 * 1024
# Share of top-of-book size reductions that are trades rather than cancels.
TRADE_SHARE = 0.5


@dataclass
class MarketStats:
    """What the ticker channel and REST Market report besides the book."""

    last_price: int
    volume: int = 0
    open_interest: int = 0
    last_trade_size: int = 0
    top: tuple[int | None, int, int | None, int] = (None, 0, None, 0)


class KalshiSimulator(SimServer):
    """Serves `/trade-api/ws/v2` and `/trade-api/v2` for the universe's markets.

    Every connection must be signed by a key registered with `register_key`.
    `outbound_limit` is the number of frames a connection may have queued
    before its subscriptions overflow (error 25), as the venue does to slow readers.
    Frames first fill the kernel's socket buffer (several MiB on loopback);
    `send_buffer_bytes` pins SO_SNDBUF so that a stalled reader overflows after
    kilobytes rather than megabytes.  `rate_limit=None` turns the REST token
    buckets off; `command_limits` are the per-connection WebSocket command rate and
    market limits (errors 27 and 26; None turns them off), and `commands_refused`
    counts the 27s sent. `depth` is the levels per side each book starts with (100
    by default, as real books have; a cent grid holds 99 prices in all). `numeric_share` is the share of snapshots and deltas whose prices
    and counts are JSON numbers instead of strings (0 = never, 1 = always).
    """

    venue = "kalshi"

    def __init__(self, universe: Universe, *, host: str = "127.0.0.1", port: int = 0,
                 rate: float = 5.0, seed: int = 0, faults: FaultPlan | None = None,
                 send_log: SendLog | None = None, ping_interval: float = 10.0,
                 auth_tolerance_ms: int = 5_000, rate_limit: RateLimit | None = RateLimit(),
                 outbound_limit: int = 20_000, send_buffer_bytes: int | None = None,
                 numeric_share: float = NUMERIC_SHARE, activity: ActivityMix | None = None,
                 depth: int = VENUE_DEPTH,
                 command_limits: CommandLimits | None = CommandLimits()) -> None:
        super().__init__(universe, host=host, port=port, rate=rate, seed=seed, faults=faults,
                         send_log=send_log, activity=activity, depth=depth)
        self.ping_interval = ping_interval
        self.outbound_limit = outbound_limit
        self.send_buffer_bytes = send_buffer_bytes
        if not 0 <= numeric_share <= 1:
            raise ValueError(f"numeric_share must be in [0, 1], got {numeric_share!r}")
        self.numeric_share = numeric_share
        self.command_limits = command_limits
        self.commands_refused = 0
        self.keys = KeyRegistry(auth_tolerance_ms)
        self.ticker_by_market_id = {m.kalshi_market_id: m.kalshi_ticker for m in universe.markets}
        # Randomness that only shapes presentation (decimal places, trade ids), kept
        # apart from `rng` so that who listens never changes how markets move.
        self.wire_rng = random.Random(seed + 1)
        self._stats = {t: MarketStats(last_price=_mid(ladder)) for t, ladder in self.ladders.items()}
        self._by_ticker: dict[str, dict[str, set[Subscription]]] = {
            BOOK: {}, TICKER: {}, TRADE: {}, LIFECYCLE: {}}
        self._all_markets: dict[str, set[Subscription]] = {TICKER: set(), TRADE: set(), LIFECYCLE: set()}
        self.rest = KalshiRest(self, rate_limit)

    @property
    def auth_tolerance_ms(self) -> int:
        """How far KALSHI-ACCESS-TIMESTAMP may be from the server clock, either way."""
        return self.keys.tolerance_ms

    @auth_tolerance_ms.setter
    def auth_tolerance_ms(self, value: int) -> None:
        self.keys.tolerance_ms = value

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    @property
    def rest_url(self) -> str:
        return f"{self.base_url}{REST_ROOT}"

    def register_key(self, key_id: str, public_key_pem: bytes) -> None:
        self.keys.register(key_id, public_key_pem)

    # -- SimServer hooks ---------------------------------------------------------
    def market_key(self, market: SimMarket) -> str:
        return market.kalshi_ticker

    def make_ladder(self, market: SimMarket, rng: random.Random) -> SimLadder:
        tail = DECI_CENT if market.price_level_structure == TAPERED_DECI_CENT else None
        return SimLadder(CENT, rng, self.universe.fair(market.game.game_id), tail_tick=tail, depth=self.depth)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(WS_PATH, self._ws_handler)
        self.rest.add_routes(app, REST_ROOT)

    # -- truth for tests -----------------------------------------------------------
    def book_levels(self, ticker: str) -> tuple[dict[int, int], dict[int, int]]:
        """(YES bids, NO bids): prices in ticks of $0.0001 on each side's own scale
        (NO bids at 1 - YES ask), sizes in hundredths of a contract."""
        ladder = self.ladders[ticker]
        return dict(ladder.bids), {TICKS_PER_DOLLAR - p: s for p, s in ladder.asks.items()}

    def stats(self, ticker: str) -> MarketStats:
        return self._stats[ticker]

    # -- subscriptions index -------------------------------------------------------
    def attach(self, sub: Subscription, tickers: list[str] | None) -> None:
        """Route a subscription's markets to it (None = every market, where allowed)."""
        if sub.channel not in self._by_ticker:
            return
        if tickers is None:
            self._all_markets[sub.channel].add(sub)
            return
        index = self._by_ticker[sub.channel]
        for ticker in tickers:
            index.setdefault(ticker, set()).add(sub)

    def detach(self, sub: Subscription, tickers: list[str] | None = None) -> None:
        """Stop routing `tickers` (default: all of the subscription's markets) to it."""
        if sub.channel not in self._by_ticker:
            return
        if sub.tickers is None:
            self._all_markets[sub.channel].discard(sub)
            return
        index = self._by_ticker[sub.channel]
        for ticker in tickers if tickers is not None else sub.tickers:
            subs = index.get(ticker)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del index[ticker]

    def subscribers(self, channel: str, ticker: str) -> int:
        """How many live subscriptions (all connections) receive `channel` for `ticker`."""
        return len(self._subscribers(channel, ticker)) if channel in self._by_ticker else 0

    def _subscribers(self, channel: str, ticker: str) -> list[Subscription]:
        specific = self._by_ticker[channel].get(ticker, ())
        everything = self._all_markets.get(channel, ())
        return [*specific, *everything] if everything else list(specific)

    # -- frames ------------------------------------------------------------------------
    def level_order(self, prices: Iterable[int], *, shuffled: bool = True) -> list[int]:
        """`prices` ascending, descending or (if `shuffled`) in no order at all.

        The venue promises no level order on the WS and contradicts its own docs
        on REST, so the simulator varies it; REST callers pass `shuffled=False`
        since only the two sorted orders have been seen there.
        """
        pick = self.wire_rng.randrange(3 if shuffled else 2)
        ordered = sorted(prices, reverse=pick == 1)
        if pick == 2:
            self.wire_rng.shuffle(ordered)
        return ordered

    def snapshot_msg(self, ticker: str, use_yes_price: bool) -> wire.JSON:
        yes, no_bids = self.book_levels(ticker)
        no = dict(self.ladders[ticker].asks) if use_yes_price else no_bids
        short = self.wire_rng.random() < SHORT_PRICE_SHARE
        ts_ms = time.time_ns() // 1_000_000 if self.wire_rng.random() < SNAPSHOT_TS_SHARE else None
        return wire.snapshot_msg(self.universe.by_kalshi_ticker[ticker], yes, no, short, ts_ms,
                                 self.level_order, self._numeric())

    def ticker_msg(self, market: SimMarket, ts_ms: int) -> wire.JSON:
        ladder = self.ladders[market.kalshi_ticker]
        stats = self._stats[market.kalshi_ticker]
        bid, ask = ladder.best_bid(), ladder.best_ask()
        return {
            "market_id": market.kalshi_market_id,
            "market_ticker": market.kalshi_ticker,
            "price_dollars": wire.price_str(stats.last_price),
            "yes_bid_dollars": wire.price_str(bid if bid is not None else 0),
            "yes_ask_dollars": wire.price_str(ask if ask is not None else TICKS_PER_DOLLAR),
            "volume_fp": wire.count_str(stats.volume),
            "open_interest_fp": wire.count_str(stats.open_interest),
            "dollar_volume": stats.volume // 200,
            "dollar_open_interest": stats.open_interest // 200,
            "yes_bid_size_fp": wire.count_str(ladder.bids[bid] if bid is not None else 0),
            "yes_ask_size_fp": wire.count_str(ladder.asks[ask] if ask is not None else 0),
            "last_trade_size_fp": wire.count_str(stats.last_trade_size),
            "ts": ts_ms // 1000,
            "ts_ms": ts_ms,
            "time": datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def send_ticker(self, sub: Subscription, market: SimMarket) -> None:
        msg = self.ticker_msg(market, time.time_ns() // 1_000_000)
        sub.conn.send_data(sub, "ticker", msg, wire.dumps(msg), market.kalshi_ticker, sequenced=False)

    # -- broadcasting ---------------------------------------------------------------------
    def on_lifecycle(self, transition: Transition) -> None:
        """Tell every `market_lifecycle_v2` subscriber (they all get every market); the
        close itself goes out on no channel at all, as on the venue."""
        msg = lifecycle_msg(self.universe.lifecycle, transition)
        if msg is None:
            return
        ticker = transition.market.kalshi_ticker
        msg_json = wire.dumps(msg)
        for sub in self._subscribers(LIFECYCLE, ticker):
            sub.conn.send_data(sub, LIFECYCLE, msg, msg_json, ticker)

    def publish(self, market: SimMarket, changes: list[LevelChange]) -> None:
        ticker = market.kalshi_ticker
        ts_ms = time.time_ns() // 1_000_000
        trades = self._record_trades(ticker, changes)
        book_subs = self._subscribers(BOOK, ticker)
        if book_subs:
            for change in changes:
                self._broadcast_delta(market, change, book_subs, ts_ms)
        if trades:
            trade_subs = self._subscribers(TRADE, ticker)
            for trade in trades if trade_subs else ():
                msg = self._trade_msg(market, trade, ts_ms)
                msg_json = wire.dumps(msg)
                for sub in trade_subs:
                    sub.conn.send_data(sub, "trade", msg, msg_json, ticker)
        if self._top_changed(ticker) or trades:
            ticker_subs = self._subscribers(TICKER, ticker)
            if ticker_subs:
                msg = self.ticker_msg(market, ts_ms)
                msg_json = wire.dumps(msg)
                for sub in ticker_subs:
                    sub.conn.send_data(sub, "ticker", msg, msg_json, ticker, sequenced=False)

    def _broadcast_delta(self, market: SimMarket, change: LevelChange,
                         subs: list[Subscription], ts_ms: int) -> None:
        """One delta to every subscription, serialized at most once per price scale."""
        delta = change.new_size - change.old_size
        short = self.wire_rng.random() < SHORT_PRICE_SHARE
        numeric = self._numeric()
        # Index by use_yes_price: a YES-side level reads the same on both scales,
        # a NO-side level is at 1 - p on the NO scale and at p on the YES scale.
        if change.side == "bid":
            side, prices = "yes", (change.price, change.price)
        else:
            side, prices = "no", (TICKS_PER_DOLLAR - change.price, change.price)
        variants: list[tuple[wire.JSON, str] | None] = [None, None]
        ticker = market.kalshi_ticker
        for sub in subs:
            if ticker in sub.pending:
                continue
            scale = int(sub.use_yes_price)
            variant = variants[scale]
            if variant is None:
                msg = wire.delta_msg(market, side, prices[scale], delta, short, ts_ms, numeric)
                variant = variants[scale] = (msg, wire.dumps(msg))
            sub.conn.send_data(sub, "orderbook_delta", variant[0], variant[1], ticker, change.old_size)

    def _numeric(self) -> bool:
        """Whether the next book frame spells its prices and counts as JSON numbers."""
        return self.numeric_share > 0 and self.wire_rng.random() < self.numeric_share

    def _record_trades(self, ticker: str, changes: list[LevelChange]) -> list[LevelChange]:
        """Size taken off the top of a side is, some of the time, a trade there.

        Decided for every change whether anyone listens, so the market's
        evolution for a seed does not depend on subscribers.
        """
        ladder = self.ladders[ticker]
        stats = self._stats[ticker]
        trades = []
        for change in changes:
            if change.new_size >= change.old_size:
                continue
            best = ladder.best_bid() if change.side == "bid" else ladder.best_ask()
            at_top = best is None or (change.price >= best if change.side == "bid" else change.price <= best)
            if at_top and self.rng.random() < TRADE_SHARE:
                size = change.old_size - change.new_size
                stats.last_price = change.price
                stats.volume += size
                stats.open_interest += size // 2
                stats.last_trade_size = size
                trades.append(change)
        return trades

    def _trade_msg(self, market: SimMarket, trade: LevelChange, ts_ms: int) -> wire.JSON:
        # Hitting a YES bid sells YES (= buys NO); lifting a YES ask buys YES.
        taker = "no" if trade.side == "bid" else "yes"
        return {
            "trade_id": str(uuid.UUID(int=self.wire_rng.getrandbits(128), version=4)),
            "market_ticker": market.kalshi_ticker,
            "yes_price_dollars": wire.price_str(trade.price),
            "no_price_dollars": wire.price_str(TICKS_PER_DOLLAR - trade.price),
            "count_fp": wire.count_str(trade.old_size - trade.new_size),
            "taker_side": taker,
            "taker_outcome_side": taker,
            "taker_book_side": "bid" if taker == "yes" else "ask",
            "is_block_trade": False,
            "ts": ts_ms // 1000,
            "ts_ms": ts_ms,
        }

    def _top_changed(self, ticker: str) -> bool:
        ladder = self.ladders[ticker]
        bid, ask = ladder.best_bid(), ladder.best_ask()
        top = (bid, ladder.bids[bid] if bid is not None else 0,
               ask, ladder.asks[ask] if ask is not None else 0)
        stats = self._stats[ticker]
        if top == stats.top:
            return False
        stats.top = top
        return True

    # -- WebSocket endpoint ----------------------------------------------------------------
    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_handshake():
            status = self.faults.refuse_status
            return error_response(status, "service_unavailable" if status >= 500 else "refused", "try again later")
        try:
            self.keys.verify(request.headers, "GET", request.path)
        except AuthError as exc:
            return error_response(401, "authentication_error", str(exc))
        ws = web.WebSocketResponse(autoping=False, timeout=CLOSE_TIMEOUT,
                                   max_msg_size=64 * 1024 * 1024,
                                   writer_limit=self.send_buffer_bytes or WRITER_LIMIT)
        if self.send_buffer_bytes is not None and request.transport is not None:
            sock = request.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        await ws.prepare(request)
        faults = self.register_ws(ws)
        try:
            await KalshiConnection(self, ws, request, faults).serve()
        finally:
            self.unregister_ws(ws)
        return ws


def _mid(ladder: SimLadder) -> int:
    bid, ask = ladder.best_bid(), ladder.best_ask()
    if bid is not None and ask is not None:
        return ladder.grid.floor((bid + ask) // 2)
    return bid if bid is not None else ask if ask is not None else TICKS_PER_DOLLAR // 2
