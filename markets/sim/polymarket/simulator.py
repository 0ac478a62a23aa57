"""`PolymarketSimulator`: the CLOB market channel, CLOB REST and Gamma, served locally.

One ladder per market (YES scale) is the truth; each token's book is derived from
it, the NO token as the exact mirror. Every ladder move becomes ONE `price_change`
event holding an entry per changed level for each subscribed token, each entry
with its own hash and the post-change `best_bid`/`best_ask` of its token. A
shrinking top level is sometimes a trade instead: `last_trade_price` plus fresh
`book`s, as the venue sends after a match. Crossing 0.04/0.96 narrows the tick
(`tick_size_change`, a fresh `book` a little later). Only subscribed assets get
events, a client that stops sending `PING` is dropped after `ping_timeout`, and
initial snapshots past `max_assets_per_connection` are silently not sent.
Games end on the universe's timetable: the book stops at the close, listings stop
accepting orders, and at the result `market_resolved` goes to custom-feature sockets
(`markets/sim/polymarket/lifecycle.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from markets.sim.activity import ActivityMix
from markets.sim.faults import FaultPlan
from markets.sim.ladder import VENUE_DEPTH, LevelChange, SimLadder
from markets.sim.lifecycle import Change, Transition
from markets.sim.sendlog import SendLog
from markets.sim.server import CLOSE_TIMEOUT, SimServer
from markets.sim.universe import SimMarket, Universe

from . import lifecycle, wire
from .catalog import Directory, build_listings
from .clob import ClobRoutes, error_response
from .connection import Connection
from .frames import Frame
from .gamma import GammaRoutes
from .protocol import (INVALID_OPERATION, NO_NEW_ASSETS, PONG, Invalid, Ping, Subscribe,
                       Unsubscribe, parse_client_text)
from .state import MarketState, Top, Trade, initial_tick, mirror_top, tops_around
from .sweeps import LaggedRemovals

log = logging.getLogger(__name__)

WS_PATH = "/ws/market"
# Share of `book` frames whose prices drop the leading zero (".48"), as in the docs example.
BARE_PRICE_SHARE = 0.25
MAX_CLIENT_MESSAGE = 1 << 20


class PolymarketSimulator(SimServer):
    """Serves `/ws/market`, the CLOB REST root and Gamma under `/gamma` on one port.

    Tunables (all per instance): `ping_timeout` (s without a client `PING` before
    the socket is closed), `max_assets_per_connection` (initial snapshots past it
    are dropped; updates still flow), `trade_share` (share of shrinking top levels
    reported as trades), `book_after_tick_delay` (s between `tick_size_change` and
    the fresh `book`), `no_new_assets_interval` (s between `NO NEW ASSETS` texts to
    custom-feature sockets), `clob_page_size` (`/markets` page length),
    `outbound_limit` (frames a socket may have unread before it is cut off) and
    `depth` (levels per side each book starts with; 100 by default, as real books).

    Venue habits a client must survive, on by default: `sweep_lag_share` of the
    removals of a top level are reported as a sweep (a trade print, then entries that
    already carry the post-trade best prices) whose removal entry comes only after
    1..`sweep_lag_frames` more frames of the market, or `sweep_lag_seconds` at the
    latest (see `sweeps`); and only `book_after_tick_share` of tick-size changes are
    followed by a fresh `book` (the docs promise one on subscribe and after trades
    only). 0 turns the first off, 1 the second.
    """

    venue = "polymarket"

    def __init__(self, universe: Universe, *, host: str = "127.0.0.1", port: int = 0,
                 rate: float = 5.0, seed: int = 0, faults: FaultPlan | None = None,
                 send_log: SendLog | None = None, ping_timeout: float = 10.0,
                 max_assets_per_connection: int = 500, trade_share: float = 0.3,
                 book_after_tick_delay: float = 0.5, no_new_assets_interval: float = 15.0,
                 clob_page_size: int = 100, outbound_limit: int = 20_000,
                 activity: ActivityMix | None = None, depth: int = VENUE_DEPTH,
                 sweep_lag_share: float = 0.5,
                 sweep_lag_frames: int = 3, sweep_lag_seconds: float = 0.5,
                 book_after_tick_share: float = 0.5) -> None:
        super().__init__(universe, host=host, port=port, rate=rate, seed=seed, faults=faults,
                         send_log=send_log, activity=activity, depth=depth)
        self.ping_timeout = ping_timeout
        self.max_assets_per_connection = max_assets_per_connection
        self.trade_share = trade_share
        self.book_after_tick_delay = book_after_tick_delay
        self.no_new_assets_interval = no_new_assets_interval
        self.outbound_limit = outbound_limit
        self.states = {key: MarketState(self.universe.by_condition[key], ladder, ladder.grid.tick)
                       for key, ladder in self.ladders.items()}
        self.directory = Directory(build_listings(universe.markets), self.states, universe.lifecycle)
        self._clob = ClobRoutes(self.directory, clob_page_size)
        self._gamma = GammaRoutes(self.directory)
        self._mint = wire.HashMint(f"{seed}:{time.time_ns()}")
        self._event_rng = random.Random(seed + 101)
        if not 0 <= book_after_tick_share <= 1:
            raise ValueError(f"book_after_tick_share must be in [0, 1], got {book_after_tick_share!r}")
        self.book_after_tick_share = book_after_tick_share
        self.sweep_lag_seconds = sweep_lag_seconds
        self._lagged = LaggedRemovals(sweep_lag_share, sweep_lag_frames, random.Random(seed + 103))
        self._subscribers: dict[str, set[Connection]] = {}
        self._connections: set[Connection] = set()
        self._closers: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # -- URLs ------------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    @property
    def clob_url(self) -> str:
        return self.base_url

    @property
    def gamma_url(self) -> str:
        return f"{self.base_url}/gamma"

    # -- SimServer hooks -----------------------------------------------------------------
    def market_key(self, market: SimMarket) -> str:
        return market.condition_id

    def make_ladder(self, market: SimMarket, rng: random.Random) -> SimLadder:
        fair = self.universe.fair(market.game.game_id)
        return SimLadder(initial_tick(fair), rng, fair, depth=self.depth)

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._rest_faults)
        app.router.add_get(WS_PATH, self._ws_handler)
        self._clob.add_routes(app)
        self._gamma.add_routes(app)

    def publish(self, market: SimMarket, changes: list[LevelChange]) -> None:
        state = self.states[market.condition_id]
        ladder = state.ladder
        tops = tops_around(ladder.bids, ladder.asks, changes)
        # A frame that ends a hold agrees with the book: no new sweep in it, so a
        # disagreement lasts at most `sweep_lag_frames` frames, never a chain of them.
        holding = self._lagged.holding(market.condition_id)
        late = self._lagged.due(market.condition_id, changes)
        swept = None if holding else self._lagged.pick(market.condition_id, changes, tops)
        trade_at = None if swept is not None else self._pick_trade(changes, tops)
        end = len(changes) if trade_at is None else trade_at
        quoted = [(c, tops[k + 1]) for k, c in enumerate(changes[:end]) if k != swept]
        quoted.extend((c, tops[-1]) for c in late)  # the truth now, which includes them
        timestamp = wire.now_ms_text()
        state.touch()
        if swept is not None:
            self._send_trade(state, changes[swept], timestamp)
            self._flush_lagged_later(state)
        if quoted:
            self._send_price_change(state, quoted, timestamp)
        if trade_at is not None:
            self._send_trade(state, changes[trade_at], timestamp)
            self._send_books(state)
        if tops[0] != tops[-1]:
            self._send_best_bid_ask(state, timestamp)
        wanted = state.wanted_tick()
        if wanted != state.tick:
            self.change_tick_size(market.condition_id, wanted)
        state.record_mid()

    def trading(self, market: SimMarket) -> bool:
        return lifecycle.trading(self.universe.lifecycle.phase(market))

    def on_lifecycle(self, transition: Transition) -> None:
        """`market_resolved` when the result is in, to custom-feature sockets holding either
        token; the game's end before that is silent (the book just stops)."""
        if transition.change is not Change.DETERMINED:
            return
        market = transition.market
        listing = self.directory.by_condition[market.condition_id]
        frame = Frame.build(lifecycle.market_resolved_event(
            market=market, gamma_id=listing.gamma_id, event_id=listing.event_id, slug=listing.slug,
            question=listing.question, yes_wins=self.universe.lifecycle.timetable(market).yes_wins,
            timestamp=wire.now_ms_text()))
        receivers = {conn for token in (market.yes_token_id, market.no_token_id)
                     for conn in self._subscribers.get(token, ()) if conn.custom_features}
        for conn in receivers:
            conn.deliver(frame)

    # -- truth for tests ---------------------------------------------------------------------
    def true_book(self, token_id: str) -> tuple[dict[int, int], dict[int, int]]:
        """(bids, asks) of a token: prices in ticks of $0.0001, sizes in hundredths of a share."""
        return self.directory.by_token[token_id].token_book(token_id)

    def subscribers(self, token_id: str) -> int:
        """How many sockets are subscribed to the token now."""
        return len(self._subscribers.get(token_id, ()))

    def tick_size(self, token_id: str) -> int:
        """The token's current tick in ticks of $0.0001 (100 = 0.01, 10 = 0.001)."""
        return self.directory.by_token[token_id].tick

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await super().start()
        self._sweeper = asyncio.create_task(self._sweep(), name="polymarket-keepalive")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        await super().stop()
        for closer in list(self._closers):
            closer.cancel()

    # -- market events ---------------------------------------------------------------------------
    def change_tick_size(self, condition_id: str, new_tick: int) -> None:
        """Re-grid a market: `tick_size_change` to both tokens now, fresh `book`s later
        (for `book_after_tick_share` of the changes; otherwise none comes until a trade).

        The re-grid's level moves are not published as `price_change`: a client must
        drop the token's book at the tick change and get a fresh one, and level
        updates that arrive meanwhile (on the new grid) are what it must discard.
        Held sweep removals are dropped: the re-grid may have merged a level onto
        their price, and the client needs a full book anyway.
        """
        state = self.states[condition_id]
        old_tick = state.tick
        if new_tick == old_tick:
            return
        timestamp = wire.now_ms_text()
        market = state.market
        for token in (market.yes_token_id, market.no_token_id):
            subscribers = self._subscribers.get(token)
            if subscribers:
                frame = Frame.build(wire.tick_size_change_event(
                    market=condition_id, asset_id=token, old_tick=old_tick, new_tick=new_tick,
                    timestamp=timestamp))
                for conn in subscribers:
                    conn.deliver(frame)
        state.tick = new_tick
        state.ladder.set_tick(new_tick)
        state.touch()
        self._lagged.discard(condition_id)
        if self._event_rng.random() >= self.book_after_tick_share:
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def fresh_books() -> None:
            if timer is not None:
                self._timers.discard(timer)
            self._send_books(state)

        timer = loop.call_later(self.book_after_tick_delay, fresh_books)
        self._timers.add(timer)

    def _pick_trade(self, changes: list[LevelChange], tops: list[tuple[int | None, int | None]]
                    ) -> int | None:
        """Index of the change reported as a match: a shrinking level at the top of its side."""
        for k, change in enumerate(changes):
            best = tops[k][0] if change.side == "bid" else tops[k][1]
            if change.new_size < change.old_size and change.price == best:
                return k if self._event_rng.random() < self.trade_share else None
        return None

    def _flush_lagged_later(self, state: MarketState) -> None:
        """Send the held removals of a swept level after `sweep_lag_seconds` if no later
        frame of the market carried them by then (a quiet market must not keep them)."""
        timer: asyncio.TimerHandle | None = None

        def flush() -> None:
            if timer is not None:
                self._timers.discard(timer)
            self._send_late_removals(state)

        timer = asyncio.get_running_loop().call_later(self.sweep_lag_seconds, flush)
        self._timers.add(timer)

    def _send_late_removals(self, state: MarketState) -> None:
        """The removals still held back for the market, sent now with the current top."""
        late = self._lagged.flush(state.market.condition_id)
        if late:
            top = state.yes_top()
            self._send_price_change(state, [(c, top) for c in late], wire.now_ms_text())

    def pause(self) -> None:
        """Freeze the books after sending the removals sweeps still hold back: once
        paused, no report of an earlier change is owed, so nothing moves on a client."""
        super().pause()
        for state in self.states.values():
            self._send_late_removals(state)

    def _send_price_change(self, state: MarketState, changes: list[tuple[LevelChange, Top]],
                           timestamp: str) -> None:
        """One `price_change` event: an entry per change and subscribed token, each with
        the YES top after that change (mirrored for the NO token)."""
        market = state.market
        yes_subs = self._subscribers.get(market.yes_token_id, set())
        no_subs = self._subscribers.get(market.no_token_id, set())
        if not yes_subs and not no_subs:
            return
        yes_entries: list[dict[str, str]] = []
        no_entries: list[dict[str, str]] = []
        for change, top in changes:
            bid_level = change.side == "bid"
            if yes_subs:
                bid, ask = top
                yes_entries.append(wire.price_change_entry(
                    asset_id=market.yes_token_id, price=change.price, size=change.new_size,
                    buy=bid_level, hash_=self._mint.next(), best_bid=bid, best_ask=ask))
            if no_subs:
                bid, ask = mirror_top(top)
                no_entries.append(wire.price_change_entry(
                    asset_id=market.no_token_id, price=wire.mirror_price(change.price),
                    size=change.new_size, buy=not bid_level, hash_=self._mint.next(),
                    best_bid=bid, best_ask=ask))
        both = [entry for pair in zip(yes_entries, no_entries) for entry in pair]
        variants = {"both": both, "yes": yes_entries, "no": no_entries}
        targets = [(conn, "both" if conn in no_subs else "yes") for conn in yes_subs]
        targets.extend((conn, "no") for conn in no_subs if conn not in yes_subs)
        frames: dict[str, Frame] = {}
        for conn, kind in targets:
            frame = frames.get(kind)
            if frame is None:
                entries = variants[kind]
                frame = frames[kind] = Frame.build(
                    wire.price_change_event(market.condition_id, entries, timestamp),
                    [(e["asset_id"], e["hash"]) for e in entries])
            conn.deliver(frame, price_change_tick=state.tick)

    def _send_trade(self, state: MarketState, change: LevelChange, timestamp: str) -> None:
        """A match that consumed part of the top level: buyer-aggressed if an ask shrank."""
        trade = Trade(change.price, change.old_size - change.new_size, buy=change.side == "ask")
        state.last_trade = trade
        market = state.market
        for token, seen in ((market.yes_token_id, trade), (market.no_token_id, trade.mirrored())):
            subscribers = self._subscribers.get(token)
            if subscribers:
                frame = Frame.build(wire.last_trade_event(
                    market=market.condition_id, asset_id=token, price=seen.price, size=seen.size,
                    buy=seen.buy, timestamp=timestamp))
                for conn in subscribers:
                    conn.deliver(frame)

    def _book_payload(self, state: MarketState, token: str, *, with_last_trade: bool
                      ) -> dict[str, Any]:
        """A `book` object; the initial dump also carries the last trade price."""
        bids, asks = state.token_book(token)
        last = state.token_last_trade(token) if with_last_trade else None
        return wire.book_event(
            market=state.market.condition_id, asset_id=token, bids=bids, asks=asks,
            timestamp=wire.now_ms_text(), hash_=self._mint.next(),
            last_trade_price=wire.padded_price_text(last.price, state.tick) if last else None,
            bare=self._event_rng.random() < BARE_PRICE_SHARE)

    def _send_books(self, state: MarketState) -> None:
        """A full `book` per subscribed token: after a trade and after a tick change.
        It carries the truth, so removals held back after a sweep are moot."""
        self._lagged.discard(state.market.condition_id)
        for token in (state.market.yes_token_id, state.market.no_token_id):
            subscribers = self._subscribers.get(token)
            if subscribers:
                payload = self._book_payload(state, token, with_last_trade=False)
                frame = Frame.build(payload, [(token, payload["hash"])])
                for conn in subscribers:
                    conn.deliver(frame)

    def _send_best_bid_ask(self, state: MarketState, timestamp: str) -> None:
        """`best_bid_ask` for sockets that enabled custom features."""
        for token in (state.market.yes_token_id, state.market.no_token_id):
            subscribers = [c for c in self._subscribers.get(token, ()) if c.custom_features]
            if subscribers:
                bid, ask = state.token_top(token)
                frame = Frame.build(wire.best_bid_ask_event(
                    market=state.market.condition_id, asset_id=token, best_bid=bid,
                    best_ask=ask, timestamp=timestamp))
                for conn in subscribers:
                    conn.deliver(frame)

    # -- WebSocket ---------------------------------------------------------------------------------
    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_handshake():
            status = self.faults.refuse_status
            return web.Response(status=status, text=f"{status} refused by the simulator's fault plan")
        ws = web.WebSocketResponse(timeout=CLOSE_TIMEOUT, max_msg_size=MAX_CLIENT_MESSAGE)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        conn = Connection(ws, request, self.register_ws(ws), self.send_log,
                          self.outbound_limit, loop.time())
        self._connections.add(conn)
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_text(conn, message.data)
                elif message.type == WSMsgType.BINARY:
                    log.info("polymarket sim: binary frame from client rejected")
                    conn.control(INVALID_OPERATION)
        finally:
            conn.closing = True
            self._connections.discard(conn)
            self._unsubscribe(conn, list(conn.assets))
            self.unregister_ws(ws)
            await conn.outbound.close()
        return ws

    def _on_text(self, conn: Connection, text: str) -> None:
        command = parse_client_text(text)
        if isinstance(command, Ping):
            conn.last_ping = asyncio.get_running_loop().time()
            conn.control(PONG)
        elif isinstance(command, Subscribe):
            if command.initial == conn.initialized:
                problem = ("initial message sent twice" if command.initial
                           else "operation before the initial type=market message")
                self._reject(conn, problem)
                return
            conn.initialized = True
            if command.custom_features is not None:
                conn.custom_features = command.custom_features
            self._subscribe(conn, command.assets, command.initial_dump)
        elif isinstance(command, Unsubscribe):
            if not conn.initialized:
                self._reject(conn, "operation before the initial type=market message")
                return
            self._unsubscribe(conn, command.assets)
        elif isinstance(command, Invalid):
            self._reject(conn, command.reason)

    def _reject(self, conn: Connection, reason: str) -> None:
        log.info("polymarket sim: INVALID OPERATION: %s", reason)
        conn.control(INVALID_OPERATION)

    def _subscribe(self, conn: Connection, assets: tuple[str, ...], initial_dump: bool) -> None:
        """Route new assets to the socket now; their books follow (after `snapshot_delay`).

        Assets already subscribed get no new snapshot. Past the per-connection limit
        the venue keeps streaming updates but never sends the snapshot.
        """
        room = max(self.max_assets_per_connection - len(conn.assets), 0)
        new = [a for a in assets if a not in conn.assets]
        for asset in new:
            conn.assets.add(asset)
            self._subscribers.setdefault(asset, set()).add(conn)
        dumped = [a for a in new[:room] if a in self.directory.by_token]
        if not initial_dump or not dumped:
            return
        delay = conn.faults.plan.snapshot_delay
        if delay > 0:
            timer: asyncio.TimerHandle | None = None

            def later() -> None:
                if timer is not None:
                    self._timers.discard(timer)
                self._send_dump(conn, dumped)

            timer = asyncio.get_running_loop().call_later(delay, later)
            self._timers.add(timer)
        else:
            self._send_dump(conn, dumped)

    def _send_dump(self, conn: Connection, assets: list[str]) -> None:
        """ONE JSON array with a `book` per asset still subscribed, built at send time."""
        still = [a for a in assets if a in conn.assets]
        if conn.closing or not still:
            return
        payload = [self._book_payload(self.directory.by_token[a], a, with_last_trade=True)
                   for a in still]
        conn.deliver(Frame.build(payload, [(book["asset_id"], book["hash"]) for book in payload]))

    def _unsubscribe(self, conn: Connection, assets: Iterable[str]) -> None:
        for asset in assets:
            conn.assets.discard(asset)
            subscribers = self._subscribers.get(asset)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self._subscribers[asset]

    async def _sweep(self) -> None:
        """Close sockets silent past `ping_timeout`; send `NO NEW ASSETS` periodically."""
        loop = asyncio.get_running_loop()
        interval = min(max(min(self.ping_timeout / 5, self.no_new_assets_interval), 0.01), 1.0)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in list(self._connections):
                if conn.closing:
                    continue
                if now - conn.last_ping > self.ping_timeout:
                    self._expire(conn)
                elif (conn.custom_features
                      and now - conn.last_no_new_assets >= self.no_new_assets_interval):
                    conn.last_no_new_assets = now
                    conn.control(NO_NEW_ASSETS)

    def _expire(self, conn: Connection) -> None:
        log.info("polymarket sim: closing a socket that sent no PING for %.1fs", self.ping_timeout)
        conn.closing = True
        closer = asyncio.create_task(conn.ws.close(
            code=WSCloseCode.POLICY_VIOLATION, message=b"no PING received: connection timed out"))
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)

    # -- REST faults -------------------------------------------------------------------------------
    @web.middleware
    async def _rest_faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != WS_PATH:
            injected = self.next_rest_fault()
            if injected == 429:
                return error_response(429, "Too Many Requests: rate limit exceeded")
            if injected is not None:
                return error_response(injected, "Internal Server Error" if injected == 500
                                      else "Service Unavailable")
        response: web.StreamResponse = await handler(request)
        return response

