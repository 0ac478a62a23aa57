"""GameShard: the latest price of each market of its games, and the signals they imply.

Prices arrive through a `PriceSubscriber` (directory, exact topics, snapshots, seq
gaps, epoch fence); model probabilities through a SUB on the fair-value feed
(`shard.fair_feed`, one topic per game, from any source). After each received
batch the games whose inputs changed are evaluated once with the pure rules in
`shard.signals`; a signal is published on the shard's PUB socket (topic
`signal/{game_id}|`, MessagePack of `to_dict()`) and logged when it appears or
changes, not again while it merely persists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from broker import security
from broker.endpoints import bind, remove_ipc_file
from broker.protocol import MAX_CONTROL_BYTES, MarketKey
from broker.tasks import run_until_stopped
from broker.universe import Game
from markets.models import MarketPrice, Platform
from shard import fair_feed
from shard.signals import FeeSchedule, find_arbitrage, find_model_edge
from shard.subscriber import Directory, PriceSubscriber

log = logging.getLogger(__name__)
signal_log = logging.getLogger("arbees.signals")

SIGNAL_TOPIC_PREFIX = b"signal/"


def signal_topic(game_id: str) -> bytes:
    return SIGNAL_TOPIC_PREFIX + game_id.encode() + b"|"


class GameShard:
    def __init__(self, shard_id: str, broker: str, signals: str, *, fair_feed_endpoint: str | None = None,
                 games: list[str] | None = None, fees: FeeSchedule | None = None, max_age: float = 30.0,
                 min_edge_cents: float = 0.0, model_threshold_cents: float = 2.0, heartbeat: float = 0.5,
                 rcvhwm: int = 100_000, allow_remote: bool = False, curve: security.CurveKeys | None = None) -> None:
        self.shard_id = shard_id
        self.signals_endpoint = signals
        self.fair_feed_endpoint = fair_feed_endpoint
        self.fixed_games = games
        self.fees = fees or FeeSchedule()
        self.max_age = max_age
        self.min_edge_cents = min_edge_cents
        self.model_threshold_cents = model_threshold_cents
        self.allow_remote = allow_remote
        self.curve = curve
        self.games: dict[str, Game] = {}
        self.game_of: dict[MarketKey, str] = {}
        self.fair: dict[str, tuple[float, int]] = {}
        self.counters: Counter[str] = Counter()
        self._dirty: set[str] = set()
        self._last_signal: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._pub: zmq.Socket | None = None
        self._fair_sub: zmq.asyncio.Socket | None = None
        self.subscriber = PriceSubscriber(
            broker, shard_id=shard_id, hello_fields=self._hello_fields, on_change=self._on_change,
            on_batch=self._evaluate, on_directory=self._on_directory,
            extra_counters=lambda: dict(self.counters), heartbeat=heartbeat, rcvhwm=rcvhwm, curve=curve)

    def _hello_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"signals": self.signals_endpoint}
        if self.fixed_games is not None:
            fields["games"] = self.fixed_games
        return fields

    async def run(self, stop: asyncio.Event) -> None:
        ctx = zmq.asyncio.Context()
        pub = zmq.Context.shadow(ctx.underlying).socket(zmq.PUB)
        fair_sub = ctx.socket(zmq.SUB)
        bound = ""
        auth = None
        try:
            pub.setsockopt(zmq.LINGER, 0)
            fair_sub.setsockopt(zmq.LINGER, 0)
            for sock in (pub, fair_sub):  # a PUB receives subscriptions: bounded too
                sock.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES)
            auth = security.start_authenticator(ctx, self.curve)
            security.server(pub, self.curve)
            bound = self.signals_endpoint = bind(pub, self.signals_endpoint, what="shard signal endpoint",
                                                 allow_remote=self.allow_remote)
            self._pub = pub
            tasks = [asyncio.create_task(self.subscriber.run(stop), name="shard-prices")]
            if self.fair_feed_endpoint:
                fair_sub.connect(self.fair_feed_endpoint)
                self._fair_sub = fair_sub
                tasks.append(asyncio.create_task(self._fair_loop(fair_sub, stop), name="shard-fair"))
            try:
                await run_until_stopped(tasks, stop)
            finally:
                stop.set()
        finally:
            pub.close(linger=0)
            fair_sub.close(linger=0)
            security.stop_authenticator(auth)
            ctx.term()
            remove_ipc_file(bound)

    # -- inputs --------------------------------------------------------------------------

    def _on_directory(self, directory: Directory) -> None:
        old = set(self.games)
        self.games = {g.game_id: g for g in directory.games}
        self.game_of = {m.key: g.game_id for g in directory.games for m in g.markets}
        if self._fair_sub is not None:
            for game_id in set(self.games) - old:
                self._fair_sub.setsockopt(zmq.SUBSCRIBE, fair_feed.fair_topic(game_id))
            for game_id in old - set(self.games):
                self._fair_sub.setsockopt(zmq.UNSUBSCRIBE, fair_feed.fair_topic(game_id))
        if set(self.games) != old:
            log.info("shard %s: %d game(s)", self.shard_id, len(self.games))

    def _on_change(self, key: MarketKey, price: MarketPrice) -> None:
        game_id = self.game_of.get(key)
        if game_id is not None:
            self._dirty.add(game_id)

    async def _fair_loop(self, sock: zmq.asyncio.Socket, stop: asyncio.Event) -> None:
        while not stop.is_set():
            parts = await sock.recv_multipart()
            try:
                if len(parts) != 2:  # a feed is any peer's PUB: a malformed message is dropped, never fatal
                    raise ValueError(f"a fair-value message has 2 frames, got {len(parts)}")
                record = fair_feed.decode_fair(parts[1])
            except ValueError as exc:
                self.counters["fair_rejected"] += 1
                log.debug("bad fair-value record: %s", exc)
                continue
            if record.game_id in self.games:
                self.fair[record.game_id] = (record.fair, record.ts_ns)
                self._dirty.add(record.game_id)
                self._evaluate()

    # -- signals -------------------------------------------------------------------------

    def latest(self, key: MarketKey) -> MarketPrice | None:
        """What the rules see: the confirmed latest record (see `PriceSubscriber.confirmed`)."""
        return self.subscriber.confirmed(key)

    def _evaluate(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        now = time.time_ns()
        for game_id in dirty:
            game = self.games.get(game_id)
            if game is not None:
                self._evaluate_game(game, now)

    def _evaluate_game(self, game: Game, now: int) -> None:
        kalshi, poly = game.market(Platform.KALSHI), game.market(Platform.POLYMARKET)
        if kalshi is not None and poly is not None:
            a, b = self.latest(kalshi.key), self.latest(poly.key)
            if a is not None and b is not None:
                arb = find_arbitrage(game.game_id, a, b, inverted=game.inverted, fees=self.fees, now_ns=now,
                                     max_age_s=self.max_age, min_edge_cents=self.min_edge_cents)
                self._emit(game.game_id, "arbitrage", arb)
        fair = self.fair.get(game.game_id)
        if fair is not None:
            best = None
            for market in game.markets:
                price = self.latest(market.key)
                if price is None:
                    continue
                edge = find_model_edge(game.game_id, price, fair[0], fees=self.fees, now_ns=now,
                                       max_age_s=self.max_age, threshold_cents=self.model_threshold_cents,
                                       fair_ts_ns=fair[1])
                if edge is not None and (best is None or edge.edge_cents_per_contract > best.edge_cents_per_contract):
                    best = edge
            self._emit(game.game_id, "model_edge", best)

    def _emit(self, game_id: str, kind: str, signal: Any) -> None:
        if signal is None:
            self._last_signal.pop((game_id, kind), None)
            return
        body = signal.to_dict()
        identity = tuple(v for k, v in sorted(body.items()) if k != "ts_ns")
        if self._last_signal.get((game_id, kind)) == identity:
            return
        self._last_signal[(game_id, kind)] = identity
        self.counters[f"signals_{kind}"] += 1
        signal_log.info("%s %s %s", kind, game_id, body)
        if self._pub is not None:
            try:
                self._pub.send_multipart((signal_topic(game_id), msgpack.packb(body)), zmq.NOBLOCK)
            except zmq.Again:
                self.counters["signals_dropped"] += 1
