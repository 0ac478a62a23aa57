"""Common machinery of the venue simulators: serving, connections, market dynamics.

A venue simulator subclasses `SimServer` and supplies four things: how a market
is keyed on that venue, how its ladder is gridded, its routes, and how a batch
of `LevelChange`s becomes wire frames (`publish`).  Everything else — the
aiohttp runner on an ephemeral loopback port, the one driver task that moves
fair values and books, fault plans, the send log, and closing live sockets
promptly on stop — lives here so both venues behave the same way.

Frames reach a socket through an `Outbound` queue with its own writer task:
`publish` never awaits, so one slow reader can neither stall the market for
everybody else nor hide from the overflow rule a real venue applies to it.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import random
from typing import ClassVar, Self

from aiohttp import WSCloseCode, web

from markets.sim.faults import Countdown, FaultPlan, FaultState
from markets.sim.ladder import LevelChange, SimLadder
from markets.sim.sendlog import SendLog
from markets.sim.universe import SimMarket, Universe

log = logging.getLogger(__name__)

# The driver wakes at most this often; at high rates it catches up in batches
# instead of sleeping once per update (asyncio sleeps are ~1 ms granular).
MIN_DRIVER_SLEEP = 0.001
MAX_DRIVER_SLEEP = 0.05
# Updates per driver wake-up at most.  Writers only run between batches, so a
# large batch is a burst that fills every send queue at once; when the driver
# is further behind than this it skips ahead rather than simulating a backlog
# nobody will read.
MAX_DRIVER_BATCH = 500
CLOSE_TIMEOUT = 1.0


class _Drop:
    """Queue marker: abort the connection when the writer reaches it."""


_DROP = _Drop()
Stamps = tuple[tuple[str, str], ...]
"""(market id, send-log key) pairs of one frame: one for a Kalshi frame, one per
entry for a Polymarket frame that batches several."""
_Item = tuple[str, Stamps] | _Drop


class Outbound:
    """A connection's send queue, drained by one writer task.

    Data frames count against `limit`; `put` reports overflow and leaves the
    decision (e.g. Kalshi's error 25) to the venue.  Control frames (command
    replies, errors) are always queued.  Each data frame's stamps go to the
    send log immediately before it is written, so the log holds send times,
    not queueing times.
    """

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, venue: str,
                 send_log: SendLog, limit: int) -> None:
        self.ws = ws
        self._transport = request.transport
        self._venue = venue
        self._send_log = send_log
        self.limit = limit
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._write_loop(), name=f"{venue}-ws-writer")

    def put(self, text: str, stamps: Stamps = ()) -> bool:
        """Queue a data frame; False (and nothing queued) if the buffer is full."""
        if len(self._queue) >= self.limit:
            return False
        self._queue.append((text, stamps))
        self._wakeup.set()
        return True

    def put_control(self, text: str) -> None:
        self._queue.append((text, ()))
        self._wakeup.set()

    def put_drop(self) -> None:
        """Abort the TCP connection (no close frame) after what is queued so far."""
        self._queue.append(_DROP)
        self._wakeup.set()

    def abort(self) -> None:
        """Cut the TCP connection now, without a close frame (a dead peer's view)."""
        if self._transport is not None:
            self._transport.abort()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _write_loop(self) -> None:
        queue, ws, stamp = self._queue, self.ws, self._send_log.stamp
        try:
            while True:
                if not queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                item = queue.popleft()
                if isinstance(item, _Drop):
                    self.abort()
                    return
                text, stamps = item
                for market_id, key in stamps:
                    stamp(self._venue, market_id, key)
                await ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("%s writer stopped: %s", self._venue, exc)


class SimServer(abc.ABC):
    """Base of the venue simulators; use as `async with Sim(universe) as sim:`."""

    venue: ClassVar[str]

    def __init__(self, universe: Universe, *, host: str = "127.0.0.1", port: int = 0,
                 rate: float = 5.0, seed: int = 0, faults: FaultPlan | None = None,
                 send_log: SendLog | None = None) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0 updates/s per market, got {rate}")
        self.universe = universe
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.rate = rate
        self.rng = random.Random(seed)
        self._faults = faults or FaultPlan()
        self._countdown = Countdown()
        self.send_log = send_log if send_log is not None else SendLog()
        self.ladders: dict[str, SimLadder] = {
            self.market_key(m): self.make_ladder(m, self.rng) for m in universe.markets
        }
        self.fairs = universe.walk()
        self._next_market = 0
        self._live: dict[web.WebSocketResponse, FaultState] = {}
        self._runner: web.AppRunner | None = None
        self._driver: asyncio.Task[None] | None = None

    # -- venue hooks ---------------------------------------------------------
    @abc.abstractmethod
    def market_key(self, market: SimMarket) -> str:
        """The venue's id of a market (ticker, condition id, ...), keying `ladders`."""

    @abc.abstractmethod
    def make_ladder(self, market: SimMarket, rng: random.Random) -> SimLadder:
        """A fresh ladder on the venue's price grid for the market."""

    @abc.abstractmethod
    def add_routes(self, app: web.Application) -> None:
        """Register the venue's REST and WebSocket routes."""

    @abc.abstractmethod
    def publish(self, market: SimMarket, changes: list[LevelChange]) -> None:
        """Broadcast changes already applied to the market's ladder; must not await."""

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        if self.rate > 0:
            self._driver = asyncio.create_task(self._drive(), name=f"{self.venue}-driver")

    async def stop(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
            self._driver = None
        closing = [ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
                   for ws in list(self._live)]
        if closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True),
                                       CLOSE_TIMEOUT)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.send_log.flush()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- faults ----------------------------------------------------------------
    @property
    def faults(self) -> FaultPlan:
        return self._faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        """New plan for connections opened from now on; server-wide counters restart."""
        self._faults = plan
        self._countdown = Countdown()

    def apply_faults_now(self, plan: FaultPlan) -> None:
        """Switch every live connection (and future ones) to `plan`."""
        self.faults = plan
        for state in self._live.values():
            state.reset(plan)

    def refuse_handshake(self) -> bool:
        """True if this WebSocket handshake must be refused (503) under the plan."""
        return self._countdown.refuse_handshake(self._faults)

    def next_rest_fault(self) -> int | None:
        """The error status this REST request must get under the plan, if any."""
        return self._countdown.rest_fault(self._faults)

    # -- connections -----------------------------------------------------------
    def register_ws(self, ws: web.WebSocketResponse) -> FaultState:
        """Track a live socket (so stop() closes it); returns its fault counters."""
        state = FaultState(self._faults)
        self._live[ws] = state
        return state

    def unregister_ws(self, ws: web.WebSocketResponse) -> None:
        self._live.pop(ws, None)

    @property
    def connection_count(self) -> int:
        return len(self._live)

    # -- market dynamics -------------------------------------------------------
    def step_market(self, market: SimMarket) -> list[LevelChange]:
        """Move one market once and publish the result (the driver's unit of work)."""
        ladder = self.ladders[self.market_key(market)]
        changes = ladder.step(self.fairs.fair(market.game.game_id))
        if changes:
            self.publish(market, changes)
        return changes

    def step_next(self) -> None:
        """The driver's next update: markets round-robin, fair values stepped once per round.

        Stepping the walk once per round keeps its speed independent of the
        number of markets, and tying it to this simulator's own round count (not
        to a clock or to another venue's driver) makes a seed reproduce the market.
        """
        markets = self.universe.markets
        if self._next_market == 0:
            self.fairs.step()
        market = markets[self._next_market]
        self._next_market = (self._next_market + 1) % len(markets)
        try:
            self.step_market(market)
        except Exception:  # one bad update must not stop the market
            log.exception("%s simulator: update of %s failed", self.venue, self.market_key(market))

    def step_round(self) -> None:
        """One full round by hand (tests, benchmarks): every market once."""
        for _ in self.universe.markets:
            self.step_next()

    async def _drive(self) -> None:
        """Run `rate` updates per second per market (see `step_next`)."""
        loop = asyncio.get_running_loop()
        per_second = self.rate * len(self.universe.markets)
        sleep = min(max(1.0 / per_second, MIN_DRIVER_SLEEP), MAX_DRIVER_SLEEP)
        start = loop.time()
        done = 0
        while True:
            await asyncio.sleep(sleep)
            due = int((loop.time() - start) * per_second) - done
            if due > MAX_DRIVER_BATCH:
                done += due - MAX_DRIVER_BATCH
                due = MAX_DRIVER_BATCH
            for _ in range(due):
                self.step_next()
            done += due
            self.send_log.flush()
