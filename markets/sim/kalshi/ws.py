"""One Kalshi WebSocket session: commands, subscriptions, per-sid sequencing, keep-alive.

Sids are numbered per connection from 1, as the venue does, so a client that
caches sids across a reconnect breaks here too.  Every data frame of a
subscription consumes one `seq` (the snapshot included); command replies carry
the sid's current seq without consuming one.

Command limits (`CommandLimits`): the venue has errors 27 ("Too many requests",
a command rate limit) and 26 ("Subscription market limit exceeded") but publishes
no numbers (protocols/kalshi.md 7.2 and appendix), so the simulator picks
values a careless client hits and a pacing one does not: a token bucket of
`command_burst` commands refilled at `commands_per_second` per connection (every
command costs one; a refused one is not executed), and at most `max_markets`
market subscriptions per connection (a market on two channels counts twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from markets.sim.faults import NO_FAULTS, Corruption, FaultState, malformed_text, truncated_text
from markets.sim.kalshi import wire
from markets.sim.kalshi.rest import TokenBucket
from markets.sim.server import Outbound

if TYPE_CHECKING:
    from markets.sim.kalshi.simulator import KalshiSimulator

log = logging.getLogger(__name__)

BOOK = "orderbook_delta"
TICKER = "ticker"
TRADE = "trade"
# Every market's lifecycle events; the venue takes no market filter on it.
LIFECYCLE = "market_lifecycle_v2"
# Channels that exist on the venue but carry nothing here (no fills, positions
# or multivariate markets are simulated); subscribing to them succeeds quietly.
QUIET_CHANNELS = frozenset({"fill", "market_positions", "user_orders", "order_group_updates",
                            "communications", "multivariate_market_lifecycle"})
CHANNELS = frozenset({BOOK, TICKER, TRADE, LIFECYCLE}) | QUIET_CHANNELS
UPDATABLE = {BOOK: frozenset({"add_markets", "delete_markets", "get_snapshot"}),
             "fill": frozenset({"add_markets", "delete_markets"}),
             "user_orders": frozenset({"add_markets", "delete_markets"})}
ACTIONS = frozenset({"add_markets", "delete_markets", "get_snapshot"})

# Error codes (docs asyncapi error table).
E_PROCESSING, E_PARAMS, E_CHANNELS, E_SIDS, E_COMMAND = 1, 2, 3, 4, 5
E_UNKNOWN_SID, E_CHANNEL, E_INVALID, E_ONE_SID, E_ACTION = 7, 8, 11, 12, 13
E_MARKET_REQUIRED, E_ACTION_REQUIRED, E_MARKET, E_INTERNAL, E_OVERFLOW = 14, 15, 16, 17, 25
E_MARKET_LIMIT, E_TOO_MANY = 26, 27
_TEXT = {E_PROCESSING: "Unable to process message", E_PARAMS: "Params required",
         E_CHANNELS: "Channels required", E_SIDS: "Subscription IDs required",
         E_COMMAND: "Unknown command", E_UNKNOWN_SID: "Unknown subscription ID",
         E_CHANNEL: "Unknown channel name", E_INVALID: "Invalid parameter",
         E_ONE_SID: "Exactly one subscription ID is required", E_ACTION: "Unsupported action",
         E_MARKET_REQUIRED: "Market Ticker required", E_ACTION_REQUIRED: "Action required",
         E_MARKET: "Market not found", E_INTERNAL: "Internal error",
         E_OVERFLOW: "Subscription buffer overflow",
         E_MARKET_LIMIT: "Subscription market limit exceeded", E_TOO_MANY: "Too many requests"}


@dataclass(frozen=True)
class CommandLimits:
    """Per-connection command rate (error 27) and market count (error 26) limits.

    Defaults: 100 commands/s with a burst of 100, 500,000 markets. The market
    figure is INV-2610's reading of the 2026-06-18 changelog; its "10k commands per
    second" is not used because nothing would ever hit it, and a limit nobody hits
    tests nothing: 100/s is what a client that sends one command per market
    overruns as soon as it subscribes a few hundred markets at once.
    """

    commands_per_second: float = 100.0
    command_burst: float = 100.0
    max_markets: int | None = 500_000

    def __post_init__(self) -> None:
        if not self.commands_per_second > 0 or not self.command_burst >= 1:
            raise ValueError(f"command limits need a rate > 0 and a burst >= 1, got {self}")
        if self.max_markets is not None and self.max_markets < 1:
            raise ValueError(f"max_markets must be >= 1 or None, got {self.max_markets!r}")


class CommandError(Exception):
    """A command the venue would answer with an `error` frame."""

    def __init__(self, code: int, detail: str | None = None, **extra: object) -> None:
        super().__init__(detail or _TEXT[code])
        self.code = code
        self.detail = detail
        self.extra = extra


@dataclass(eq=False)
class Subscription:
    """One sid: a channel, its markets (None = every market) and its seq counter."""

    conn: KalshiConnection
    sid: int
    channel: str
    tickers: list[str] | None
    use_yes_price: bool = False
    skip_ticker_ack: bool = False
    seq: int = 0
    # Tickers whose initial snapshot has not been sent yet: no deltas before it.
    pending: set[str] = field(default_factory=set)
    ticker_frames: int = 0
    active: bool = True


class KalshiConnection:
    """Serves one authenticated socket until it closes, is dropped, or the server stops."""

    def __init__(self, sim: KalshiSimulator, ws: web.WebSocketResponse, request: web.Request,
                 faults: FaultState) -> None:
        self.sim = sim
        self.ws = ws
        self.faults = faults
        self.out = Outbound(ws, request, "kalshi", sim.send_log, sim.outbound_limit)
        self.subs: dict[int, Subscription] = {}
        self._next_sid = 1
        limits = sim.command_limits
        self._bucket = (None if limits is None
                        else TokenBucket(limits.commands_per_second, limits.command_burst))
        self._awaiting_pong = False
        self._delayed: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------
    async def serve(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(), name="kalshi-heartbeat")
        try:
            async for msg in self.ws:
                if self.faults.muted:  # a black hole: hears nothing, answers nothing
                    continue
                if msg.type == WSMsgType.TEXT:
                    self.handle_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.out.put_control(wire.error_reply(None, E_PROCESSING,
                                                          "binary frames are not accepted"))
                elif msg.type == WSMsgType.PING:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await self.ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    self._awaiting_pong = False
        finally:
            heartbeat.cancel()
            for task in self._delayed:
                task.cancel()
            for sub in list(self.subs.values()):
                sub.active = False
                self.sim.detach(sub)
            self.subs.clear()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self.out.close()

    async def _heartbeat(self) -> None:
        """Ping with payload `heartbeat` every interval; a client that has not
        answered the previous ping by the next one is cut off. A muted connection
        (fault `mute_after`) neither pings nor cuts anybody off."""
        while True:
            await asyncio.sleep(self.sim.ping_interval)
            if self.faults.muted:
                continue
            if self._awaiting_pong:
                log.info("kalshi sim: dropping a client that did not answer ping")
                self.out.abort()
                return
            self._awaiting_pong = True
            try:
                await self.ws.ping(b"heartbeat")
            except (ConnectionError, RuntimeError):
                return

    # -- commands ----------------------------------------------------------------
    def handle_text(self, text: str) -> None:
        cmd_id: int | None = None
        try:
            try:
                command = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise CommandError(E_PROCESSING, "message is not valid JSON") from None
            if not isinstance(command, dict):
                raise CommandError(E_PROCESSING, "message must be a JSON object")
            raw_id = command.get("id")
            if raw_id is not None and (not isinstance(raw_id, int) or isinstance(raw_id, bool)):
                raise CommandError(E_INVALID, "id must be an integer")
            cmd_id = raw_id
            name = command.get("cmd")
            if self._bucket is not None and not self._bucket.take(1):
                self.sim.commands_refused += 1
                raise CommandError(E_TOO_MANY)
            handler = self._COMMANDS.get(name) if isinstance(name, str) else None
            if handler is None:
                raise CommandError(E_COMMAND, f"Unknown command: {name!r}")
            handler(self, cmd_id, command.get("params"))
        except CommandError as exc:
            self.out.put_control(wire.error_reply(cmd_id, exc.code, str(exc), **exc.extra))
        except Exception:  # a bug here must cost one reply, not the connection
            log.exception("kalshi sim: command failed")
            self.out.put_control(wire.error_reply(cmd_id, E_INTERNAL, _TEXT[E_INTERNAL]))

    def _subscribe(self, cmd_id: int | None, params: Any) -> None:
        params = _require_params(params)
        channels = params.get("channels")
        if not channels:
            raise CommandError(E_CHANNELS)
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise CommandError(E_INVALID, "channels must be an array of strings")
        for channel in channels:
            if channel not in CHANNELS:
                raise CommandError(E_CHANNEL, f"Unknown channel name: {channel}")
        use_yes = _optional_bool(params, "use_yes_price")
        skip_ack = _optional_bool(params, "skip_ticker_ack")
        initial_tickers = _optional_bool(params, "send_initial_snapshot")
        by_ticker = self._market_spec(params)
        by_id = self._market_ids(params)
        if BOOK in channels:
            if by_id is not None:
                raise CommandError(E_INVALID, "market_id/market_ids are not supported for orderbook_delta")
            if by_ticker is None:
                raise CommandError(E_MARKET_REQUIRED)
        if LIFECYCLE in channels and (by_ticker is not None or by_id is not None):
            raise CommandError(E_INVALID, f"market filters are not supported for {LIFECYCLE}")
        tickers = by_ticker if by_ticker is not None else by_id
        if tickers is not None:
            self._check_market_limit(len(set(tickers)) * len(set(channels)))
        for channel in channels:
            sub = Subscription(self, self._next_sid, channel,
                               None if tickers is None else list(dict.fromkeys(tickers)),
                               use_yes_price=use_yes, skip_ticker_ack=skip_ack)
            self._next_sid += 1
            self.subs[sub.sid] = sub
            self.out.put_control(wire.reply("subscribed", cmd_id,
                                            msg={"channel": channel, "sid": sub.sid}))
            self.sim.attach(sub, sub.tickers)
            if channel == BOOK and sub.tickers:
                self._initial_snapshots(sub, sub.tickers)
            elif channel == TICKER and initial_tickers:
                for ticker in sub.tickers or self.sim.universe.by_kalshi_ticker:
                    self.sim.send_ticker(sub, self.sim.universe.by_kalshi_ticker[ticker])

    def _unsubscribe(self, cmd_id: int | None, params: Any) -> None:
        params = _require_params(params)
        sids = params.get("sids")
        if not sids:
            raise CommandError(E_SIDS)
        if not isinstance(sids, list) or not all(_is_int(s) for s in sids):
            raise CommandError(E_INVALID, "sids must be an array of integers")
        for sid in sids:
            if sid not in self.subs:
                raise CommandError(E_UNKNOWN_SID, f"Unknown subscription ID: {sid}")
        for sid in sids:
            sub = self.subs.pop(sid)
            sub.active = False
            self.sim.detach(sub)
            self.out.put_control(wire.reply("unsubscribed", cmd_id, sid=sid, seq=sub.seq))

    def _update_subscription(self, cmd_id: int | None, params: Any) -> None:
        params = _require_params(params)
        sub = self.subs.get(self._single_sid(params))
        if sub is None:
            raise CommandError(E_UNKNOWN_SID)
        action = params.get("action")
        if action is None:
            raise CommandError(E_ACTION_REQUIRED)
        if action not in ACTIONS or action not in UPDATABLE.get(sub.channel, ()):
            raise CommandError(E_ACTION, f"Unsupported action {action!r} for {sub.channel}")
        tickers = self._market_spec(params)
        if tickers is None:
            raise CommandError(E_MARKET_REQUIRED)
        current = sub.tickers if sub.tickers is not None else []
        if action == "add_markets":
            added = [t for t in dict.fromkeys(tickers) if t not in current]
            self._check_market_limit(len(added))
            current.extend(added)
            sub.tickers = current
            self.sim.attach(sub, added)
        elif action == "delete_markets":
            removed = [t for t in tickers if t in current]
            sub.tickers = [t for t in current if t not in removed]
            sub.pending.difference_update(removed)
            self.sim.detach(sub, removed)
        else:
            outside = [t for t in tickers if t not in current]
            if outside:
                raise CommandError(E_INVALID, f"market not in subscription: {outside[0]}",
                                   market_ticker=outside[0])
        ack: dict[str, object] = {} if sub.skip_ticker_ack else {"market_tickers": list(sub.tickers or [])}
        self.out.put_control(wire.reply("ok", cmd_id, sid=sub.sid, seq=sub.seq, msg=ack))
        if action == "add_markets" and sub.channel == BOOK:
            self._initial_snapshots(sub, added)
        elif action == "get_snapshot":
            for ticker in dict.fromkeys(tickers):
                self.send_snapshot(sub, ticker)

    def _list_subscriptions(self, cmd_id: int | None, params: Any) -> None:
        listing = [{"channel": s.channel, "sid": s.sid} for s in self.subs.values()]
        self.out.put_control(wire.reply("ok", cmd_id, msg=listing))

    _COMMANDS = {"subscribe": _subscribe, "unsubscribe": _unsubscribe,
                 "update_subscription": _update_subscription,
                 "list_subscriptions": _list_subscriptions}

    def _check_market_limit(self, adding: int) -> None:
        """Error 26 if `adding` more market subscriptions would pass the connection's limit."""
        limits = self.sim.command_limits
        if limits is None or limits.max_markets is None:
            return
        held = sum(len(sub.tickers) for sub in self.subs.values() if sub.tickers)
        if held + adding > limits.max_markets:
            raise CommandError(E_MARKET_LIMIT, f"{_TEXT[E_MARKET_LIMIT]}: {held} subscribed, "
                                               f"{adding} more asked, limit {limits.max_markets}")

    def _market_spec(self, params: dict[str, Any]) -> list[str] | None:
        """Tickers named by `market_ticker` xor `market_tickers`; None if neither."""
        one, many = params.get("market_ticker"), params.get("market_tickers")
        if one is not None and many is not None:
            raise CommandError(E_INVALID, "market_ticker and market_tickers are mutually exclusive")
        if one is not None:
            if not isinstance(one, str):
                raise CommandError(E_INVALID, "market_ticker must be a string")
            many = [one]
        if many is None:
            return None
        if not isinstance(many, list) or not many or not all(isinstance(t, str) for t in many):
            raise CommandError(E_INVALID, "market_tickers must be a non-empty array of strings")
        for ticker in many:
            if ticker not in self.sim.universe.by_kalshi_ticker:
                raise CommandError(E_MARKET, market_ticker=ticker)
        return many

    def _market_ids(self, params: dict[str, Any]) -> list[str] | None:
        one, many = params.get("market_id"), params.get("market_ids")
        if one is None and many is None:
            return None
        ids = [one] if one is not None else many
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise CommandError(E_INVALID, "market_ids must be a non-empty array of strings")
        tickers = []
        for market_id in ids:
            ticker = self.sim.ticker_by_market_id.get(market_id)
            if ticker is None:
                raise CommandError(E_MARKET, market_id=market_id)
            tickers.append(ticker)
        return tickers

    @staticmethod
    def _single_sid(params: dict[str, Any]) -> int:
        sid, sids = params.get("sid"), params.get("sids")
        if sid is not None and sids is not None:
            raise CommandError(E_INVALID, "Either sid or sids must be provided, not both")
        if sid is None and sids is None:
            raise CommandError(E_SIDS)
        if sids is not None:
            if not isinstance(sids, list) or len(sids) != 1:
                raise CommandError(E_ONE_SID)
            sid = sids[0]
        if not _is_int(sid):
            raise CommandError(E_INVALID, "sid must be an integer")
        return int(sid)

    # -- data ------------------------------------------------------------------
    def _initial_snapshots(self, sub: Subscription, tickers: list[str]) -> None:
        """Snapshot each new market, after the plan's delay; deltas wait for it."""
        delay = self.faults.plan.snapshot_delay
        if delay <= 0:
            for ticker in tickers:
                self.send_snapshot(sub, ticker)
            return
        sub.pending.update(tickers)
        task = asyncio.create_task(self._delayed_snapshots(delay, sub, tickers))
        self._delayed.add(task)
        task.add_done_callback(self._delayed.discard)

    async def _delayed_snapshots(self, delay: float, sub: Subscription, tickers: list[str]) -> None:
        await asyncio.sleep(delay)
        if self.subs.get(sub.sid) is not sub:
            return
        for ticker in tickers:
            if ticker in sub.pending:
                self.send_snapshot(sub, ticker)

    def send_snapshot(self, sub: Subscription, ticker: str) -> None:
        sub.pending.discard(ticker)
        msg = self.sim.snapshot_msg(ticker, sub.use_yes_price)
        self.send_data(sub, "orderbook_snapshot", msg, wire.dumps(msg), ticker)

    def send_data(self, sub: Subscription, frame_type: str, msg: wire.JSON, msg_json: str,
                  ticker: str, old_size: int = 0, sequenced: bool = True) -> None:
        """Queue one data frame of `sub`, applying this connection's fault plan.

        `old_size` is the client-visible size of the level a delta touches, so a
        negative-size fault can take exactly that level below zero.
        """
        if not sub.active:
            return
        faults = self.faults.next_frame()
        if faults is NO_FAULTS:
            if sequenced:
                sub.seq += 1
                text = wire.data_frame(frame_type, sub.sid, sub.seq, msg_json)
                key = f"{sub.sid}:{sub.seq}"
            else:
                sub.ticker_frames += 1
                text = wire.data_frame(frame_type, sub.sid, None, msg_json)
                key = f"{sub.sid}:{frame_type}:{sub.ticker_frames}"
            if not self.out.put(text, ((ticker, key),)):
                self.terminate(sub, E_OVERFLOW)
            return
        if faults.stalled:
            return
        if faults.terminal_error:
            self.terminate(sub, E_INTERNAL)
            return
        if sequenced:
            sub.seq += 2 if faults.skip_seq else 1
            seq: int | None = sub.seq
            key = f"{sub.sid}:{sub.seq}"
        else:
            seq = None
            sub.ticker_frames += 1
            key = f"{sub.sid}:{frame_type}:{sub.ticker_frames}"
        text = wire.data_frame(frame_type, sub.sid, seq, msg_json)
        if faults.replace is Corruption.MALFORMED:
            text = malformed_text(text)
        elif faults.replace is Corruption.TRUNCATED:
            text = truncated_text(text)
        elif faults.replace is not None:
            bad = wire.corrupt_msg(msg, faults.replace, old_size)
            text = wire.data_frame(frame_type, sub.sid, seq, wire.dumps(bad))
        if not self.out.put(text, ((ticker, key),)):
            self.terminate(sub, E_OVERFLOW)
            return
        if faults.duplicate:
            self.out.put(text)
        if faults.unknown_type:
            self.out.put(wire.unknown_frame(sub.sid, ticker))
        if faults.drop_after_send:
            self.out.put_drop()

    def terminate(self, sub: Subscription, code: int) -> None:
        """End a subscription with a terminal error (the client must resubscribe)."""
        if self.subs.pop(sub.sid, None) is None:
            return
        sub.active = False
        self.sim.detach(sub)
        self.out.put_control(wire.reply("error", None, sid=sub.sid,
                                        msg={"code": code, "msg": _TEXT[code]}))


def _require_params(params: Any) -> dict[str, Any]:
    if params is None:
        raise CommandError(E_PARAMS)
    if not isinstance(params, dict):
        raise CommandError(E_INVALID, "params must be an object")
    return params


def _optional_bool(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise CommandError(E_INVALID, f"{name} must be a boolean")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
