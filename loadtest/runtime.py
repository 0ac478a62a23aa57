"""The runtime under load: simulators, broker, workers and a shard as real processes.

The same children `arbees launch` supervises (`broker.launcher`), each a
`python -m broker ROLE` process in its own session, over ipc files in a private
runtime directory; the workers and the shard also write the load run's logs
(`loadtest.instrument`) and the simulators their send log. The simulators run on a
supervisor of their own because they outlive the streaming phase: the REST
polling phase reads the same books afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker import protocol
from broker.broker_client import BrokerUnreachable, ask_broker
from broker.endpoints import new_runtime_dir
from broker.launch_command import BROKER_READY, parse_exports
from broker.launcher import Child, Supervisor

SHARD_ID = "s0"
STATUS_TIMEOUT = 5.0
READY_BASE_S = 30.0
READY_PER_MARKET_S = 0.02


class Runtime:
    """Start, observe and stop the processes of one load run; logs go to `workdir`."""

    def __init__(self, workdir: Path, *, markets: int, rate: float, workers: int, seed: int) -> None:
        self.workdir = workdir
        self.markets = markets
        self.rate = rate
        self.workers = workers
        self.seed = seed
        self.rundir = new_runtime_dir()
        self.broker_endpoint = f"ipc://{self.rundir}/broker"
        self.send_log = workdir / "sendlog.tsv"
        self.frame_logs = [workdir / f"frames-w{k}.tsv" for k in range(workers)]
        self.latency_log = workdir / "shard-latency.tsv"
        for path in (self.send_log, self.latency_log, *self.frame_logs):
            path.unlink(missing_ok=True)  # the logs are appended to: a previous run's keys would match
        self.venue_env: dict[str, str] = {}
        self._sim = Supervisor()
        self._roles = Supervisor()
        self._groups: dict[str, list[Child]] = {"broker": [], "workers": [], "shards": []}

    @property
    def processes(self) -> list[tuple[str, int]]:
        """(role, pid) of every running child, simulators first."""
        return [(c.name, c.pid) for c in [*self._sim.children, *self._roles.children] if c.pid is not None]

    async def start_simulators(self) -> None:
        child = await self._sim.start(Child("sim", [
            "sim", "--markets", str(self.markets), "--rate", f"{self.rate:g}", "--seed", str(self.seed),
            "--send-log", str(self.send_log)], {}, "Press Ctrl-C"))
        self.venue_env = {k: v for k, v in parse_exports(child.banner).items()
                          if k.startswith(("KALSHI_", "POLYMARKET_"))}

    async def start_roles(self) -> None:
        endpoint = self.broker_endpoint
        broker = await self._roles.start(Child("broker", [
            "broker", "--endpoint", endpoint, "--sim-markets", str(self.markets), "--sim-seed", str(self.seed),
            "--log-level", "info"], {}, BROKER_READY, [endpoint]))
        self._groups["broker"].append(broker)
        for k in range(self.workers):
            pub, snap = f"ipc://{self.rundir}/w{k}-pub", f"ipc://{self.rundir}/w{k}-snap"
            self._groups["workers"].append(await self._roles.start(Child(f"worker-{k}", [
                "worker", "--id", f"w{k}", "--broker", endpoint, "--pub", pub, "--snapshot", snap,
                "--frame-log", str(self.frame_logs[k]), "--log-level", "warning"], self.venue_env, None, [pub, snap])))
        signals = f"ipc://{self.rundir}/{SHARD_ID}-sig"
        self._groups["shards"].append(await self._roles.start(Child("shard", [
            "shard", "--id", SHARD_ID, "--broker", endpoint, "--signals", signals,
            "--latency-log", str(self.latency_log), "--log-level", "warning"], {}, None, [signals])))

    async def status(self) -> dict[str, Any] | None:
        """The broker's status document, or None while it does not answer."""
        try:
            reply = await asyncio.to_thread(ask_broker, self.broker_endpoint, protocol.STATUS_REQUEST,
                                            timeout=STATUS_TIMEOUT)
        except BrokerUnreachable:
            return None
        return dict(reply.mapping("status"))

    async def wait_streaming(self, stop: asyncio.Event, on_progress: Callable[[int, int], None]) -> bool:
        """Until the shard holds a record of every market; False if `stop` came first.

        Raises TimeoutError past a deadline that grows with the number of markets.
        """
        expected = 2 * self.markets
        deadline = time.monotonic() + READY_BASE_S + READY_PER_MARKET_S * expected
        while not stop.is_set():
            status = await self.status()
            held = shard_held(status) if status else 0
            on_progress(held, expected)
            if held == expected and status and not status.get("unassigned"):
                return True
            if time.monotonic() > deadline:
                tail = "\n  ".join([*self._sim.output, *self._roles.output][-15:])
                raise TimeoutError(f"the shard held {held} of {expected} markets after "
                                   f"{READY_BASE_S + READY_PER_MARKET_S * expected:.0f} s "
                                   f"({len((status or {}).get('unassigned', []))} unassigned); "
                                   f"last output of the processes:\n  {tail}")
            await asyncio.sleep(0.2)
        return False

    async def stop_roles(self) -> None:
        """Shard, workers, broker, in that order (SIGTERM: each flushes its log on the way out)."""
        await self._roles.stop([self._groups["shards"], self._groups["workers"], self._groups["broker"]])

    async def stop(self) -> None:
        await self.stop_roles()
        await self._sim.stop([])
        shutil.rmtree(self.rundir, ignore_errors=True)

    @property
    def restarts(self) -> int:
        return self._sim.restarts + self._roles.restarts


def shard_held(status: dict[str, Any]) -> int:
    """Markets for which the load run's shard holds a record."""
    shard = status.get("shards", {}).get(SHARD_ID)
    if not shard:
        return 0
    return sum(1 for held in shard["counters"].get("markets", {}).values() if held is not None)


def runtime_counters(status: dict[str, Any]) -> dict[str, int]:
    """The run's counters summed over workers and venues (and the shard's bus counters)."""
    totals = {"rest_requests": 0, "reconnects": 0, "resyncs": 0, "venue_gaps": 0, "published": 0,
              "pub_dropped": 0, "bus_gaps": 0, "applied": 0}
    for info in status.get("workers", {}).values():
        counters = info.get("counters", {})
        totals["published"] += counters.get("published", 0)
        totals["pub_dropped"] += counters.get("pub_dropped", 0)
        for venue in counters.get("venues", {}).values():
            totals["rest_requests"] += venue.get("rest_requests", 0)
            totals["reconnects"] += venue.get("reconnects", 0)
            totals["resyncs"] += venue.get("resyncs", 0)
            totals["venue_gaps"] += venue.get("gaps", 0)
    shard = status.get("shards", {}).get(SHARD_ID)
    if shard:
        totals["bus_gaps"] = shard["counters"].get("gap", 0)
        totals["applied"] = shard["counters"].get("applied", 0)
    return totals
