"""Common machinery of the venue simulators: serving, connections, market dynamics.

A venue simulator subclasses `SimServer` and supplies four things: how a market
is keyed on that venue, how its ladder is gridded, its routes, and how a batch
of `LevelChange`s becomes wire frames (`publish`).  Everything else — the
aiohttp runner on an ephemeral loopback port, the one driver task that moves
fair values and books, fault plans, the send log, and closing live sockets
promptly on stop — lives here so both venues behave the same way.

The driver moves markets either round-robin at one `rate` per market (the default,
which tests and benchmarks count on) or, given an `activity` mix, each at its own
pace: most quiet for minutes, a few busy (`markets.sim.activity`), as real venues are.
Either way only trading markets move: the universe's game timetable
(`markets.sim.lifecycle`) decides, and a venue may override `trading` (which phases
move) and `on_lifecycle` (what its clients are told when a game reaches a moment).

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
from collections.abc import Callable
from typing import ClassVar, Self

from aiohttp import WSCloseCode, web

from markets.sim.activity import ActivityClock, ActivityMix
from markets.sim.faults import Countdown, FaultPlan, FaultState
from markets.sim.ladder import VENUE_DEPTH, LevelChange, SimLadder
from markets.sim.lifecycle import Phase, Transition, run_transitions
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
                 send_log: SendLog | None = None, activity: ActivityMix | None = None,
                 depth: int = VENUE_DEPTH) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0 updates/s per market, got {rate}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1 level per side, got {depth!r}")
        self.depth = depth
        """Levels per side each book starts with (`make_ladder` passes it on; grid permitting)."""
        self.universe = universe
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.rate = rate
        self.activity = activity
        self.rng = random.Random(seed)
        # Its own stream, so switching the activity model never changes how books move.
        self._activity_rng = random.Random(seed + 7)
        self.mean_intervals: list[float] | None = (
            None if activity is None else activity.mean_intervals(len(universe.markets), self._activity_rng))
        """Per market (universe order), the mean seconds between its changes under `activity`."""
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
        self._lifecycle_task: asyncio.Task[None] | None = None
        # Test controls (see SimulatedVenues): while `paused` no book moves; `fair_bias`
        # displaces a game's quotes from its fair value, and `step_listeners` see every
        # step, so that a scripted cross-venue gap moves with the market yet stays open.
        self.paused = False
        self.fair_bias: dict[str, float] = {}
        self.step_listeners: list[Callable[[SimMarket], None]] = []

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

    def trading(self, market: SimMarket) -> bool:
        """Whether the market's book moves now (default: only while its game is OPEN)."""
        return self.universe.lifecycle.phase(market) is Phase.OPEN

    def on_lifecycle(self, transition: Transition) -> None:
        """A game reached a moment of its timetable: tell the venue's clients (default: nothing)."""

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        if self.mean_intervals is not None:
            self._driver = asyncio.create_task(self._drive_mix(self.mean_intervals), name=f"{self.venue}-driver")
        elif self.rate > 0:
            self._driver = asyncio.create_task(self._drive(), name=f"{self.venue}-driver")
        self.universe.lifecycle.start()  # the first simulator on the universe fixes the epoch
        self._lifecycle_task = asyncio.create_task(
            run_transitions(self.universe.lifecycle, self._lifecycle_change), name=f"{self.venue}-lifecycle")

    async def stop(self) -> None:
        for task in (self._driver, self._lifecycle_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._driver = self._lifecycle_task = None
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
    def pause(self) -> None:
        """Stop every book until `resume` (see `step_market`); connections, keep-alives
        and the fair-value walk go on. A venue that holds reports back sends them first."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def step_market(self, market: SimMarket) -> list[LevelChange]:
        """Move one market once and publish the result (the driver's unit of work); a
        market whose game is not trading stays still, which on the book channel is
        all a client sees of a close. Nothing moves while the server is `paused`."""
        if self.paused or not self.trading(market):
            return []
        ladder = self.ladders[self.market_key(market)]
        game_id = market.game.game_id
        changes = ladder.step(self.fairs.fair(game_id) + self.fair_bias.get(game_id, 0.0))
        if changes:
            self.publish(market, changes)
            for listener in self.step_listeners:
                listener(market)
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
        self._step_safely(market)

    def _step_safely(self, market: SimMarket) -> None:
        """A driver's update: one bad update is logged, and must not stop the market."""
        try:
            self.step_market(market)
        except Exception:
            log.exception("%s simulator: update of %s failed", self.venue, self.market_key(market))

    def step_round(self) -> None:
        """One full round by hand (tests, benchmarks): every market once."""
        for _ in self.universe.markets:
            self.step_next()

    def _lifecycle_change(self, transition: Transition) -> None:
        try:
            self.on_lifecycle(transition)
        except Exception:  # one bad event must not end every later one
            log.exception("%s simulator: lifecycle %s of %s failed", self.venue, transition.change,
                          self.market_key(transition.market))
        self.send_log.flush()

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

    async def _drive_mix(self, mean_intervals: list[float]) -> None:
        """Move each market at its own pace (see `markets.sim.activity`); the fair-value
        walk steps once per `len(markets)` updates, as in a round of `_drive`."""
        loop = asyncio.get_running_loop()
        markets = self.universe.markets
        clock = ActivityClock(mean_intervals, self._activity_rng, loop.time())
        updates = 0
        while True:
            wait = clock.next_due() - loop.time()
            await asyncio.sleep(min(max(wait, MIN_DRIVER_SLEEP), MAX_DRIVER_SLEEP))
            for index in clock.pop_due(loop.time(), MAX_DRIVER_BATCH):
                if updates % len(markets) == 0:
                    self.fairs.step()
                updates += 1
                self._step_safely(markets[index])
            self.send_log.flush()
