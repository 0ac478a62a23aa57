"""Faults with real processes: the venues misbehave under load, role processes stop or die.

The venue side runs every simulator fault at once while prices flow, then pauses the
simulators and requires the end state to be exact: each worker's record of each market
(fetched from its snapshot service) equal to the simulator's own top (`GET /_sim/tops`)
and LIVE, no worker restarted, and every status record a worker published applied by
the shard that follows the market. The process side covers what tests/runtime/test_runtime.py
does not: a worker frozen past `--dead-after` that comes back, a shard killed under the
launcher's supervision, and the shards' side of a broker outage.

Waits are conditions with deadlines; durations are printed (`-s`), never asserted.
"""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import threading
import time
from collections import Counter
from typing import Any, Self

import pytest

from broker.book_audit import all_records, fetch_tops, wrong_books
from broker.launcher import Child, Supervisor
from markets.sim.fault_mixes import (
    ALL,
    DEAD_PEER_REASONS,
    KALSHI_DEAD_PEER,
    KALSHI_TAIL,
)
from tests.runtime.conftest import Cluster, Proc, next_arbitrage, wait_for

MARKETS = 40
SETTLE = 30.0
READY = 60.0
HEAL = 120.0
"""Room for the slowest repair after the pause: a Polymarket token whose last change was lost
is found by the client's quiet check (60 s of silence, then REST `/books`)."""
STATUSES = ("live", "stale", "resyncing", "closed")


def by_status(counters: dict[str, Any], prefix: str) -> Counter[str]:
    return Counter({s: counters.get(f"{prefix}{s}", 0) for s in STATUSES})


def published(status: dict[str, Any]) -> Counter[str]:
    """Status records the workers sent, summed over workers."""
    return sum((by_status(w["counters"], "published_") for w in status["workers"].values()), Counter())


def applied(status: dict[str, Any]) -> Counter[str]:
    """Status records the shards took, summed over shards (each market is followed by exactly one)."""
    return sum((by_status(s["counters"], "status_") for s in status["shards"].values()), Counter())


def venue_stats(status: dict[str, Any], venue: str) -> dict[str, Any]:
    """One venue's client counters summed over the workers (numbers added, reason maps merged)."""
    total: dict[str, Any] = {}
    for info in status["workers"].values():
        for name, value in info["counters"].get("venues", {}).get(venue, {}).items():
            if isinstance(value, int):
                total[name] = total.get(name, 0) + value
            elif isinstance(value, dict) and name != "last_message_ns":
                total.setdefault(name, Counter()).update(value)
    return total


def difference(after: Counter[str], before: Counter[str]) -> Counter[str]:
    return Counter({s: after[s] - before[s] for s in STATUSES})


@pytest.mark.timeout(300)
def test_every_venue_fault_at_once_ends_with_exact_live_books_and_every_status_at_the_shards(
        cluster: Cluster) -> None:
    cluster.sim("--faults", ALL, rate=10.0)
    cluster.control("POST", "pause")  # a still start, so that counting starts from one known state
    cluster.broker(dead_after=3.0)
    workers = [cluster.worker(w) for w in ("w0", "w1")]
    for shard_id in ("s0", "s1"):
        cluster.shard(shard_id)
    start = wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS, exact=True), SETTLE * 2,
                     "the paused cluster to settle under faults")
    pids = {w: info["pid"] for w, info in start["workers"].items()}
    sent_before, taken_before = published(start), applied(start)

    cluster.control("POST", "resume")
    wait_for(lambda: (s := cluster.status()) and all(venue_stats(s, v).get("reconnects", 0) >= 2
                                                      for v in ("kalshi", "polymarket")),
             SETTLE * 2, "both venues' connections to be dropped and reconnected under load")
    dead_before = _dead_peer_drops(cluster.status())
    cluster.control("POST", "faults", {"venue": "kalshi", "faults": KALSHI_DEAD_PEER})
    wait_for(lambda: _dead_peer_drops(cluster.status()) >= dead_before + 2, SETTLE * 2,
             "both workers to find their Kalshi peer dead and leave it")
    cluster.control("POST", "faults", {"venue": "kalshi", "faults": KALSHI_TAIL})
    tail_from = _kalshi_messages(cluster.status())
    wait_for(lambda: all(n >= tail_from[w] + 100 for w, n in _kalshi_messages(cluster.status()).items()),
             SETTLE * 2, "each worker to read 100 more Kalshi frames")
    cluster.control("POST", "pause")
    paused = time.monotonic()

    snapshots = [info["snapshot"] for info in cluster.status()["workers"].values()]

    def settled() -> dict[str, Any] | None:
        """Books exact and LIVE, each shard holding its markets' latest records, and every status
        record published since the start taken by a shard (counters arrive with heartbeats)."""
        status = cluster.in_step(["s0", "s1"], MARKETS, exact=True)
        if status is None or wrong_books(all_records(snapshots), fetch_tops(cluster.sim_control)):
            return None
        return status if difference(published(status), sent_before) == difference(applied(status), taken_before) \
            else None

    try:
        end = wait_for(settled, HEAL, "every worker book to equal the simulators' and every status to reach a shard",
                       interval=0.5)
    except BaseException:
        status = cluster.status()
        print("\nwrong books:", wrong_books(all_records(snapshots), fetch_tops(cluster.sim_control)))
        print("published:", difference(published(status), sent_before), "applied:",
              difference(applied(status), taken_before))
        for venue in ("kalshi", "polymarket"):
            print(venue, venue_stats(status, venue))
        raise
    print(f"\nsettled {time.monotonic() - paused:.1f} s after the pause")

    assert [w.popen.poll() for w in workers] == [None, None], "a worker died"
    assert {w: info["pid"] for w, info in end["workers"].items()} == pids, "a worker was replaced"
    sent, taken = difference(published(end), sent_before), difference(applied(end), taken_before)
    print(f"status records published {dict(sent)}, applied by the shards {dict(taken)}")
    assert all(s["counters"].get("gap", 0) == 0 for s in end["shards"].values()), "the bus lost records"
    assert taken["stale"] + taken["resyncing"] > 0, "no fault ever reached a shard as a status"

    kalshi, polymarket = venue_stats(end, "kalshi"), venue_stats(end, "polymarket")
    for venue, stats in (("kalshi", kalshi), ("polymarket", polymarket)):
        print(venue, {k: v for k, v in stats.items() if k in ("reconnects", "resyncs", "gaps", "stale_trips",
                                                                "rejected", "dropped", "disconnects",
                                                                "handshake_failures")})
        assert stats["handshake_failures"].get("503", 0) >= 1, f"{venue}: no refused handshake was seen"
        assert stats["rejected"].get("malformed_json", 0) >= 1, f"{venue}: no malformed frame was seen"
    assert kalshi["gaps"] >= 1, "Kalshi's skipped seqs were never noticed"
    assert {"truncated_json", "unknown_type"} <= set(kalshi["rejected"]), kalshi["rejected"]
    assert kalshi["dropped"].get("duplicate", 0) >= 1
    assert kalshi["disconnects"].get("peer_closed", 0) >= 2, "Kalshi's drops were never seen"


def _dead_peer_drops(status: dict[str, Any]) -> int:
    """Kalshi sessions ended because the peer went silent."""
    reasons = venue_stats(status, "kalshi").get("disconnects", {})
    return sum(reasons.get(reason, 0) for reason in DEAD_PEER_REASONS)


def _kalshi_messages(status: dict[str, Any]) -> dict[str, int]:
    """Kalshi frames read so far, per worker."""
    return {w: info["counters"].get("venues", {}).get("kalshi", {}).get("messages", 0)
            for w, info in status["workers"].items()}


# -- process side ---------------------------------------------------------------------------------

def start(cluster: Cluster, shards: tuple[str, ...] = ("s0", "s1")) -> None:
    cluster.sim(rate=5.0)
    cluster.broker(dead_after=1.5)
    for worker_id in ("w0", "w1"):
        cluster.worker(worker_id)
    for shard_id in shards:
        cluster.shard(shard_id)


def owners(status: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {market: (entry["worker"], entry["epoch"]) for market, entry in status["assignment"].items()}


def proc(cluster: Cluster, name: str) -> Proc:
    return next(p for p in reversed(cluster.procs) if p.name == name)


@pytest.mark.timeout(180)
def test_a_frozen_worker_comes_back_to_only_what_the_broker_gives_it(cluster: Cluster) -> None:
    start(cluster)
    before = wait_for(lambda: cluster.in_step(["s0", "s1"], MARKETS), SETTLE, "the cluster to settle")
    w0 = proc(cluster, "worker-w0")
    old = {m: e for m, (w, e) in owners(before).items() if w == "w0"}
    assert old
    w0.signal(signal.SIGSTOP)
    try:
        failover = wait_for(lambda: (s := cluster.in_step(["s0", "s1"], MARKETS)) and "w0" not in s["workers"] and s,
                            SETTLE, "w0 to be declared dead and its markets to flow from w1")
    finally:
        w0.signal(signal.SIGCONT)
    moved = owners(failover)
    assert all(moved[m][0] == "w1" and moved[m][1] > e for m, e in old.items())

    # From its return until it holds its new set, no shard may take any of w0's old-epoch records.
    held_old: list[str] = []

    def back() -> dict[str, Any] | None:
        status = cluster.status()
        for shard_id in ("s0", "s1"):
            held_old.extend(f"{shard_id}:{m}" for m, h in cluster.shard_view(shard_id, status).items()
                            if m in old and h is not None and h[0] == old[m])
        if "w0" not in status["workers"] or not status["workers"]["w0"]["markets"]:
            return None
        return cluster.in_step(["s0", "s1"], MARKETS)

    after = wait_for(back, SETTLE, "w0 to re-register and its new markets to reach the shards")
    assert not held_old, f"shards took records of w0's superseded ownership: {held_old[:5]}"
    w0_info = after["workers"]["w0"]
    assert w0_info["pid"] == w0.pid and w0.popen.poll() is None, "the same process came back"
    assert w0_info["counters"]["registrations"] >= 2, "w0 registered again on its return"
    given = {m: e for m, (w, e) in owners(after).items() if w == "w0"}
    published_by_w0 = {m: entry[0] for m, entry in w0_info["counters"]["markets"].items()}
    assert published_by_w0 == given, "w0 publishes exactly the broker's set, under the broker's epochs"
    assert given and all(e > moved[m][1] for m, e in given.items()), "every market w0 owns again has a new epoch"
    zombies = sum(s["counters"].get("zombie", 0) for s in after["shards"].values())
    print(f"\nw0 frozen past --dead-after: {len(old)} markets moved to w1; on its return it took {len(given)} back "
          f"under new epochs; shards dropped {zombies} old-epoch records")


class SupervisedRole:
    """One role process under the launcher's own `Supervisor` (restarted with backoff when it dies),
    run on an event loop in a thread so the test can go on polling; its output lines are kept with
    the pid of the process that wrote them."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.lines: list[tuple[int | None, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name=f"supervise-{child.name}")
        self.error: BaseException | None = None

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.supervisor = Supervisor(lambda child, line: self.lines.append((child.pid, line)), backoff_initial=0.2)
        try:
            await self.supervisor.start(self.child)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._started.set()
        await self._stop.wait()
        await self.supervisor.stop([[self.child]])

    def __enter__(self) -> Self:
        self._thread.start()
        self._started.wait(READY)
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(READY)


def arbitrage_logged(lines: list[tuple[int | None, str]], game: str, pid: int | None) -> list[dict[str, Any]]:
    """The arbitrage signals of `game` the process `pid` logged, bodies without their evaluation time."""
    marker = f"arbees.signals: arbitrage {game} "
    bodies = [ast.literal_eval(line.split(marker, 1)[1]) for p, line in lines if p == pid and marker in line]
    return [{k: v for k, v in body.items() if k != "ts_ns"} for body in bodies]


@pytest.mark.timeout(180)
def test_a_killed_shard_is_restarted_recovers_from_snapshots_and_signals_nothing_twice(cluster: Cluster) -> None:
    """No duplicate signals, defined: with the books unchanged (simulators paused, one game held in a
    cross-venue gap), the restarted shard logs the gapped game's arbitrage exactly once, with the body
    its predecessor logged last (evaluation time aside), and emits nothing more while it stays up
    through snapshot audits and fair-value updates, which re-evaluate the same books."""
    cluster.sim(rate=5.0)
    cluster.broker(dead_after=1.5)
    for worker_id in ("w0", "w1"):
        cluster.worker(worker_id)
    signals = cluster.endpoint("s0-sig")
    shard = Child("shard-s0", ["shard", "--id", "s0", "--broker", cluster.broker_endpoint, "--signals", signals,
                               "--fair-feed", cluster.fair_feed, "--heartbeat", "0.2", "--log-level", "info"],
                  {}, None, [signals])
    game = _game_ids()[0]
    with SupervisedRole(shard) as supervised:
        wait_for(lambda: cluster.in_step(["s0"], MARKETS), SETTLE, "the supervised shard to settle")
        cluster.control("POST", "gap", {"game_id": game, "venue": "polymarket", "cents": 5})
        cluster.control("POST", "pause")
        first_pid = shard.pid
        status = wait_for(lambda: (s := cluster.in_step(["s0"], MARKETS, exact=True))
                          and arbitrage_logged(supervised.lines, game, first_pid) and s,
                          SETTLE, "the paused books at the shard and the gap's arbitrage logged")
        time.sleep(0.5)  # the last evaluation of the settled books reaches the log
        expected = arbitrage_logged(supervised.lines, game, first_pid)[-1]
        assert status["shards"]["s0"]["counters"]["pid"] == first_pid

        os.kill(first_pid, signal.SIGKILL)

        def recovered() -> dict[str, Any] | None:
            s = cluster.in_step(["s0"], MARKETS, exact=True)
            return s if s and shard.pid != first_pid and s["shards"]["s0"]["counters"]["pid"] == shard.pid else None

        status = wait_for(recovered, SETTLE, "the restarted shard to hold every current price")
        counters = status["shards"]["s0"]["counters"]
        assert shard.restarts == 1
        assert counters.get("applied", 0) == 0 and counters.get("snapshot_requests", 0) >= 1, \
            "nothing moved, so every price came from a snapshot"
        emitted = counters.get("signals_arbitrage", 0)
        end = wait_for(lambda: (s := cluster.status())["shards"]["s0"]["counters"].get("snapshot_audits", 0) >= 2
                       and s, SETTLE, "two snapshot audits by the restarted shard")
        assert end["shards"]["s0"]["counters"].get("signals_arbitrage", 0) == emitted, \
            "the restarted shard emitted an arbitrage again for unchanged books"
        assert arbitrage_logged(supervised.lines, game, shard.pid) == [expected]
    print(f"\nshard kill -9: restarted once, {MARKETS} prices from snapshots, the gap's arbitrage signalled once")


def _game_ids() -> list[str]:
    from broker.universe import sim_games

    return [g.game_id for g in sim_games(20, 0)]


@pytest.mark.timeout(180)
def test_shards_keep_receiving_and_signalling_while_the_broker_is_down(cluster: Cluster) -> None:
    """The shard side of a broker outage (the workers' side is in test_runtime): during the outage
    a gap opened on the simulators reaches the shard, which signals it; after the restart, every
    record the workers published over the whole outage is one the shard took."""
    start(cluster, shards=("s0",))
    wait_for(lambda: cluster.in_step(["s0"], MARKETS), SETTLE, "the cluster to settle")
    cluster.control("POST", "pause")  # counters of workers and shard from one still moment
    before = wait_for(lambda: cluster.in_step(["s0"], MARKETS, exact=True), SETTLE, "the paused cluster to settle")
    cluster.control("POST", "resume")
    game = _game_ids()[1]
    broker = proc(cluster, "broker")
    down: list[float] = []

    def kill_broker_and_open_a_gap() -> None:
        broker.signal(signal.SIGKILL)
        broker.popen.wait()
        down.append(time.monotonic())
        cluster.control("POST", "gap", {"game_id": game, "venue": "kalshi", "cents": 5})

    body = next_arbitrage(game, [before["shards"]["s0"]["signals"]], kill_broker_and_open_a_gap, SETTLE)
    assert body is not None, "no arbitrage from the shard while the broker was down"
    print(f"\nbroker down: the shard signalled the new gap {time.monotonic() - down[0]:.2f} s after the kill")
    cluster.control("POST", "pause")
    for path in broker.ipc_files:  # as the launcher does before restarting a dead child
        path.unlink(missing_ok=True)
    cluster.broker(dead_after=1.5)

    def caught_up() -> dict[str, Any] | None:
        status = cluster.in_step(["s0"], MARKETS, exact=True)
        return status if status and published(status) - published(before) == applied(status) - applied(before) \
            else None

    after = wait_for(caught_up, SETTLE, "the new broker to see the shard holding every record published")
    assert after["shards"]["s0"]["counters"].get("gap", 0) == 0
    sent = difference(published(after), published(before))
    print(f"records published across the outage: {dict(sent)}; all applied by the shard")
    assert sum(sent.values()) > 0
