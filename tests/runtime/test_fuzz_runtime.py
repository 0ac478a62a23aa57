"""Thousands of seeded bad frames against running roles: they survive, count each one, and change nothing.

Real processes over real ipc sockets. The broker gets malformed control frames,
wrong types and versions, fields of the wrong type, spoofed and unknown worker
ids, replayed registrations with old epochs, frames in the wrong count, and
oversized frames; a worker's snapshot service gets the same kinds of requests;
a shard, run against a broker, worker and fair-value feed played by the test,
gets malformed bus payloads, records under the wrong topic, replayed old epochs
and duplicates, malformed directories and snapshot replies, and oversized frames.
Each receiver's own counters (through `arbees status`, or the shard's HELLO)
must account for every frame, and the state they guard (the assignment, the
shard's latest records) must be what it was. Counts are printed (`-s`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import zmq

from broker import protocol
from broker.endpoints import remove_ipc_file
from broker.protocol import MarketKey, key_text
from broker.universe import Game, sim_games
from markets import codec
from markets.models import MarketPrice
from shard.fair_feed import fair_topic
from tests.runtime.conftest import Cluster, wait_for
from tests.runtime.fuzz_frames import (
    Junk,
    bad_owned,
    bad_payload,
    is_count,
    is_text,
    record,
)

SEED = 20261130
FRAMES = 3000
SETTLE = 30.0
OVERSIZED = protocol.MAX_CONTROL_BYTES + 1

pytestmark = pytest.mark.timeout(180)


class Dealer:
    """A DEALER that sends frames and checks the replies: every `reply` it was told to expect, no more.

    It waits for the replies every `WINDOW` frames, so that no reply is dropped at a
    high-water mark on the way back (the roles send with NOBLOCK) and each is accounted for.
    """

    WINDOW = 200

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, 10_000)  # a receiver that stopped reading fails the test, not hangs it
        self.sock.connect(endpoint)
        self.expected: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()

    def send(self, *parts: bytes, reply: str | None) -> None:
        self.sock.send_multipart(list(parts))
        if reply is not None:
            self.expected[reply] += 1
        if self.expected.total() - self.replies.total() >= self.WINDOW:
            self.catch_up()

    def catch_up(self) -> None:
        deadline = time.monotonic() + 20
        while self.replies != self.expected and time.monotonic() < deadline:
            if self.sock.poll(100):
                self.replies[protocol.decode(self.sock.recv()).kind] += 1
        assert self.replies == self.expected, (dict(self.expected), dict(self.replies))


def control_frames(junk: Junk, owned: list[list[Any]]) -> list[tuple[str, bytes]]:
    """(the broker's reply, frame): ERROR for each it rejects, REREGISTER for an unknown or spoofed worker id."""
    rng = junk.rng
    made: list[tuple[str, bytes]] = []
    for _ in range(FRAMES):
        case = rng.randrange(9)
        if case == 0:
            made.append((protocol.ERROR, junk.garbage()))
        elif case == 1:
            made.append((protocol.ERROR, junk.bad_version(rng.choice(["register", "heartbeat", "hello"]))))
        elif case == 2:
            made.append((protocol.ERROR, junk.unknown_type()))
        elif case == 3:  # valid messages a broker never accepts
            made.append((protocol.ERROR, junk.message(rng.choice(["assign", "ack", "directory", "snapshot", "error",
                                                               "reregister", "snapshot_request", "status"]))))
        elif case == 4:  # replayed registration of a real worker with old epochs, from another socket
            stale = [[v, m, max(1, e - rng.randrange(1, 1000))] for v, m, e in owned]
            made.append((protocol.ERROR, junk.message("register", worker_id="w0", pub="ipc:///tmp/x", snapshot="ipc:///x",
                                                  capacity=10, owned=stale, counters={})))
        elif case == 5:  # a heartbeat from an unknown or spoofed worker id: told to register, nothing else
            worker = rng.choice(["w0", "w1", junk.text()])
            made.append((protocol.REREGISTER, junk.message("heartbeat", worker_id=worker, counters={})))
        elif case == 6:
            made.append((protocol.ERROR, junk.message("heartbeat", worker_id=junk.not_of(is_text))))
        elif case == 7:
            made.append((protocol.ERROR, junk.message(
                rng.choice(["register", "hello"]), worker_id=junk.text(), shard_id=junk.text(), capacity=junk.value(),
                owned=bad_owned(junk), games=junk.value(), counters=junk.value())))
        else:
            made.append((protocol.ERROR, junk.non_string_keyed_map()))
    return made


def snapshot_frames(junk: Junk) -> list[tuple[str, bytes]]:
    """(the snapshot service's reply, frame): ERROR for each it rejects, SNAPSHOT for a well-formed request."""
    rng = junk.rng
    made: list[tuple[str, bytes]] = []
    for _ in range(FRAMES):
        case = rng.randrange(7)
        if case == 0:
            made.append((protocol.ERROR, junk.garbage()))
        elif case == 1:
            made.append((protocol.ERROR, junk.bad_version("snapshot_request")))
        elif case == 2:
            kind = rng.choice(["heartbeat", "register", "status_request", "snapshot"])
            made.append((protocol.ERROR, junk.message(kind)))
        elif case == 3:
            made.append((protocol.ERROR, junk.message("snapshot_request", id=junk.not_of(is_count), markets=[])))
        elif case == 4:
            made.append((protocol.ERROR, junk.message("snapshot_request", id=1,
                                                  markets=junk.not_of(lambda v: isinstance(v, list) or v is None))))
        elif case == 5:  # a well-formed request naming junk markets: answered, the junk is skipped
            made.append((protocol.SNAPSHOT, junk.message("snapshot_request", id=rng.randrange(1, 1000), markets=[
                junk.value() for _ in range(rng.randrange(1, 6))] + [["kalshi", ["not", "a", "string"]]])))
        else:
            made.append((protocol.ERROR, junk.unknown_type()))
    made.append((protocol.ERROR, junk.message("snapshot_request", id=1, markets=[["kalshi", "X"]] * 100_001)))
    return made


def send_all(dealer: Dealer, frames: list[tuple[str, bytes]], wrong_count: int) -> Counter[str]:
    """Send each frame expecting its reply, then `wrong_count` messages of two frames (refused unanswered)."""
    for reply, frame in frames:
        dealer.send(frame, reply=reply)
    for _ in range(wrong_count):
        dealer.send(b"one", b"two", reply=None)
    dealer.catch_up()
    return Counter(dealer.expected)


def send_oversized(ctx: zmq.Context, endpoint: str) -> None:
    """Frames beyond MAXMSGSIZE: ZeroMQ drops the connection before the role sees them."""
    big = Dealer(ctx, endpoint)
    for _ in range(3):
        big.sock.send(b"\x00" * OVERSIZED)
    time.sleep(0.5)
    big.sock.close(linger=0)


def worker_markets(status: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {market: (worker_id, entry[0]) for worker_id, info in status["workers"].items()
            for market, entry in info["counters"]["markets"].items()}


def both_workers(status: dict[str, Any] | None) -> dict[str, Any] | None:
    """The status once w0 and w1 both run and report exactly what the broker assigned them
    (their heartbeats lag an assignment by up to one period)."""
    if status is None or set(status["workers"]) != {"w0", "w1"}:
        return None
    assigned = {market: (entry["worker"], entry["epoch"]) for market, entry in status["assignment"].items()}
    return status if worker_markets(status) == assigned else None


def test_broker_and_worker_survive_fuzzed_control_and_snapshot_requests(cluster: Cluster) -> None:
    cluster.sim()
    cluster.broker()
    for worker_id in ("w0", "w1"):
        cluster.worker(worker_id)
    cluster.shard("s0")
    before = wait_for(lambda: both_workers(cluster.in_step(["s0"], 40)), SETTLE, "the cluster to settle on w0, w1")
    owned = [[*key.split("/", 1), entry["epoch"]] for key, entry in before["assignment"].items()
             if entry["worker"] == "w0"]
    junk = Junk(SEED)
    ctx = zmq.Context()
    try:
        control = Dealer(ctx, cluster.broker_endpoint)
        expected_control = send_all(control, control_frames(junk, owned), wrong_count=100)
        snapshot = Dealer(ctx, before["workers"]["w0"]["snapshot"])
        expected_snapshot = send_all(snapshot, snapshot_frames(junk), wrong_count=100)
        send_oversized(ctx, cluster.broker_endpoint)
        send_oversized(ctx, before["workers"]["w0"]["snapshot"])
        # The worker still answers a real request after all that.
        snapshot.send(protocol.encode(protocol.SNAPSHOT_REQUEST, id=7, markets=[]), reply=protocol.SNAPSHOT)
        snapshot.catch_up()
    finally:
        ctx.destroy(linger=0)
    after = cluster.status()
    counters = after["broker"]["counters"]
    w0 = after["workers"]["w0"]["counters"]
    print(f"\nbroker: {sum(expected_control.values()) + 100 + 3} frames ({dict(expected_control)}, 100 in the "
          f"wrong frame count, 3 oversized); counted rejected_protocol={counters.get('rejected_protocol')} "
          f"rejected_frame_count={counters.get('rejected_frame_count')}")
    print(f"worker snapshot service: {sum(expected_snapshot.values()) + 100 + 3} frames "
          f"({dict(expected_snapshot)}); counted snapshot_rejected={w0['snapshot_rejected']}")
    assert counters.get("rejected_protocol", 0) - before["broker"]["counters"].get("rejected_protocol", 0) \
        == expected_control[protocol.ERROR]
    assert counters.get("rejected_frame_count", 0) == 100
    assert w0["snapshot_rejected"] - before["workers"]["w0"]["counters"]["snapshot_rejected"] \
        == expected_snapshot[protocol.ERROR] + 100
    assert {p.name: p.popen.poll() for p in cluster.procs} == dict.fromkeys((p.name for p in cluster.procs), None)
    assert after["assignment"] == before["assignment"]
    assert worker_markets(after) == worker_markets(before)
    assert set(after["workers"]) == {"w0", "w1"} and set(after["shards"]) == {"s0"}
    assert after["broker"]["directory_version"] == before["broker"]["directory_version"]


def test_a_registration_naming_unusable_endpoints_does_not_take_a_shard_down(cluster: Cluster) -> None:
    """Well-formed, so the broker accepts it and puts it in the directory; the shard must skip it and live on."""
    cluster.sim()
    cluster.broker()
    cluster.worker("w0")
    cluster.shard("s0")
    wait_for(lambda: cluster.in_step(["s0"], 40), SETTLE, "the cluster to settle")
    ctx = zmq.Context()
    try:
        rogue = ctx.socket(zmq.DEALER)
        rogue.setsockopt(zmq.LINGER, 0)
        rogue.setsockopt(zmq.ROUTING_ID, b"rogue")
        rogue.connect(cluster.broker_endpoint)
        rogue.send(protocol.encode(protocol.REGISTER, worker_id="rogue", pub="garbage", snapshot="tcp://nonsense",
                                   capacity=1, owned=[], counters={}))

        wait_for(lambda: cluster.status()["shards"]["s0"]["counters"].get("bad_endpoint", 0) >= 1, SETTLE,
                 "the shard to skip the rogue worker")
    finally:
        ctx.destroy(linger=0)
    # The rogue never heartbeats: declared dead, its market goes back, and everything flows at the shard again.
    wait_for(lambda: cluster.in_step(["s0"], 40), SETTLE, "the cluster to settle again without the rogue")
    assert all(p.popen.poll() is None for p in cluster.procs)


class FakeRuntime:
    """The shard's whole world played by the test: a broker, one worker (PUB + snapshot service), a fair feed.

    It answers HELLO with one directory (version 1) and snapshot requests with
    `latest`; everything else it sends is chosen by the test.
    """

    EPOCH = 1000

    def __init__(self, ctx: zmq.Context, cluster: Cluster, games: list[Game]) -> None:
        self.endpoints = {name: cluster.endpoint(name) for name in ("fb", "wf-pub", "wf-snap", "ff")}
        self.broker, self.snap = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
        self.pub, self.fair = ctx.socket(zmq.PUB), ctx.socket(zmq.PUB)
        for sock, name in ((self.broker, "fb"), (self.pub, "wf-pub"), (self.snap, "wf-snap"), (self.fair, "ff")):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)  # never drop: every frame sent must be counted at the shard
            sock.bind(self.endpoints[name])
        self.games = games
        self.keys: list[MarketKey] = [m.key for g in games for m in g.markets]
        self.latest = {key: record(key, 3, self.EPOCH) for key in self.keys}
        self.report: dict[str, Any] = {}
        self.shard_identity = b""
        self.snapshot_identity = b""

    def directory(self) -> bytes:
        return protocol.encode(protocol.DIRECTORY, version=1, workers={
            "wf": {"pub": self.endpoints["wf-pub"], "snapshot": self.endpoints["wf-snap"]}},
            markets=protocol.placed_wire({k: ("wf", self.EPOCH) for k in self.keys}),
            games=[g.to_wire() for g in self.games], shards={})

    def serve(self, seconds: float = 0.0, until: Callable[[], bool] | None = None, what: str = "") -> None:
        deadline = time.monotonic() + (20.0 if until else seconds)
        while time.monotonic() < deadline:
            if until is not None and until():
                return
            for sock in (self.broker, self.snap):
                while sock.poll(0):
                    identity, frame = sock.recv_multipart()
                    self._answer(sock, identity, protocol.decode(frame))
            time.sleep(0.01)
        assert until is None or until(), f"timed out waiting for {what}"

    def _answer(self, sock: zmq.Socket, identity: bytes, message: protocol.Message) -> None:
        if message.kind == protocol.HELLO:
            self.shard_identity, self.report = identity, dict(message.mapping("counters"))
            held = message.integer("directory_version", minimum=-1)
            sock.send_multipart([identity, self.directory() if held != 1 else
                                 protocol.encode(protocol.ACK, directory_version=1)])
        elif message.kind == protocol.SNAPSHOT_REQUEST:
            self.snapshot_identity = identity
            wanted = [protocol.market_key(v, m) for v, m in message.sequence("markets") or []] or self.keys
            sock.send_multipart([identity, protocol.encode(protocol.SNAPSHOT, id=message.integer("id"), worker_id="wf",
                                 records=[codec.encode(self.latest[k]) for k in wanted], pending=[], not_owned=[])])

    def publish(self, key: MarketKey, price: MarketPrice) -> None:
        self.pub.send_multipart([codec.topic(*key), codec.encode(price)])

    def held(self) -> dict[str, Any]:
        return {key_text(k): [p.epoch, p.seq, p.status.value] for k, p in self.latest.items()}

    def close(self) -> None:
        for sock in (self.broker, self.snap, self.pub, self.fair):
            sock.close(linger=0)
        for endpoint in self.endpoints.values():
            remove_ipc_file(endpoint)


def bus_frames(junk: Junk, keys: list[MarketKey],
               latest: dict[MarketKey, MarketPrice]) -> list[tuple[str, list[bytes]]]:
    """(the shard counter each must move, multipart message) for the price bus."""
    rng = junk.rng
    made: list[tuple[str, list[bytes]]] = []
    for _ in range(FRAMES):
        key, other = rng.sample(keys, 2)
        current = latest[key]
        case = rng.randrange(5)
        if case == 0:
            made.append(("rejected_payload", [codec.topic(*key), bad_payload(junk)]))
        elif case == 1:  # a record of one market under another's topic
            made.append(("rejected_topic_mismatch", [codec.topic(*other), codec.encode(
                record(key, current.seq + 1, current.epoch))]))
        elif case == 2:  # a replay from an owner the directory has since replaced
            made.append(("zombie", [codec.topic(*key), codec.encode(record(
                key, rng.randrange(1, 10**6), rng.randrange(1, current.epoch), bid=0.9))]))
        elif case == 3:
            made.append(("duplicate", [codec.topic(*key), codec.encode(record(
                key, rng.randrange(1, current.seq + 1), current.epoch, bid=0.9))]))
        else:
            made.append(("rejected_frames", [codec.topic(*key)] if rng.random() < 0.5
                         else [codec.topic(*key), codec.encode(current), b"extra"]))
    return made


def directory_frames(junk: Junk, fake: FakeRuntime) -> list[bytes]:
    """Control frames the shard must reject: each would be refused before any state is touched."""
    rng = junk.rng
    good = protocol.decode(fake.directory()).body
    made = []
    for _ in range(FRAMES // 5):
        case = rng.randrange(5)
        if case == 0:
            made.append(junk.garbage())
        elif case == 1:
            made.append(junk.bad_version("directory"))
        elif case == 2:
            made.append(junk.message(rng.choice(["assign", "register", "hello", "snapshot", "status_request"])))
        else:
            broken = dict(good, version=2)
            field, value = rng.choice([
                ("version", junk.not_of(is_count)),
                ("workers", junk.not_of(lambda v: isinstance(v, dict) and all(
                    isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("pub", "snapshot"))
                    for e in v.values()))),
                ("markets", rng.choice([junk.not_of(lambda v: isinstance(v, list) or v is None),
                                        [["kalshi", "X"]], [["kalshi", "X", "wf", 0]], [["nasdaq", "X", "wf", 5]],
                                        [["kalshi", "X", "", 5]], [["kalshi", ["X"], "wf", 5]]])),
                ("games", [junk.not_of(lambda v: isinstance(v, dict) and isinstance(v.get("id"), str)
                                       and v.get("id") and isinstance(v.get("markets"), list))]),
            ])
            broken[field] = value
            made.append(msgpack.packb(broken, use_bin_type=True))
    return made


def snapshot_replies(junk: Junk, fake: FakeRuntime) -> tuple[list[bytes], list[bytes]]:
    """(replies the shard must reject, well-formed replies that must change nothing)."""
    rng = junk.rng
    rejected, harmless = [], []
    for _ in range(FRAMES // 5):
        key = rng.choice(fake.keys)
        current = fake.latest[key]
        case = rng.randrange(7)
        if case == 0:
            rejected.append(junk.garbage())
        elif case == 1:
            rejected.append(junk.message(rng.choice(["error", "directory", "ack", "snapshot_request"])))
        elif case == 2:
            rejected.append(junk.message("snapshot", id=1, records=[junk.not_of(lambda v: isinstance(v, bytes))]))
        elif case == 3:
            rejected.append(junk.message("snapshot", id=1, records=[bad_payload(junk)]))
        elif case == 4:  # an old owner's record, or an older one of the current owner
            old = record(key, rng.randrange(1, 10**6), rng.randrange(1, current.epoch), bid=0.9)
            stale = record(key, rng.randrange(1, current.seq + 1), current.epoch, bid=0.9)
            harmless.append(junk.message("snapshot", id=1, records=[codec.encode(rng.choice([old, stale]))],
                                         pending=[], not_owned=[]))
        else:
            harmless.append(junk.message("snapshot", id=1, records=[], pending=[junk.value(), ["kalshi", ["X"], 1]],
                                         not_owned=[junk.value(), ["kalshi", ["X"]], ["polymarket", {"a": 1}]]))
    return rejected, harmless


def fair_frames(junk: Junk, games: list[Game]) -> list[list[bytes]]:
    """Fair-value feed messages the shard must drop: one frame only, or a payload that is no fair value."""
    made = []
    for _ in range(FRAMES // 10):
        topic = fair_topic(junk.rng.choice(games).game_id)
        made.append([topic] if junk.rng.random() < 0.5 else [topic, junk.garbage()])
    return made


def test_a_shard_survives_fuzzed_bus_directory_snapshot_and_fair_frames(cluster: Cluster) -> None:
    games = sim_games(4)
    ctx = zmq.Context()
    fake = FakeRuntime(ctx, cluster, games)
    try:
        shard = cluster.start("shard-s0", "shard", "--id", "s0", "--broker", fake.endpoints["fb"], "--signals",
                              cluster.endpoint("s0-sig"), "--fair-feed", fake.endpoints["ff"], "--heartbeat", "0.2",
                              ipc=("s0-sig",))
        fake.serve(until=lambda: fake.report.get("markets") == fake.held(), what="the shard to hold every snapshot")
        for key in fake.keys:  # updates flow: seq 4 is applied
            fake.latest[key] = record(key, 4, FakeRuntime.EPOCH, bid=0.45)
            fake.publish(key, fake.latest[key])
        fake.serve(until=lambda: fake.report.get("markets") == fake.held(), what="the shard to apply seq 4")
        fake.serve(until=lambda: bool(fake.snapshot_identity), what="a snapshot request (the shard's identity)")
        before = dict(fake.report)

        junk = Junk(SEED + 1)
        expected: Counter[str] = Counter()
        for counter, parts in bus_frames(junk, fake.keys, fake.latest):
            fake.pub.send_multipart(parts)
            expected[counter] += 1
        for frame in directory_frames(junk, fake):
            fake.broker.send_multipart([fake.shard_identity, frame])
            expected["control_rejected"] += 1
        rejected, harmless = snapshot_replies(junk, fake)
        for frame in (*rejected, *harmless):
            fake.snap.send_multipart([fake.snapshot_identity, frame])
        expected["snapshot_rejected"] += len(rejected)
        for parts in fair_frames(junk, games):
            fake.fair.send_multipart(parts)
            expected["fair_rejected"] += 1

        def counted() -> bool:
            return all(fake.report.get(name, 0) - before.get(name, 0) >= count for name, count in expected.items())

        fake.serve(until=counted, what=f"the shard to count {dict(expected)}")
        fake.serve(seconds=1.0)  # and nothing more
        after = dict(fake.report)
        moved = {name: after.get(name, 0) - before.get(name, 0) for name in expected}
        print(f"\nshard: {sum(expected.values()) + len(harmless) + 3} frames: {dict(expected)}, {len(harmless)} "
              f"well-formed but stale snapshot replies, 3 oversized; counted {moved}")
        assert moved == dict(expected)
        assert after["markets"] == fake.held() and after["live"] == len(fake.keys)
        assert after.get("applied", 0) == before.get("applied", 0)

        for _ in range(3):  # beyond MAXMSGSIZE: ZeroMQ drops the connection, the SUB reconnects
            fake.pub.send_multipart([codec.topic(*fake.keys[0]), b"\x00" * OVERSIZED])
        key = fake.keys[0]
        fake.latest[key] = record(key, 5, FakeRuntime.EPOCH, bid=0.5)

        def applied_again() -> bool:
            fake.publish(key, fake.latest[key])
            return fake.report.get("markets") == fake.held()

        fake.serve(until=applied_again, what="an update applied after the oversized frames")
        assert shard.popen.poll() is None
    finally:
        fake.close()
        ctx.destroy(linger=0)
