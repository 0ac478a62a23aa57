"""The broker: the market universe, who owns what, who is alive, and the directory. Never market data.

One ROUTER socket serves workers, shards and tools (see `broker.protocol`). The
broker is the only writer of ownership: it places markets on live workers
(`broker.assignment`), bumps a market's epoch on every move, and tells each
worker its complete set (ASSIGN) and each shard where its markets are published
(DIRECTORY). Any message from a peer counts as its heartbeat; a worker silent for
`dead_after` seconds is declared dead and its markets go to the survivors.

Self-healing rather than reliable delivery: every ACK tells a worker which
assignment version it should hold, and every shard HELLO says which directory
version it holds, so a lost ASSIGN or DIRECTORY is noticed within a heartbeat and
sent again. That is also how a restarted broker rebuilds: it answers a heartbeat
from a worker it does not know with REREGISTER; the worker registers with the
markets it publishes (and their epochs), and the broker adopts them. Only after
`grace` seconds -- long enough for every running worker to have re-registered --
does it place markets nobody claimed, so markets already flowing never move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from broker import protocol, security
from broker.assignment import Assignment, rank
from broker.endpoints import bind, remove_ipc_file, sender
from broker.protocol import MarketKey, ProtocolError, key_text
from broker.universe import Game
from markets.ws_stats import LogLimiter

log = logging.getLogger(__name__)

MAX_WORKER_CAPACITY = 1_000_000


@dataclass
class WorkerInfo:
    worker_id: str
    pub: str
    snapshot: str
    capacity: int
    pid: int
    last_seen: float
    registered_at: float
    counters: dict[str, Any] = field(default_factory=dict)
    assign_version: int = 0


@dataclass
class ShardInfo:
    shard_id: str
    signals: str
    fixed_games: list[str] | None
    last_seen: float
    counters: dict[str, Any] = field(default_factory=dict)
    directory_version: int = -1


class Broker:
    """Run with `await broker.run(stop)`; `endpoint` is the control ROUTER's bind address."""

    def __init__(self, games: list[Game], endpoint: str, *, dead_after: float = 3.0,
                 heartbeat: float = 0.5, grace: float | None = None, allow_remote: bool = False,
                 curve: security.CurveKeys | None = None) -> None:
        if dead_after <= 0 or heartbeat <= 0:
            raise ValueError("dead_after and heartbeat must be > 0 seconds")
        self.games = games
        self.games_by_id = {g.game_id: g for g in games}
        self.universe: list[MarketKey] = [m.key for g in games for m in g.markets]
        self.universe_set = set(self.universe)
        self.endpoint = endpoint
        self.dead_after = dead_after
        self.heartbeat = heartbeat
        self.grace = 3 * heartbeat if grace is None else grace
        self.allow_remote = allow_remote
        self.curve = curve
        self.assignment = Assignment()
        self.workers: dict[str, WorkerInfo] = {}
        self.shards: dict[str, ShardInfo] = {}
        self.directory_version = 0
        self.counters: Counter[str] = Counter()
        self.bound_endpoint = ""
        self.started = time.monotonic()
        self._out: zmq.Socket | None = None
        self._log_limit = LogLimiter()

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_BYTES)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted peer with the same id takes its route over
        auth = None
        try:
            auth = security.start_authenticator(ctx, self.curve)
            security.server(sock, self.curve)
            self.bound_endpoint = bind(sock, self.endpoint, what="broker control endpoint",
                                       allow_remote=self.allow_remote)
            self._out = sender(sock)
            self.started = time.monotonic()
            if ready is not None:
                ready.set()
            tick = min(0.1, self.heartbeat / 2)
            while not stop.is_set():
                if await sock.poll(timeout=int(tick * 1000)):
                    for _ in range(1000):
                        try:
                            identity, frame = await sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        except ValueError:  # not exactly [identity, frame]
                            self._reject("frame_count", "expected one frame")
                            continue
                        self._on_message(identity, frame, time.monotonic())
                self._housekeeping(time.monotonic())
        finally:
            sock.close(linger=0)
            security.stop_authenticator(auth)
            ctx.term()
            remove_ipc_file(self.bound_endpoint or self.endpoint)

    # -- messages --------------------------------------------------------------------

    def _on_message(self, identity: bytes, frame: bytes, now: float) -> None:
        try:
            message = protocol.decode(frame)
            handler = _HANDLERS.get(message.kind)
            if handler is None:
                raise ProtocolError(f"a broker does not accept {message.kind!r} messages")
            handler(self, identity, message, now)
        except ProtocolError as exc:
            self._reject("protocol", exc)
            self._send(identity, protocol.ERROR, error=str(exc)[:500])

    def _on_register(self, identity: bytes, message: protocol.Message, now: float) -> None:
        worker_id = message.text("worker_id", limit=128)
        if identity != worker_id.encode():
            raise ProtocolError(f"worker id {worker_id!r} does not match its socket identity")
        capacity = message.integer("capacity", minimum=1)
        owned = message.owned_markets("owned")
        info = WorkerInfo(worker_id, message.text("pub"), message.text("snapshot"),
                          min(capacity, MAX_WORKER_CAPACITY), message.integer("pid", default=0), now, now,
                          dict(message.mapping("counters")))
        known = worker_id in self.workers
        self.workers[worker_id] = info
        self.assignment.capacity[worker_id] = info.capacity
        venues = message.strings("venues", optional=True)
        if venues is not None:
            self.assignment.venues[worker_id] = frozenset(venues)
        refused = self.assignment.adopt(worker_id, owned, self.universe_set)
        # What the table still gives it but it no longer claims (it restarted within dead_after and
        # lost its state) stays its own under a new epoch: its seq starts again at 1, and a
        # subscriber must see a new ownership rather than a seq that went backwards.
        for key in self.assignment.markets_of(worker_id).keys() - owned.keys():
            self.assignment.owner[key] = (worker_id, self.assignment.next_epoch())
        self.counters["registrations"] += 1
        log.info("worker %s registered (%s, pid %d, capacity %d, %d market(s) claimed, %d refused)",
                 worker_id, "again" if known else "new", info.pid, info.capacity, len(owned), len(refused))
        touched = {worker_id}
        if self._past_grace(now):
            touched |= self.assignment.place(self.assignment.unowned(self.universe))
            if not known:
                touched |= self.assignment.rebalance(self.universe, worker_id)
        self._publish_changes(touched)

    def _on_heartbeat(self, identity: bytes, message: protocol.Message, now: float) -> None:
        worker_id = message.text("worker_id", limit=128)
        info = self.workers.get(worker_id)
        if info is None or identity != worker_id.encode():
            self._send(identity, protocol.REREGISTER, reason="unknown worker")
            return
        info.last_seen = now
        info.counters = dict(message.mapping("counters"))
        self._send(identity, protocol.ACK, assign_version=info.assign_version)

    def _on_hello(self, identity: bytes, message: protocol.Message, now: float) -> None:
        shard_id = message.text("shard_id", limit=128)
        if identity != shard_id.encode():
            raise ProtocolError(f"shard id {shard_id!r} does not match its socket identity")
        fixed = message.strings("games", optional=True)
        if fixed is not None:
            unknown = [g for g in fixed if g not in self.games_by_id]
            if unknown:
                raise ProtocolError(f"shard {shard_id}: unknown game(s) {', '.join(unknown[:5])}")
        info = self.shards.get(shard_id)
        if info is None or info.fixed_games != fixed:
            log.info("shard %s joined (%s)", shard_id, f"{len(fixed)} fixed game(s)" if fixed else "games assigned")
            info = self.shards[shard_id] = ShardInfo(shard_id, message.text("signals", optional=True), fixed, now)
            self._bump_directory()
        info.last_seen = now
        info.counters = dict(message.mapping("counters"))
        held = message.integer("directory_version", minimum=-1, default=-1)
        if held != self.directory_version:
            self._send(identity, protocol.DIRECTORY, **self._directory_for(shard_id))
        else:
            self._send(identity, protocol.ACK, directory_version=self.directory_version)

    def _on_status_request(self, identity: bytes, message: protocol.Message, now: float) -> None:
        self._send(identity, protocol.STATUS, status=self.status(now))

    def _on_directory_request(self, identity: bytes, message: protocol.Message, now: float) -> None:
        self._send(identity, protocol.DIRECTORY, **self._directory_for(None))

    # -- time ----------------------------------------------------------------------------

    def _housekeeping(self, now: float) -> None:
        touched: set[str] = set()
        for worker_id, info in list(self.workers.items()):
            if now - info.last_seen > self.dead_after:
                orphaned = self.assignment.remove_worker(worker_id)
                del self.workers[worker_id]
                self.counters["workers_declared_dead"] += 1
                self.counters["markets_reassigned"] += len(orphaned)
                log.warning("worker %s silent for %.1f s: declared dead; moving its %d market(s)",
                            worker_id, now - info.last_seen, len(orphaned))
                self._bump_directory()
        for shard_id, shard in list(self.shards.items()):
            if now - shard.last_seen > self.dead_after:
                del self.shards[shard_id]
                log.warning("shard %s silent for %.1f s: forgotten; its games go to the others", shard_id,
                            now - shard.last_seen)
                self._bump_directory()
        if self._past_grace(now):
            unowned = self.assignment.unowned(self.universe)
            if unowned and self.workers:
                touched |= self.assignment.place(unowned)
        self._publish_changes(touched)

    def _past_grace(self, now: float) -> bool:
        return now - self.started >= self.grace

    # -- outbound ------------------------------------------------------------------------

    def _publish_changes(self, workers: Iterable[str]) -> None:
        """Send ASSIGN to the given workers; a change of ownership is a new directory for shards."""
        workers = [w for w in workers if w in self.workers]
        if not workers:
            return
        for worker_id in workers:
            info = self.workers[worker_id]
            info.assign_version += 1
            self._send(worker_id.encode(), protocol.ASSIGN, version=info.assign_version,
                       markets=protocol.owned_wire(self.assignment.markets_of(worker_id)))
        self._bump_directory()

    def _bump_directory(self) -> None:
        """Shards learn of a new version from the ACK/DIRECTORY to their next HELLO; push it now too."""
        self.directory_version += 1
        for shard_id in self.shards:
            self._send(shard_id.encode(), protocol.DIRECTORY, **self._directory_for(shard_id))
            self.shards[shard_id].directory_version = self.directory_version

    def _games_of(self, shard_id: str) -> list[Game]:
        """A shard's games: its fixed list, else its rendezvous share of the games no shard fixed."""
        shard = self.shards[shard_id]
        if shard.fixed_games is not None:
            return [self.games_by_id[g] for g in shard.fixed_games]
        fixed = {g for s in self.shards.values() if s.fixed_games for g in s.fixed_games}
        flexible = [s for s, info in self.shards.items() if info.fixed_games is None]
        return [g for g in self.games if g.game_id not in fixed
                and rank((g.markets[0].venue, g.game_id), flexible)[0] == shard_id]

    def _directory_for(self, shard_id: str | None) -> dict[str, Any]:
        """The directory as one shard needs it (its games' markets), or all of it (tools)."""
        games = self.games if shard_id is None else self._games_of(shard_id)
        keys = {m.key for g in games for m in g.markets}
        placed = {k: v for k, v in self.assignment.owner.items() if k in keys}
        return {
            "version": self.directory_version,
            "workers": {w: {"pub": i.pub, "snapshot": i.snapshot} for w, i in self.workers.items()},
            "markets": protocol.placed_wire(placed),
            "games": [g.to_wire() for g in games],
            "shards": {s: {"signals": i.signals} for s, i in self.shards.items() if i.signals},
        }

    def _send(self, identity: bytes, kind: str, **fields: Any) -> None:
        out = self._out
        if out is None:
            return
        try:
            out.send_multipart([identity, protocol.encode(kind, **fields)], zmq.NOBLOCK)
        except zmq.Again:
            self.counters["send_dropped"] += 1
        except zmq.ZMQError as exc:  # e.g. EHOSTUNREACH with ROUTER_MANDATORY; never fatal
            self.counters["send_failed"] += 1
            log.debug("send to %r failed: %s", identity, exc)

    def _reject(self, reason: str, detail: object) -> None:
        self.counters[f"rejected_{reason}"] += 1
        held = self._log_limit.allow(reason)
        if held is not None:
            log.warning("broker: rejected control message (%s): %.300s (%d similar not logged)", reason, detail, held)

    # -- status --------------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        """The broker's view as one JSON-able document (no secrets: endpoints, ids, counters)."""
        return {
            "broker": {"endpoint": self.bound_endpoint, "uptime_s": round(now - self.started, 3),
                       "directory_version": self.directory_version, "counters": dict(self.counters),
                       "games": len(self.games), "markets": len(self.universe)},
            "workers": {w: {"pid": i.pid, "pub": i.pub, "snapshot": i.snapshot, "capacity": i.capacity,
                            "heartbeat_age_s": round(now - i.last_seen, 3),
                            "markets": len(self.assignment.markets_of(w)), "counters": i.counters}
                        for w, i in self.workers.items()},
            "shards": {s: {"heartbeat_age_s": round(now - i.last_seen, 3), "signals": i.signals,
                           "games": len(self._games_of(s)), "counters": i.counters}
                       for s, i in self.shards.items()},
            "assignment": {key_text(k): {"worker": w, "epoch": e}
                           for k, (w, e) in sorted(self.assignment.owner.items(), key=lambda kv: key_text(kv[0]))},
            "unassigned": [key_text(k) for k in self.assignment.unowned(self.universe)],
        }


_HANDLERS = {
    protocol.REGISTER: Broker._on_register,
    protocol.HEARTBEAT: Broker._on_heartbeat,
    protocol.HELLO: Broker._on_hello,
    protocol.STATUS_REQUEST: Broker._on_status_request,
    protocol.DIRECTORY_REQUEST: Broker._on_directory_request,
}
