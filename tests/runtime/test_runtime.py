"""The sharded runtime with real processes over real ZeroMQ sockets, on the simulators.

Each test starts its own simulators, broker, workers and shards (`Cluster`), acts
on them the way an operator or a failure would (kill -9, SIGSTOP, a late start, a
restart), and checks the outcome through the broker's status and the simulators'
control. Durations are measured and printed (run with `-s` to see them), never
asserted: the deadlines below only bound how long a test may wait.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import zmq

from broker import protocol
from markets import codec
from markets.models import TICKS_PER_DOLLAR, MarketPrice, Platform, PriceStatus
from shard.signals import kalshi_taker_fee
from tests.runtime.conftest import Cluster, next_arbitrage, wait_for

MARKETS = 40  # 20 simulated games, each on both venues
SETTLE = 30.0


def start(cluster: Cluster, workers: tuple[str, ...] = ("w0", "w1"), shards: tuple[str, ...] = ("s0", "s1"),
          rate: float = 5.0, broker_args: tuple[str, ...] = (), dead_after: float = 1.5) -> None:
    cluster.sim(rate=rate)
    cluster.broker(*broker_args, dead_after=dead_after)
    for worker_id in workers:
        cluster.worker(worker_id)
    for shard_id in shards:
        cluster.shard(shard_id)


def owners(status: dict) -> dict[str, tuple[str, int]]:
    return {market: (entry["worker"], entry["epoch"]) for market, entry in status["assignment"].items()}


def claimed_by_workers(status: dict) -> Counter[str]:
    """How many workers report publishing each market (must be 1 once settled)."""
    return Counter(market for info in status["workers"].values() for market in info["counters"].get("markets", {}))


def test_every_market_reaches_the_shards_live_and_equal_to_the_workers(cluster: Cluster) -> None:
    started = time.monotonic()
    start(cluster)
    wait_for(lambda: sum(s["counters"].get("live", 0) for s in cluster.status()["shards"].values()) == MARKETS,
             SETTLE, "all 40 markets LIVE at the shards")
    print(f"\nall {MARKETS} markets live at the shards {time.monotonic() - started:.2f} s after the first process "
          "started")
    cluster.control("POST", "pause")
    status = wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS, exact=True), SETTLE,
                      "each shard to hold exactly each worker's latest record")
    assert set(claimed_by_workers(status).values()) == {1}
    assert {len(info["counters"]["markets"]) > 0 for info in status["workers"].values()} == {True}


def test_a_killed_worker_markets_flow_again_from_the_survivor(cluster: Cluster) -> None:
    start(cluster)
    before = wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS), SETTLE, "the cluster to settle")
    victim = cluster.procs[[p.name for p in cluster.procs].index("worker-w0")]
    moved = {m for m, (w, _) in owners(before).items() if w == "w0"}
    assert moved
    killed = time.monotonic()
    victim.signal(signal.SIGKILL)
    victim.popen.wait()

    def flowing_again() -> dict | None:
        status = cluster.status()
        workers = cluster.worker_view(status)
        now_owned = owners(status)
        if "w0" in status["workers"] or not all(now_owned.get(m, ("",))[0] == "w1" and m in workers
                                                   and workers[m][1][1] >= 1 for m in moved):
            return None
        return cluster.in_step(["s0", "s1"], MARKETS)

    after = wait_for(flowing_again, SETTLE, "w0's markets to flow from w1 and reach the shards")
    print(f"\nreassignment after kill -9: {len(moved)} markets flowing from the survivor "
          f"{time.monotonic() - killed:.2f} s after the kill (dead-after 1.5 s)")
    assert after["unassigned"] == []
    assert set(claimed_by_workers(after).values()) == {1}
    for market in moved:
        assert owners(after)[market][1] > owners(before)[market][1], "a moved market must get a newer epoch"


def test_records_from_a_superseded_owner_are_dropped_by_the_shards(cluster: Cluster) -> None:
    """A worker declared dead that comes back still publishing its old ownership: shards drop it.

    The returning worker is played by the test (a real ZeroMQ peer that registers with the
    broker, so shards connect to its PUB), publishing a market under the epoch it held
    before the failover."""
    start(cluster)
    before = wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS), SETTLE, "the cluster to settle")
    victim = cluster.procs[[p.name for p in cluster.procs].index("worker-w0")]
    old = {m: e for m, (w, e) in owners(before).items() if w == "w0"}
    victim.signal(signal.SIGKILL)
    victim.popen.wait()
    wait_for(lambda: (s := cluster.in_step(["s0", "s1"], MARKETS)) and "w0" not in s["workers"], SETTLE,
             "the failover to reach the shards")

    ctx = zmq.Context()
    control, pub = ctx.socket(zmq.DEALER), ctx.socket(zmq.PUB)
    try:
        for sock in (control, pub):
            sock.setsockopt(zmq.LINGER, 0)
        pub.bind(cluster.endpoint("zombie-pub"))
        control.setsockopt(zmq.ROUTING_ID, b"wz")
        control.connect(cluster.broker_endpoint)
        control.send(protocol.encode(protocol.REGISTER, worker_id="wz", pub=cluster.endpoint("zombie-pub"),
                                     snapshot=cluster.endpoint("zombie-snap"), capacity=1, pid=0, owned=[],
                                     counters={}))
        status = wait_for(lambda: (s := cluster.status()) and "wz" in s["workers"] and s, SETTLE, "wz to register")
        market = next(m for m in old if owners(status)[m][0] == "w1")
        venue, _, market_id = market.partition("/")
        zombie = MarketPrice(market_id, 0.01, 0.99, 1.0, 1.0, Platform(venue), PriceStatus.LIVE, seq=10**6,
                             epoch=old[market], recv_ts_ns=time.time_ns(), publish_ts_ns=time.time_ns())

        def zombie_dropped() -> bool:
            control.send(protocol.encode(protocol.HEARTBEAT, worker_id="wz", counters={}))
            pub.send_multipart([codec.topic(Platform(venue), market_id), codec.encode(zombie)])
            shards = cluster.status()["shards"].values()
            return sum(s["counters"].get("zombie", 0) for s in shards) > 0

        wait_for(zombie_dropped, SETTLE, "a shard to count the old-epoch record as a zombie", interval=0.2)
        status = cluster.status()
        held = [h for s in ("s0", "s1") if (h := cluster.shard_view(s, status).get(market)) is not None]
        assert held and all(h[0] == owners(status)[market][1] and h[1] < 10**6 for h in held), held
    finally:
        control.close(linger=0)
        pub.close(linger=0)
        ctx.term()
        (cluster.rundir / "zombie-pub").unlink(missing_ok=True)


def test_a_joining_worker_takes_only_its_share(cluster: Cluster) -> None:
    start(cluster)
    before = owners(wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS), SETTLE, "two workers to settle"))
    cluster.worker("w2")
    after_status = wait_for(lambda: (s := cluster.in_step(["s0", "s1"], MARKETS)) and "w2" in s["workers"]
                            and s["workers"]["w2"]["markets"] > 0 and s, SETTLE, "w2 to take its share")
    after = owners(after_status)
    moved = {m for m in before if after[m][0] != before[m][0]}
    print(f"\nw2 joined: {len(moved)} of {MARKETS} markets moved, all to w2")
    assert moved and all(after[m][0] == "w2" for m in moved)
    assert all(after[m] == before[m] for m in set(before) - moved), "unmoved markets keep owner and epoch"
    assert len(moved) == after_status["workers"]["w2"]["markets"]


def test_a_late_shard_gets_every_price_from_snapshots_first(cluster: Cluster) -> None:
    start(cluster, shards=("s0",))
    wait_for(lambda: cluster.in_step(["s0"], MARKETS), SETTLE, "the first shard to settle")
    cluster.control("POST", "pause")
    frozen = wait_for(lambda: cluster.in_step(["s0"], MARKETS, exact=True), SETTLE, "the paused cluster to settle")
    time.sleep(0.5)  # let any in-flight record land before the late shard starts
    started = time.monotonic()
    cluster.shard("s1")

    def late_shard_synced() -> dict | None:
        status = cluster.in_step(["s0", "s1"], MARKETS, exact=True)
        return status if status and cluster.shard_view("s1", status) else None

    status = wait_for(late_shard_synced, SETTLE, "the late shard to hold every current price")
    print(f"\nlate shard: all {len(cluster.shard_view('s1', status))} of its markets from snapshots "
          f"{time.monotonic() - started:.2f} s after its process started")
    counters = status["shards"]["s1"]["counters"]
    assert counters.get("applied", 0) == 0, "nothing moved, so every price came from a snapshot"
    assert counters.get("snapshot_requests", 0) >= 1
    workers = cluster.worker_view(frozen)
    assert all(workers[m][1][:2] == held[:2] for m, held in cluster.shard_view("s1", status).items())


def test_a_slow_shard_detects_its_gaps_and_resyncs_without_slowing_the_other(cluster: Cluster) -> None:
    cluster.sim(rate=50.0)
    cluster.broker(dead_after=30.0)
    for worker_id in ("w0", "w1"):
        # Room for a healthy subscriber's hiccups (0.5 s of traffic), not for a 4 s stall.
        cluster.worker(worker_id, "--pub-hwm", "1000")
    cluster.shard("s0", "--games", ",".join(_game_ids()[:10]))
    slow = cluster.shard("s1", "--games", ",".join(_game_ids()[10:]), "--rcvhwm", "20")
    wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS), SETTLE, "the cluster to settle")
    slow.signal(signal.SIGSTOP)
    try:
        time.sleep(4.0)  # the stall being tested; the PUB drops for s1 meanwhile
    finally:
        slow.signal(signal.SIGCONT)
    wait_for(lambda: cluster.status()["shards"]["s1"]["counters"].get("gap", 0) > 0, SETTLE,
             "the slow shard to notice a gap")
    cluster.control("POST", "pause")
    status = wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS, exact=True), SETTLE,
                      "both shards to be right again")
    fast, slow_counters = status["shards"]["s0"]["counters"], status["shards"]["s1"]["counters"]
    print(f"\nslow shard: {slow_counters.get('gap', 0)} gaps, {slow_counters.get('snapshot_requests', 0)} snapshot "
          f"requests; other shard: {fast.get('gap', 0)} gaps, bus latency {fast.get('bus_latency_us')}")
    assert fast.get("gap", 0) == 0, "the other shard must not lose anything"


def test_a_cross_venue_gap_produces_a_signal_with_the_kalshi_fee(cluster: Cluster) -> None:
    start(cluster, rate=1.0)
    status = wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS), SETTLE, "the cluster to settle")
    game = _game_ids()[0]
    signal_body = next_arbitrage(game, [s["signals"] for s in status["shards"].values()], lambda: cluster.control(
        "POST", "gap", {"game_id": game, "venue": "polymarket", "cents": 5}), SETTLE)
    assert signal_body is not None, "no arbitrage signal after opening a 5-cent gap"
    contracts = signal_body["contracts"]
    (kalshi_leg,) = [leg for leg in signal_body["legs"] if leg["platform"] == "kalshi"]
    fee_cents = kalshi_taker_fee(contracts, round(kalshi_leg["price"] * TICKS_PER_DOLLAR))
    assert signal_body["fees_dollars"] == fee_cents / 100
    cost = sum(leg["price"] for leg in signal_body["legs"])
    assert abs(signal_body["edge_dollars"] - ((1 - cost) * contracts - fee_cents / 100)) < 1e-6
    assert signal_body["edge_dollars"] > 0


def test_a_restarted_broker_rebuilds_the_same_assignment(cluster: Cluster) -> None:
    start(cluster)
    before = wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS), SETTLE, "the cluster to settle")
    broker = cluster.procs[[p.name for p in cluster.procs].index("broker")]
    broker.signal(signal.SIGKILL)
    broker.popen.wait()
    # Prices keep flowing with no broker: a subscriber straight on a worker's PUB still receives.
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(before["workers"]["w0"]["pub"])
        assert sub.poll(10_000), "a worker stopped publishing while the broker was down"
    finally:
        sub.close(linger=0)
        ctx.term()
    for path in broker.ipc_files:  # as the launcher does before restarting a dead child
        path.unlink(missing_ok=True)
    cluster.broker(dead_after=1.5)
    after = wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS), SETTLE, "the new broker to rebuild")
    assert owners(after) == owners(before), "a restarted broker must not move flowing markets"


def _game_ids() -> list[str]:
    from broker.universe import sim_games

    return [g.game_id for g in sim_games(20, 0)]
