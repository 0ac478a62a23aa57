"""Soak: the whole runtime for N minutes with every venue fault on and a role process killed every minute.

Runs the simulators (all faults: `markets.sim.fault_mixes`), a broker, 2 workers and
2 shards as children of the launcher's own `Supervisor` (restart with backoff, as
under `arbees launch`), and every `--kill-every` seconds kill -9's one random worker,
shard or broker process, which the supervisor restarts. Kalshi alternates between
connections dropped by the venue and dead peers at each kill (each switch also re-arms
its handshake refusals). At the end the simulators are paused and the run settles,
then it reports:

* markets lost: assigned to no worker, not published by their owner, or not held by a
  shard under the owner's epoch (must be 0);
* wrong books: each market's record from its owner's snapshot service against the
  simulators' true top (`GET /_sim/tops`), exact and LIVE (must be 0);
* venue reconnects, resyncs and gaps, bus gaps at the shards, kills and restarts, and the
  share of the markets LIVE at their workers, averaged over the samples of the run;
* RSS of every process instance over time, with its trend in MB/min.

As a rich table, and as JSON with `--json FILE`. Exit status 1 if a market was lost or
a book was wrong at the end.

    python scripts/soak.py                      # 10 minutes, a kill every 60 s
    python scripts/soak.py --seconds 20 --kill-every 5 --json soak.json   # the CI version
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from soakstats import InstanceCounters, RssSeries

from broker import protocol
from broker.book_audit import AuditError, all_records, fetch_tops, wrong_books
from broker.broker_client import BrokerUnreachable, ask_broker
from broker.launch_command import parse_exports
from broker.launcher import Child, Supervisor
from broker.protocol import key_text
from markets.sim.fault_mixes import ALL, KALSHI_DEAD_PEER, KALSHI_TAIL

VENUES = ("kalshi", "polymarket")
KILLABLE = ("worker", "shard", "broker")
TAIL_SECONDS = 3.0
"""Kalshi traffic under `KALSHI_TAIL` before the pause (see `markets.sim.fault_mixes`)."""


@dataclass
class Settled:
    """Where the books stand after the pause: markets lost and wrong books (`venue/id` -> why), as
    first seen (`first`, what the pause found) and at the end, and the seconds it took."""

    lost: dict[str, str] = field(default_factory=dict)
    wrong: dict[str, str] = field(default_factory=dict)
    first: dict[str, dict[str, str]] | None = None
    stragglers: dict[str, str] = field(default_factory=dict)
    """The last markets to come right, and why they were not on the check before (what took longest)."""
    seconds: float = 0.0


@dataclass
class Soak:
    """The supervised processes of one run and what was seen of them."""

    args: argparse.Namespace
    rundir: Path
    log: TextIO | None = None
    """Where the children's log lines go (`--log`); None: only the supervisor's last lines are kept."""
    supervisor: Supervisor = field(init=False)
    roles: dict[str, list[Child]] = field(default_factory=lambda: {"sim": [], "broker": [], "worker": [],
                                                                   "shard": []})
    broker_endpoint: str = ""
    control_url: str = ""
    started: float = 0.0
    kills: list[dict[str, Any]] = field(default_factory=list)
    rss: RssSeries = field(default_factory=RssSeries)
    counters: InstanceCounters = field(default_factory=InstanceCounters)
    live: list[tuple[float, float]] = field(default_factory=list)
    """(seconds, share of the markets LIVE at their workers) per sample: how much of the time the
    faults left the books usable."""

    def __post_init__(self) -> None:
        log = self.log
        self.supervisor = Supervisor(None if log is None else lambda child, line: print(line, file=log),
                                     backoff_initial=0.5, backoff_max=3.0, healthy_after=10.0)

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.rundir}/{name}"

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def start(self) -> None:
        self.started = time.monotonic()
        fair = self.endpoint("fair")
        heartbeat = ["--heartbeat", "0.2"]
        sim = await self._start("sim", Child("sim", ["sim", "--markets", str(self.args.markets), "--rate",
                                                     str(self.args.rate), "--fair-feed", fair, "--faults", ALL],
                                             {}, "Press Ctrl-C", [fair]))
        exports = parse_exports(sim.banner)
        self.control_url = exports["ARBEES_SIM_CONTROL"]
        venue_env = {k: v for k, v in exports.items() if k.startswith(("KALSHI_", "POLYMARKET_"))}
        self.broker_endpoint = self.endpoint("broker")
        await self._start("broker", Child("broker", ["broker", "--endpoint", self.broker_endpoint, "--sim-markets",
                                                     str(self.args.markets), "--dead-after", "1.5", *heartbeat],
                                          {}, "listening on ", [self.broker_endpoint]))
        for k in range(self.args.workers):
            pub, snap = self.endpoint(f"w{k}-pub"), self.endpoint(f"w{k}-snap")
            await self._start("worker", Child(f"worker-w{k}", ["worker", "--id", f"w{k}", "--broker",
                                                               self.broker_endpoint, "--pub", pub, "--snapshot", snap,
                                                               *heartbeat], venue_env, None, [pub, snap]))
        for j in range(self.args.shards):
            signals = self.endpoint(f"s{j}-sig")
            await self._start("shard", Child(f"shard-s{j}", ["shard", "--id", f"s{j}", "--broker",
                                                             self.broker_endpoint, "--signals", signals,
                                                             "--fair-feed", fair, *heartbeat], {}, None, [signals]))

    async def _start(self, role: str, child: Child) -> Child:
        self.roles[role].append(await self.supervisor.start(child))
        return child

    async def stop(self) -> None:
        r = self.roles
        await self.supervisor.stop([r["shard"], r["worker"], r["broker"], r["sim"]])

    # -- observing ------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any] | None:
        """The broker's status, None while it is down (being restarted)."""
        try:
            reply = await asyncio.to_thread(ask_broker, self.broker_endpoint, protocol.STATUS_REQUEST, timeout=1.0)
        except BrokerUnreachable:
            return None
        status = dict(reply.mapping("status"))
        self.counters.update(status)
        return status

    async def control(self, path: str, body: dict[str, Any] | None = None) -> None:
        def post() -> None:
            data = json.dumps(body or {}).encode()
            request = urllib.request.Request(f"{self.control_url}/{path}", data=data, method="POST",
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=10).close()

        await asyncio.to_thread(post)

    async def sample_forever(self) -> None:
        """RSS of every running child and the roles' counters, every `--sample-every` seconds."""
        while True:
            at = self.elapsed()
            for children in self.roles.values():
                for child in children:
                    if child.pid is not None:
                        self.rss.add(child.name, child.pid, at)
            status = await self.status()
            if status is not None and status["assignment"]:
                live = sum(w["counters"].get("statuses", {}).get("live", 0) for w in status["workers"].values())
                self.live.append((at, live / len(status["assignment"])))
            await asyncio.sleep(self.args.sample_every)

    async def settle(self) -> Settled:
        """After the pause: the lost and wrong markets once both are none or `--heal` seconds have passed."""
        paused = time.monotonic()
        settled = Settled(lost={"*": "no status from the broker"})
        while time.monotonic() - paused < self.args.heal:
            status = await self.status()
            if status is not None:
                previous = settled.lost | settled.wrong
                tops = await asyncio.to_thread(fetch_tops, self.control_url)
                settled.lost = lost_markets(status, {key_text(k) for k in tops})
                snapshots = [info["snapshot"] for info in status["workers"].values()]
                try:
                    settled.wrong = wrong_books(await asyncio.to_thread(all_records, snapshots, 2.0), tops)
                except AuditError as exc:  # a worker restarting right now: ask again
                    settled.wrong = {"*": str(exc)}
                if settled.first is None:
                    settled.first = {"lost": dict(settled.lost), "wrong": dict(settled.wrong)}
                if not settled.lost and not settled.wrong:
                    settled.stragglers = previous
                    break
            await asyncio.sleep(1.0)
        settled.seconds = time.monotonic() - paused
        return settled

    # -- the run --------------------------------------------------------------------------------

    async def kill_every(self, period: float, until: float, rng: random.Random) -> None:
        """kill -9 one random worker, shard or broker process every `period` seconds; Kalshi switches
        between venue-closed drops and dead peers at each kill."""
        dead_peer = False
        while self.elapsed() + period < until:
            await asyncio.sleep(period)
            role = rng.choice(KILLABLE)
            child = rng.choice(self.roles[role])
            if child.pid is not None:
                self.kills.append({"t": round(self.elapsed(), 1), "role": role, "name": child.name, "pid": child.pid})
                os.kill(child.pid, signal.SIGKILL)
            dead_peer = not dead_peer
            await self.control("faults", {"venue": "kalshi", "faults": KALSHI_DEAD_PEER if dead_peer else ALL})

    async def run(self) -> dict[str, Any]:
        await self.start()
        sampler = asyncio.create_task(self.sample_forever(), name="soak-sampler")
        try:
            warm = await self.wait_all_flowing(self.args.heal)
            run_from = self.elapsed()
            await self.kill_every(self.args.kill_every, run_from + self.args.duration, random.Random(self.args.seed))
            await asyncio.sleep(max(0.0, run_from + self.args.duration - self.elapsed() - TAIL_SECONDS))
            await self.control("faults", {"venue": "kalshi", "faults": KALSHI_TAIL})
            await asyncio.sleep(TAIL_SECONDS)
            await self.control("pause")
            ran = self.elapsed() - run_from
            during = [share for at, share in self.live if run_from <= at < run_from + ran]
            settled = await self.settle()
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        return self.report(warm, ran, settled, sum(during) / len(during) if during else None)

    async def wait_all_flowing(self, timeout: float) -> float:
        """Seconds until every market is assigned, published and held by a shard (the warm-up)."""
        while self.elapsed() < timeout:
            status = await self.status()
            if status is not None and status["assignment"] and not lost_markets(status, set(status["assignment"])):
                return self.elapsed()
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the cluster did not start flowing within {timeout:g} s")

    def report(self, warm: float, ran: float, settled: Settled, live_share: float | None) -> dict[str, Any]:
        c = self.counters
        lost, wrong = settled.lost, settled.wrong
        return {
            "settings": {k: v for k, v in vars(self.args).items() if k not in ("json", "log")} | {"faults": ALL},
            "warm_up_s": round(warm, 1), "ran_s": round(ran, 1), "settle_s": round(settled.seconds, 1),
            "at_pause": settled.first, "stragglers": settled.stragglers,
            "kills": self.kills,
            "restarts": {child.name: child.restarts for children in self.roles.values() for child in children},
            "reconnects": {v: c.venue_total(v, "reconnects") for v in VENUES},
            "resyncs": {v: c.venue_total(v, "resyncs") for v in VENUES},
            "venue_gaps": {v: c.venue_total(v, "gaps") for v in VENUES},
            "bus_gaps": c.total("gap"),
            "live_share": None if live_share is None else round(live_share, 3),
            "published": c.total("published"),
            "markets_lost": len(lost), "lost": lost,
            "wrong_books": len(wrong), "wrong": wrong,
            "rss": self.rss.report(self.args.max_slope),
        }


def lost_markets(status: dict[str, Any], markets: set[str]) -> dict[str, str]:
    """`venue/id` -> why, for every market not flowing end to end: not assigned, not published by
    its owner, or not held by a shard under the owner's epoch."""
    assignment = status["assignment"]
    published = {m: (w, entry) for w, info in status["workers"].items()
                 for m, entry in info["counters"].get("markets", {}).items()}
    held = {m: h for shard in status["shards"].values() for m, h in shard["counters"].get("markets", {}).items()}
    lost = {}
    for market in sorted(markets):
        owner = assignment.get(market)
        mine = published.get(market)
        if owner is None or market in status["unassigned"]:
            lost[market] = "assigned to no worker"
        elif mine is None or mine[0] != owner["worker"] or mine[1][1] < 1:
            lost[market] = f"not published by its owner {owner['worker']}"
        elif held.get(market) is None or held[market][0] != owner["epoch"]:
            lost[market] = "no shard holds the owner's epoch"
    return lost


def render(result: dict[str, Any], console: Console) -> None:
    summary = Table(title=f"soak: {result['ran_s']:.0f} s with every venue fault and {len(result['kills'])} kills")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    rows = [("markets lost (must be 0)", result["markets_lost"]), ("wrong books (must be 0)", result["wrong_books"]),
            ("kills", ", ".join(f"{k['name']}@{k['t']:.0f}s" for k in result["kills"]) or "-"),
            ("restarts", sum(result["restarts"].values())), ("bus gaps", result["bus_gaps"]),
            ("records published", result["published"]), ("settled after pause", f"{result['settle_s']:.1f} s"),
            ("books LIVE during the run", "-" if result["live_share"] is None else f"{result['live_share']:.0%}")]
    rows += [(f"{name} {venue}", result[key][venue]) for key, name in (("reconnects", "reconnects"),
                                                                      ("resyncs", "resyncs"),
                                                                      ("venue_gaps", "gaps")) for venue in VENUES]
    for name, value in rows:
        summary.add_row(name, str(value))
    console.print(summary)
    rss = Table(title="RSS per process instance")
    for column in ("process", "pid", "samples", "span s", "start MB", "end MB", "peak MB", "MB/min"):
        rss.add_column(column, justify="left" if column == "process" else "right")
    for row in result["rss"]:
        trend = "-" if row["slope_mb_per_min"] is None else f"{row['slope_mb_per_min']:+.2f}"
        rss.add_row(row["name"], str(row["pid"]), str(row["samples"]), str(row["span_s"]), str(row["start_mb"]),
                    str(row["end_mb"]), str(row["peak_mb"]), trend)
    console.print(rss)
    for key in ("lost", "wrong", "stragglers"):
        for market, why in list(result[key].items())[:20]:
            console.print(f"{key}: {market}: {why}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    length.add_argument("--seconds", type=float, help="how long to run, in seconds (the CI version: 20)")
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between kills (default 60)")
    parser.add_argument("--markets", type=int, default=20, help="simulated games, each on both venues")
    parser.add_argument("--rate", type=float, default=10.0, help="book updates per second per market")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS and counter samples")
    parser.add_argument("--heal", type=float, default=120.0,
                        help="longest wait for the cluster to start, and to settle after the pause (s)")
    parser.add_argument("--max-slope", type=float, default=2.0, help="RSS trend (MB/min) above which a "
                        "long-lived instance is flagged")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of victims")
    parser.add_argument("--json", type=Path, help="also write the result here as JSON")
    parser.add_argument("--log", type=Path, help="write every role process's log lines here")
    args = parser.parse_args(argv)
    args.duration = args.seconds if args.seconds is not None else args.minutes * 60
    for name in ("duration", "kill_every", "rate", "sample_every", "heal"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if args.workers < 1 or args.shards < 1 or args.markets < 1:
        parser.error("--workers, --shards and --markets must be >= 1")
    return args


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # A short private directory: ipc paths are limited to ~107 bytes.
    rundir = Path(tempfile.mkdtemp(prefix="arbees-soak-"))
    with contextlib.ExitStack() as files:
        log = None if args.log is None else files.enter_context(args.log.open("w", buffering=1))
        soak = Soak(args, rundir, log)
        try:
            return await soak.run()
        finally:
            await soak.stop()
            shutil.rmtree(rundir, ignore_errors=True)


if __name__ == "__main__":
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    render(result, Console())
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(result, indent=2))
    sys.exit(0 if result["markets_lost"] == 0 and result["wrong_books"] == 0 else 1)
