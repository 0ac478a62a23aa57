"""Following prices across workers: the directory, SUB by market topic, snapshots, gaps, epochs.

`PriceSubscriber` is what a GameShard, `arbees tail` and the launch view share. It
asks the broker where each market is published (a shard sends HELLO and receives
its games' part of the directory; a tool asks for the whole directory), connects
one SUB socket to every worker's PUB endpoint and subscribes the exact topic of
each market it follows (`markets.codec.topic`: terminated, so a market never
receives another whose id merely starts the same way). Per market it keeps a
`MarketState` (the clone pattern's ordering and the epoch fence).

Snapshots: a market that is new, changed owner, or showed a seq gap is asked for
at its owner's snapshot service (one request per worker per round, batched). A
request unanswered within `snapshot_timeout` is asked again of whoever owns the
market by then. Subscribing and snapshotting race in ZeroMQ (a subscription
reaches the PUB asynchronously), so an update published in between could be lost
with nothing after it to reveal the gap; an *audit* asks for the snapshot of every
market that has been quiet for `audit_interval` and repairs such a loss within
one interval. It is one small request per worker per interval, whatever the count
of markets.

Receiving is batched: wait for readiness, then drain without blocking (the bus's
measured cost per `await recv` is ~3x a non-blocking drain).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from broker import protocol, security
from broker.endpoints import sender
from broker.protocol import MarketKey, ProtocolError, key_text
from broker.universe import Game
from markets import codec
from markets.codec import CodecError
from markets.models import MarketPrice, PriceStatus
from markets.ws_stats import LogLimiter
from shard.histogram import BusLatency
from shard.latency import LatencyWindow
from shard.market_state import APPLIED, GAP, MarketState

log = logging.getLogger(__name__)

DRAIN_BATCH = 2048
NOT_OWNED_RETRY_NS = 100_000_000
APPLIED_BY_STATUS = {status: f"status_{status.value}" for status in PriceStatus}
"""Counter names per status of the records taken (from the bus, or newer from a snapshot): with no bus
gap they add up to the owners' `published_<status>` counts for these markets (every status change arrived)."""


@dataclass
class Directory:
    version: int = -1
    workers: dict[str, tuple[str, str]] = field(default_factory=dict)
    placed: dict[MarketKey, tuple[str, int]] = field(default_factory=dict)
    games: list[Game] = field(default_factory=list)
    shards: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_message(cls, message: protocol.Message) -> Directory:
        workers = {}
        for worker_id, entry in message.mapping("workers").items():
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("pub", "snapshot")):
                raise ProtocolError(f"directory: bad endpoints for worker {worker_id!r:.60}")
            workers[worker_id] = (entry["pub"], entry["snapshot"])
        try:
            games = [Game.from_wire(g) for g in message.sequence("games") or []]
        except ValueError as exc:
            raise ProtocolError(f"directory: {exc}") from None
        shards = {s: e["signals"] for s, e in message.mapping("shards").items()
                  if isinstance(e, dict) and isinstance(e.get("signals"), str)}
        return cls(message.integer("version"), workers, message.placed_markets("markets"), games, shards)


class PriceSubscriber:
    """Follow the markets the broker's directory names; call back on every trustworthy change.

    `shard_id` set: a GameShard (HELLO with `hello_fields()`, the broker decides its
    games). None: a tool (DIRECTORY_REQUEST; every game, filtered by `wants`).
    """

    def __init__(self, broker: str, *, shard_id: str | None = None,
                 hello_fields: Callable[[], dict[str, Any]] | None = None,
                 wants: Callable[[MarketKey], bool] | None = None,
                 on_change: Callable[[MarketKey, MarketPrice], None] | None = None,
                 on_batch: Callable[[], None] | None = None,
                 on_directory: Callable[[Directory], None] | None = None,
                 extra_counters: Callable[[], dict[str, Any]] | None = None,
                 heartbeat: float = 0.5, snapshot_timeout: float = 1.0, audit_interval: float = 5.0,
                 rcvhwm: int = 100_000, curve: security.CurveKeys | None = None) -> None:
        self.broker = broker
        self.shard_id = shard_id
        self.hello_fields = hello_fields or dict
        self.wants = wants
        self.on_change = on_change
        self.on_batch = on_batch
        self.on_directory = on_directory
        self.extra_counters = extra_counters or dict
        self.heartbeat = heartbeat
        self.snapshot_timeout_ns = int(snapshot_timeout * 1e9)
        self.audit_interval_ns = int(audit_interval * 1e9)
        self.rcvhwm = rcvhwm
        self.curve = curve
        self.broker_seen = 0.0
        """`time.monotonic()` of the last message from the broker (0: none yet); its age is a metric."""
        self.directory = Directory()
        self.states: dict[MarketKey, MarketState] = {}
        self.counters: Counter[str] = Counter()
        self.bus_latency = LatencyWindow()
        self.latency = BusLatency()
        self.on_record: Callable[[MarketPrice, int], None] | None = None
        """Optional: called with every record applied from the bus and when it was held (the load run's log)."""
        self.snapshots_received = 0
        self.first_snapshot_ns: dict[MarketKey, int] = {}
        self._topics: dict[bytes, MarketKey] = {}
        self._sub: zmq.Socket | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._pubs: set[str] = set()
        self._snap: dict[str, zmq.asyncio.Socket] = {}
        self._snap_endpoint: dict[str, str] = {}
        self._request_ids = itertools.count(1)
        self._last_audit_ns = 0
        self._log_limit = LogLimiter()

    @property
    def synced(self) -> bool:
        """True once every followed market has an answer (snapshot or first record) and nothing is awaited."""
        return bool(self.states) and all(not s.awaiting for s in self.states.values())

    # -- run -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        ctx = self._ctx = zmq.asyncio.Context()
        sub = ctx.socket(zmq.SUB)
        control = ctx.socket(zmq.DEALER)
        try:
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, self.rcvhwm)
            # Subscriptions travel to each PUB as messages on the SUB's outbound pipe: past its
            # high-water mark (1000 by default) ZeroMQ drops them silently, and a shard following
            # thousands of markets would never hear of most of them (seen at 2,000 markets).
            sub.setsockopt(zmq.SNDHWM, 0)
            sub.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_BYTES)
            control.setsockopt(zmq.LINGER, 0)
            control.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_BYTES)
            control.setsockopt(zmq.IMMEDIATE, 1)
            control.setsockopt(zmq.SNDHWM, 100)
            if self.shard_id is not None:
                control.setsockopt(zmq.ROUTING_ID, self.shard_id.encode())
            security.client(sub, self.curve)
            security.client(control, self.curve)
            control.connect(self.broker)
            self._sub = zmq.Socket.shadow(sub.underlying)
            next_beat = 0.0
            poller, watched = zmq.asyncio.Poller(), ()
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    self._send_hello(control)
                    next_beat = now + self.heartbeat
                    self._maintain(time.time_ns())
                # Rebuilt only when the directory closed or opened snapshot sockets: a new
                # Poller per round costs the hot path more than the drain it guards.
                polled = (sub, control, *self._snap.values())
                if polled != watched:
                    poller, watched = zmq.asyncio.Poller(), polled
                    for sock in polled:
                        poller.register(sock, zmq.POLLIN)
                ready = dict(await poller.poll(timeout=max(1, int((next_beat - time.monotonic()) * 1000))))
                if sub in ready:
                    self._drain_prices()
                if control in ready:
                    await self._drain_control(control)
                for sock in list(self._snap.values()):
                    if sock in ready and not sock.closed:
                        await self._drain_snapshots(sock)
        finally:
            for sock in self._snap.values():
                sock.close(linger=0)
            sub.close(linger=0)
            control.close(linger=0)
            ctx.term()

    # -- control -------------------------------------------------------------------------

    def _send_hello(self, control: zmq.asyncio.Socket) -> None:
        if self.shard_id is not None:
            frame = protocol.encode(protocol.HELLO, shard_id=self.shard_id, directory_version=self.directory.version,
                                    counters=self.report(), **self.hello_fields())
        else:
            frame = protocol.encode(protocol.DIRECTORY_REQUEST)
        try:
            sender(control).send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.counters["broker_unreachable"] += 1

    async def _drain_control(self, control: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frame = await control.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.broker_seen = time.monotonic()
            try:
                message = protocol.decode(frame)
                if message.kind == protocol.DIRECTORY:
                    directory = Directory.from_message(message)
                    if directory.version != self.directory.version or self.shard_id is None:
                        self._apply_directory(directory)
                elif message.kind == protocol.ERROR:
                    self._warn("broker_error", f"broker says: {message.body.get('error')!r:.300}")
                elif message.kind != protocol.ACK:
                    raise ProtocolError(f"a subscriber does not accept {message.kind!r} messages")
            except ProtocolError as exc:
                self.counters["control_rejected"] += 1
                self._warn("control", exc)

    def _apply_directory(self, directory: Directory) -> None:
        assert self._sub is not None and self._ctx is not None
        self.directory = directory
        if self.on_directory is not None:
            self.on_directory(directory)
        for worker_id, (pub, snapshot) in directory.workers.items():
            if pub not in self._pubs:
                if not self._connect(self._sub, pub, worker_id):
                    continue
                self._pubs.add(pub)
            sock = self._snap.get(worker_id)
            if sock is None or self._snap_endpoint.get(worker_id) != snapshot:
                if sock is not None:
                    sock.close(linger=0)
                self._snap_endpoint[worker_id] = snapshot
                sock = self._snap[worker_id] = self._ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.IMMEDIATE, 1)
                sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_BYTES)
                security.client(sock, self.curve)
                if not self._connect(sock, snapshot, worker_id):
                    self._snap.pop(worker_id).close(linger=0)
                    del self._snap_endpoint[worker_id]
        live_pubs = {pub for pub, _ in directory.workers.values()}
        for pub in self._pubs - live_pubs:
            try:
                self._sub.disconnect(pub)
            except zmq.ZMQError:
                pass
        self._pubs &= live_pubs
        for worker_id in set(self._snap) - set(directory.workers):
            self._snap.pop(worker_id).close(linger=0)
            del self._snap_endpoint[worker_id]
        wanted = {m.key for g in directory.games for m in g.markets}
        if self.wants is not None:
            wanted = {k for k in wanted if self.wants(k)}
        for key in set(self.states) - wanted:
            topic = codec.topic(*key)
            self._sub.setsockopt(zmq.UNSUBSCRIBE, topic)
            del self._topics[topic]
            del self.states[key]
        for key in wanted:
            state = self.states.get(key)
            if state is None:
                topic = codec.topic(*key)
                self._sub.setsockopt(zmq.SUBSCRIBE, topic)  # subscribe first, then snapshot (clone)
                self._topics[topic] = key
                state = self.states[key] = MarketState()
            placed = directory.placed.get(key)
            if placed is not None and state.set_epoch(placed[1]):
                state.requested_ns = 0
        self._request_snapshots(time.time_ns())

    def _connect(self, sock: zmq.Socket, endpoint: str, worker_id: str) -> bool:
        """Connect to an endpoint a worker registered; one ZeroMQ refuses is counted and skipped, never fatal."""
        try:
            sock.connect(endpoint)
            return True
        except zmq.ZMQError as exc:
            self.counters["bad_endpoint"] += 1
            self._warn("endpoint", f"worker {worker_id!r:.60}: cannot connect to {endpoint!r:.100}: {exc}")
            return False

    # -- prices --------------------------------------------------------------------------

    def _drain_prices(self) -> None:
        sub = self._sub
        assert sub is not None
        topics, states, counters = self._topics, self.states, self.counters
        on_change = self.on_change
        gaps: list[MarketKey] = []
        for _ in range(DRAIN_BATCH):
            try:
                parts = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = time.time_ns()
            if len(parts) != 2:
                counters["rejected_frames"] += 1
                continue
            key = topics.get(parts[0])
            if key is None:
                counters["unexpected_topic"] += 1
                continue
            try:
                record = codec.decode(parts[1])
            except CodecError as exc:
                counters["rejected_payload"] += 1
                self._warn("payload", exc)
                continue
            if record.market_id != key[1] or record.platform is not key[0]:
                counters["rejected_topic_mismatch"] += 1
                continue
            state = states[key]
            outcome = state.on_update(record)
            counters[outcome] += 1
            if outcome == APPLIED:
                state.confirmed_ns = now
                counters[APPLIED_BY_STATUS[record.status]] += 1
                if record.publish_ts_ns:
                    self.bus_latency.add(now - record.publish_ts_ns)
                self.latency.observe(now, record)
                if self.on_record is not None:
                    self.on_record(record, time.time_ns())  # decoded and held: the end of the data path
                if on_change is not None:
                    on_change(key, record)
            elif outcome == GAP:
                gaps.append(key)
        if gaps:
            self._request_snapshots(time.time_ns())
        if self.on_batch is not None:
            self.on_batch()

    # -- snapshots -----------------------------------------------------------------------

    def _maintain(self, now: int) -> None:
        """Re-ask overdue snapshots; audit quiet markets once per interval."""
        self._request_snapshots(now)
        if now - self._last_audit_ns >= self.audit_interval_ns:
            self._last_audit_ns = now
            quiet = [k for k, s in self.states.items() if not s.awaiting and s.latest is not None
                     and now - s.latest.publish_ts_ns >= self.audit_interval_ns]
            self._send_requests(self._by_owner(quiet), now, audit=True)

    def _request_snapshots(self, now: int) -> None:
        due = [k for k, s in self.states.items()
               if s.awaiting and (s.requested_ns == 0 or now - s.requested_ns >= self.snapshot_timeout_ns)]
        self._send_requests(self._by_owner(due), now, audit=False)

    def _by_owner(self, keys: list[MarketKey]) -> dict[str, list[MarketKey]]:
        groups: dict[str, list[MarketKey]] = {}
        placed = self.directory.placed
        for key in keys:
            owner = placed.get(key)
            if owner is not None and owner[0] in self._snap:
                groups.setdefault(owner[0], []).append(key)
        return groups

    def _send_requests(self, groups: dict[str, list[MarketKey]], now: int, *, audit: bool) -> None:
        for worker_id, keys in groups.items():
            frame = protocol.encode(protocol.SNAPSHOT_REQUEST, id=next(self._request_ids),
                                    markets=[[k[0].value, k[1]] for k in keys])
            try:
                sender(self._snap[worker_id]).send(frame, zmq.NOBLOCK)
            except zmq.Again:
                continue  # not connected yet: the next round asks again
            self.counters["snapshot_audits" if audit else "snapshot_requests"] += 1
            if not audit:
                for key in keys:
                    self.states[key].requested_ns = now

    async def _drain_snapshots(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frame = await sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._on_snapshot(protocol.decode(frame))
            except (ProtocolError, CodecError) as exc:
                self.counters["snapshot_rejected"] += 1
                self._warn("snapshot", exc)
        if self.on_batch is not None:
            self.on_batch()

    def _on_snapshot(self, message: protocol.Message) -> None:
        if message.kind == protocol.ERROR:
            raise ProtocolError(f"snapshot service says: {message.body.get('error')!r:.300}")
        if message.kind != protocol.SNAPSHOT:
            raise ProtocolError(f"expected a snapshot, got {message.kind!r}")
        records = message.sequence("records") or []
        if not all(isinstance(r, bytes) for r in records):
            raise ProtocolError("snapshot records must be binary MarketPrice payloads")
        now = time.time_ns()
        self.snapshots_received += 1
        for payload in records:
            record = codec.decode(payload)
            key = (record.platform, record.market_id)
            state = self.states.get(key)
            if state is None:
                continue
            before = state.latest
            changed = state.on_snapshot(record)
            latest = state.latest
            if latest is not None and latest.epoch == record.epoch and latest.seq >= record.seq:
                state.confirmed_ns = now
            if changed:
                self.first_snapshot_ns.setdefault(key, now)
                if latest is not None and latest is not before:
                    self.counters[APPLIED_BY_STATUS[latest.status]] += 1
                    if self.on_change is not None:
                        self.on_change(key, latest)
        for entry in message.sequence("not_owned") or []:
            # Asked before the owner took the market over (its ASSIGN and our directory race):
            # ask again shortly rather than after a whole snapshot timeout.
            key = self._entry_key(entry, 2)
            state = None if key is None else self.states.get(key)
            if state is not None and state.awaiting:
                state.requested_ns = now - self.snapshot_timeout_ns + NOT_OWNED_RETRY_NS
        for entry in message.sequence("pending") or []:
            key = self._entry_key(entry, 3)
            state = None if key is None else self.states.get(key)
            if state is not None and state.awaiting and entry[2] == state.epoch:
                state.on_snapshot(None)

    @staticmethod
    def _entry_key(entry: object, length: int) -> MarketKey | None:
        """The market of a `[venue, market_id, ...]` entry of a snapshot reply (None if malformed)."""
        if not (isinstance(entry, list) and len(entry) == length):
            return None
        try:
            return protocol.market_key(entry[0], entry[1])
        except ValueError:
            return None

    # -- reporting ------------------------------------------------------------------------

    def confirmed(self, key: MarketKey) -> MarketPrice | None:
        """The latest record with `recv_ts_ns` moved up to when it was last confirmed current.

        Quiet is not stale: a market that has not changed for minutes but whose owner's
        snapshot (the audit) still shows the same record is as fresh as that check, and
        that is the age a rule with a maximum age should see. None while awaiting a snapshot.
        """
        state = self.states.get(key)
        if state is None or state.latest is None or state.awaiting:
            return None
        latest = state.latest
        return latest if latest.recv_ts_ns >= state.confirmed_ns else latest._replace(recv_ts_ns=state.confirmed_ns)

    def report(self) -> dict[str, Any]:
        """Counters for the heartbeat; `markets` maps `venue/id` to [epoch, seq, status] of the
        latest record held (None while nothing is), comparable with a worker's report."""
        markets: dict[str, list[Any] | None] = {}
        live = 0
        for key, state in self.states.items():
            latest = state.latest
            markets[key_text(key)] = None if latest is None else [latest.epoch, latest.seq, latest.status.value]
            live += latest is not None and latest.status is PriceStatus.LIVE and not state.awaiting
        return {**self.counters, **self.extra_counters(), "markets": markets, "live": live,
                "awaiting": sum(1 for s in self.states.values() if s.awaiting),
                "bus_latency_us": self.bus_latency.summary_us(), "pid": os.getpid()}

    def _warn(self, kind: str, detail: object) -> None:
        held = self._log_limit.allow(kind)
        if held is not None:
            log.warning("subscriber: %s: %.300s (%d similar not logged)", kind, detail, held)
