"""The worker: venue WebSocket clients for the markets the broker assigned, publishing every change.

Three sockets and one loop:
* DEALER to the broker (identity = worker id): REGISTER with the markets it
  publishes (so a restarted broker can adopt them), HEARTBEAT every `heartbeat`
  seconds, and ASSIGN / ACK / REREGISTER back. The ACK says which assignment
  version the broker last sent; holding another one means an ASSIGN was lost, so
  the worker registers again and gets it re-sent.
* PUB (`workers.publisher`): one `[topic, MarketPrice]` per top-of-book or status
  change, from the venue clients' listener, inline.
* ROUTER: the snapshot service. A request names markets (or none: all of them) and
  gets the last published record of each, with its seq and epoch, so a late or
  gapped subscriber can resume without waiting for the next change.

The control loop never waits on a venue: subscriptions are carried out by
`workers.feeds` tasks, and prices are published from the socket readers'
callbacks. While the broker is unreachable the worker keeps publishing what it
owns; ownership changes only by an ASSIGN.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from broker import protocol, security
from broker.endpoints import bind, remove_ipc_file, sender
from broker.price_sources import KalshiEndpoint, PolymarketEndpoint
from broker.protocol import MarketKey, ProtocolError, key_text
from broker.tasks import run_until_stopped
from markets.models import Platform
from markets.ws_stats import LogLimiter
from workers.feeds import VenueFeeds
from workers.publisher import Publisher

if TYPE_CHECKING:
    from loadtest.instrument import FrameLog

log = logging.getLogger(__name__)

MAX_SNAPSHOT_KEYS = 100_000


class Worker:
    def __init__(self, worker_id: str, broker: str, pub: str, snapshot: str, *,
                 kalshi: KalshiEndpoint | None, polymarket: PolymarketEndpoint | None,
                 capacity: int = 10_000, heartbeat: float = 0.5, broker_timeout: float = 3.0,
                 pub_hwm: int = 100_000, allow_remote: bool = False, frame_log: FrameLog | None = None,
                 curve: security.CurveKeys | None = None) -> None:
        self.worker_id = worker_id
        self.broker = broker
        self.pub_endpoint = pub
        self.snapshot_endpoint = snapshot
        self.capacity = capacity
        self.heartbeat = heartbeat
        self.broker_timeout = broker_timeout
        self.pub_hwm = pub_hwm
        self.allow_remote = allow_remote
        self.frame_log = frame_log
        self.curve = curve
        """Optional: when each venue frame was read (the load run's log; `loadtest.instrument`)."""
        self.kalshi, self.polymarket = kalshi, polymarket
        self.assign_version = 0
        self.counters: dict[str, int] = {"assignments": 0, "registrations": 0, "snapshot_requests": 0,
                                         "control_rejected": 0, "snapshot_rejected": 0, "broker_lost": 0}
        self.publisher: Publisher | None = None
        self.feeds: VenueFeeds | None = None
        self._control: zmq.Socket | None = None
        self._broker_seen = 0.0
        self._log_limit = LogLimiter()

    async def run(self, stop: asyncio.Event) -> None:
        ctx = zmq.asyncio.Context()
        sync_ctx = zmq.Context.shadow(ctx.underlying)
        pub = sync_ctx.socket(zmq.PUB)
        snap = ctx.socket(zmq.ROUTER)
        control = ctx.socket(zmq.DEALER)
        bound: list[str] = []
        auth = None
        try:
            pub.setsockopt(zmq.LINGER, 0)
            pub.setsockopt(zmq.SNDHWM, self.pub_hwm)
            for sock in (pub, snap, control):  # a PUB receives subscriptions: bounded too
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_BYTES)
            auth = security.start_authenticator(ctx, self.curve)
            security.server(pub, self.curve)
            security.server(snap, self.curve)
            security.client(control, self.curve)
            self.pub_endpoint = bind(pub, self.pub_endpoint, what="worker PUB endpoint", allow_remote=self.allow_remote)
            bound.append(self.pub_endpoint)
            self.snapshot_endpoint = bind(snap, self.snapshot_endpoint, what="worker snapshot endpoint",
                                          allow_remote=self.allow_remote)
            bound.append(self.snapshot_endpoint)
            control.setsockopt(zmq.ROUTING_ID, self.worker_id.encode())
            control.setsockopt(zmq.IMMEDIATE, 1)  # never queue heartbeats for a broker that is not there
            control.setsockopt(zmq.SNDHWM, 100)
            control.connect(self.broker)
            self._control = sender(control)
            self.publisher = Publisher(pub)
            self.feeds = VenueFeeds(self.kalshi, self.polymarket, self.publisher.publish)
            if self.frame_log is not None:
                for venue, feed in self.feeds.feeds.items():
                    self.frame_log.attach(venue.value, feed.client.ws)
            self.feeds.start()
            self._register()
            tasks = [asyncio.create_task(self._control_loop(control, stop), name="worker-control"),
                     asyncio.create_task(self._snapshot_loop(snap, stop), name="worker-snapshots")]
            # A loop that fails ends the worker (and the launcher restarts it) rather than leaving
            # a worker that publishes but no longer answers the broker or snapshot requests.
            await run_until_stopped(tasks, stop)
        finally:
            if self.feeds is not None:
                await self.feeds.close()
            for sock in (pub, snap, control):
                sock.close(linger=0)
            security.stop_authenticator(auth)
            ctx.term()
            for endpoint in bound:
                remove_ipc_file(endpoint)

    # -- control -----------------------------------------------------------------------

    async def _control_loop(self, control: zmq.asyncio.Socket, stop: asyncio.Event) -> None:
        next_beat = time.monotonic()
        self._broker_seen = time.monotonic()
        broker_up = True
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                self._send(protocol.HEARTBEAT, worker_id=self.worker_id, counters=self.report())
                next_beat = now + self.heartbeat
                if broker_up and now - self._broker_seen > self.broker_timeout:
                    broker_up = False
                    self.counters["broker_lost"] += 1
                    log.warning("worker %s: no word from the broker for %.1f s; publishing on with the "
                                "current assignment", self.worker_id, now - self._broker_seen)
            if await control.poll(timeout=max(1, int((next_beat - time.monotonic()) * 1000))):
                while True:
                    try:
                        frame = await control.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._broker_seen = time.monotonic()
                    if not broker_up:
                        broker_up = True
                        log.info("worker %s: broker is back", self.worker_id)
                    self._on_control(frame)

    def _on_control(self, frame: bytes) -> None:
        try:
            message = protocol.decode(frame)
            if message.kind == protocol.ASSIGN:
                self._apply_assignment(message.integer("version"), message.owned_markets("markets"))
            elif message.kind == protocol.ACK:
                if message.integer("assign_version", default=0) != self.assign_version:
                    self._register()  # an ASSIGN was lost, or the broker restarted: get it again
            elif message.kind == protocol.REREGISTER:
                log.info("worker %s: broker asks to register again", self.worker_id)
                self._register()
            elif message.kind == protocol.ERROR:
                log.warning("worker %s: broker says: %.300s", self.worker_id, message.body.get("error"))
            else:
                raise ProtocolError(f"a worker does not accept {message.kind!r} messages")
        except ProtocolError as exc:
            self.counters["control_rejected"] += 1
            held = self._log_limit.allow("control")
            if held is not None:
                log.warning("worker %s: rejected control message: %s (%d similar not logged)", self.worker_id,
                            exc, held)

    def _register(self) -> None:
        assert self.publisher is not None
        self.counters["registrations"] += 1
        owned = {key: o.epoch for key, o in self.publisher.owned.items()}
        self._send(protocol.REGISTER, worker_id=self.worker_id, pub=self.pub_endpoint,
                   snapshot=self.snapshot_endpoint, capacity=self.capacity, pid=os.getpid(),
                   venues=[v.value for v in (self.feeds.feeds if self.feeds else {})],
                   owned=protocol.owned_wire(owned), counters=self.report())

    def _apply_assignment(self, version: int, markets: dict[MarketKey, int]) -> None:
        """Take exactly the broker's set: publish new ones from now (seq from 1), drop the rest."""
        assert self.publisher is not None and self.feeds is not None
        self.assign_version = version
        self.counters["assignments"] += 1
        publisher = self.publisher
        for key in [k for k in publisher.owned if k not in markets]:
            publisher.disown(key)
        wanted: dict[Platform, set[str]] = {}
        for key, epoch in markets.items():
            wanted.setdefault(key[0], set()).add(key[1])
            if publisher.own(key, epoch):
                latest = self.feeds.latest(*key)
                if latest is not None:  # already streamed here: publish its state under the new epoch now
                    publisher.publish(latest)
        self.feeds.want(wanted)
        log.info("worker %s: assignment v%d: %d market(s)", self.worker_id, version, len(markets))

    def _send(self, kind: str, **fields: Any) -> None:
        if self._control is None:
            return
        try:
            self._control.send(protocol.encode(kind, **fields), zmq.NOBLOCK)
        except zmq.Again:
            pass  # no broker connection right now; the next heartbeat tries again

    def report(self) -> dict[str, Any]:
        """Counters for the heartbeat (and so `arbees status`): no secrets, plain types.

        `markets` maps `venue/id` to [epoch, seq, status, seconds since the last publish
        (None before the first)]: what a test or an operator compares with a shard's view.
        """
        publisher, feeds = self.publisher, self.feeds
        now = time.time_ns()
        markets: dict[str, list[Any]] = {}
        statuses: dict[str, int] = {}
        if publisher is not None:
            for key, owned in publisher.owned.items():
                status = owned.status or "pending"
                age = round((now - owned.published_ns) / 1e9, 3) if owned.published_ns else None
                markets[key_text(key)] = [owned.epoch, owned.seq, status, age]
                statuses[status] = statuses.get(status, 0) + 1
        return {**self.counters, **(dict(publisher.counters) if publisher else {}),
                "statuses": statuses, "markets": markets, "venues": feeds.counters() if feeds else {}}

    # -- snapshot service ---------------------------------------------------------------------

    async def _snapshot_loop(self, snap: zmq.asyncio.Socket, stop: asyncio.Event) -> None:
        out = sender(snap)
        while not stop.is_set():
            try:
                parts = await snap.recv_multipart()
            except zmq.ZMQError:
                return
            if len(parts) != 2:
                self.counters["snapshot_rejected"] += 1
                continue
            identity, frame = parts
            reply = self._snapshot_reply(frame)
            try:
                out.send_multipart([identity, reply], zmq.NOBLOCK)
            except zmq.Again:
                self.counters["snapshot_rejected"] += 1

    def _snapshot_reply(self, frame: bytes) -> bytes:
        assert self.publisher is not None
        try:
            message = protocol.decode(frame)
            if message.kind != protocol.SNAPSHOT_REQUEST:
                raise ProtocolError(f"the snapshot service does not accept {message.kind!r} messages")
            request_id = message.integer("id")
            raw_keys = message.sequence("markets") or []
            if len(raw_keys) > MAX_SNAPSHOT_KEYS:
                raise ProtocolError(f"snapshot request for {len(raw_keys)} markets exceeds {MAX_SNAPSHOT_KEYS}")
        except ProtocolError as exc:
            self.counters["snapshot_rejected"] += 1
            return protocol.encode(protocol.ERROR, error=str(exc)[:500])
        self.counters["snapshot_requests"] += 1
        owned = self.publisher.owned
        if raw_keys:
            keys = []
            for entry in raw_keys:
                if isinstance(entry, list) and len(entry) == 2:
                    try:
                        keys.append(protocol.market_key(entry[0], entry[1]))
                    except ValueError:
                        pass
        else:
            keys = list(owned)
        records, pending, not_owned = [], [], []
        for key in keys:
            item = owned.get(key)
            if item is None:
                not_owned.append([key[0].value, key[1]])
            elif item.payload is None:
                pending.append([key[0].value, key[1], item.epoch])
            else:
                records.append(item.payload)
        return protocol.encode(protocol.SNAPSHOT, id=request_id, worker_id=self.worker_id, records=records,
                               pending=pending, not_owned=not_owned)

