"""`SimulatedVenues`: both venue simulators on one shared universe, with a demo key.

Running the two simulators on ONE `Universe` is what makes them useful together:
the same hidden probability drives both venues' books, while each venue's ladder
moves independently (different seeds), so cross-venue price gaps and the
occasional arbitrage appear on their own. The Kalshi simulator verifies real
RSA-PSS signatures, so a key pair is generated and registered here and its
paths are exposed for a client under test.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Self

from markets.sim.activity import ActivityMix
from markets.sim.control import SimControlServer
from markets.sim.faults import FaultPlan
from markets.sim.gaps import Gap, GapControl, SimControlError
from markets.sim.kalshi import KalshiSimulator
from markets.sim.keys import generate_demo_keypair
from markets.sim.ladder import SimLadder
from markets.sim.lifecycle import LifecycleConfig
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.sendlog import SendLog
from markets.sim.server import SimServer
from markets.sim.universe import FairWalk, Universe, build_universe

# Polymarket's ladders draw from their own seed so that the two venues' books
# differ even when both grids are the same.
POLYMARKET_SEED_OFFSET = 1


class SimulatedVenues:
    """`async with SimulatedVenues() as venues:` starts Kalshi and Polymarket simulators.

    `key_dir` receives the demo key pair (mode 0600); without it a fresh temporary
    directory is used and removed on exit. Both simulators share `faults` and
    `send_log` (records carry the venue), and bind to `host` on the given ports
    (0 = ephemeral). `lifecycle` sets when games close and settle (default: over
    hours; ignored when a `universe` is given). With `control_port` set (0 = ephemeral) the control server
    (`markets.sim.control`) also starts, on loopback whatever `host` is.
    """

    def __init__(self, *, n_markets: int = 20, seed: int = 0, rate: float = 5.0,
                 host: str = "127.0.0.1", kalshi_port: int = 0, polymarket_port: int = 0,
                 faults: FaultPlan | None = None, key_dir: Path | None = None,
                 send_log: SendLog | None = None, universe: Universe | None = None,
                 control_port: int | None = None, lifecycle: LifecycleConfig | None = None,
                 activity: ActivityMix | None = None) -> None:
        self.universe = (universe if universe is not None
                         else build_universe(n_markets, seed=seed, lifecycle=lifecycle))
        self.send_log = send_log if send_log is not None else SendLog()
        self._given_key_dir = key_dir
        self._temp_key_dir: Path | None = None
        self._key: tuple[str, Path] | None = None
        self.kalshi = KalshiSimulator(self.universe, host=host, port=kalshi_port, rate=rate,
                                      seed=seed, faults=faults, send_log=self.send_log, activity=activity)
        self.polymarket = PolymarketSimulator(
            self.universe, host=host, port=polymarket_port, rate=rate,
            seed=seed + POLYMARKET_SEED_OFFSET, faults=faults, send_log=self.send_log, activity=activity)
        self._gaps = GapControl(self.universe, {sim.venue: sim for sim in self._simulators})
        self._control = SimControlServer(self, control_port) if control_port is not None else None

    @property
    def key_id(self) -> str:
        return self._demo_key[0]

    @property
    def private_key_path(self) -> Path:
        return self._demo_key[1]

    @property
    def _demo_key(self) -> tuple[str, Path]:
        if self._key is None:
            raise RuntimeError("SimulatedVenues not started: no demo key yet")
        return self._key

    # -- controls: for tests, and for other processes through the control server ----
    @property
    def control_url(self) -> str:
        """`http://127.0.0.1:PORT/_sim` (routes in `markets.sim.control`)."""
        if self._control is None:
            raise RuntimeError("SimulatedVenues was built without control_port: no control server")
        return self._control.url

    @property
    def paused(self) -> bool:
        return all(sim.paused for sim in self._simulators)

    def pause(self) -> None:
        """Freeze every book on both venues until `resume`.

        Connections, keep-alives, commands and snapshots go on, and so does the
        hidden fair-value walk (books chase it again on resume). Explicit controls
        (`open_gap`, `close_gap`) still apply while paused.
        """
        for sim in self._simulators:
            sim.pause()

    def resume(self) -> None:
        for sim in self._simulators:
            sim.resume()

    def open_gap(self, game_id: str, venue: str, cents: int) -> Gap:
        """Hold `venue`'s YES ask `cents` below the other venue's YES bid on the game
        until `close_gap`: a cross-venue arbitrage on demand (see `markets.sim.gaps`)."""
        return self._gaps.open(game_id, venue, cents)

    def close_gap(self, game_id: str) -> bool:
        """Close the game's gap; False if it had none."""
        return self._gaps.close(game_id)

    def fair(self, game_id: str) -> float:
        """The game's hidden probability that its market's YES wins, now.

        Each venue walks its own copy of one fair-value sequence at its own round
        count (they are at most a round or so apart); the copy further along holds
        the current value. UnknownGameError for a game that is not simulated.
        """
        self._gaps.market(game_id)
        return self._latest_walk().fair(game_id)

    def fairs(self) -> dict[str, float]:
        """`fair` of every game, from one walk so the values belong to one moment."""
        walk = self._latest_walk()
        return {m.game.game_id: walk.fair(m.game.game_id) for m in self.universe.markets}

    def set_faults(self, plan: FaultPlan, venue: str | None = None) -> None:
        """Switch `venue`'s simulator (None: both) to `plan` now: its live connections count
        frames afresh under it and new ones start with it. A test uses it to give each venue
        faults the other cannot share (a Kalshi dead peer is a mere stall on Polymarket)."""
        chosen = [sim for sim in self._simulators if venue is None or sim.venue == venue]
        if not chosen:
            raise SimControlError(f"unknown venue {venue!r}; expected one of "
                                  f"{', '.join(sim.venue for sim in self._simulators)}")
        for sim in chosen:
            sim.apply_faults_now(plan)

    def tops(self) -> dict[str, dict[str, list[int | None]]]:
        """Every market's true top of book per venue, from the ladders themselves:
        `{venue: {market id: [bid, ask, bid_size, ask_size]}}` in ticks of $0.0001 and
        hundredths of a contract (YES scale; None for an empty side).

        It is the truth a client's book must equal once the books stop moving (`pause`),
        read straight from the simulators rather than rebuilt from their wire."""
        return {sim.venue: {key: _top(ladder) for key, ladder in sim.ladders.items()} for sim in self._simulators}

    @property
    def _simulators(self) -> tuple[SimServer, SimServer]:
        return (self.kalshi, self.polymarket)

    def _latest_walk(self) -> FairWalk:
        return max((sim.fairs for sim in self._simulators), key=lambda walk: walk.rounds)

    async def start(self) -> None:
        directory = self._given_key_dir
        if directory is None:
            directory = self._temp_key_dir = Path(tempfile.mkdtemp(prefix="arbees-sim-keys-"))
        key_id, path, public_pem = generate_demo_keypair(directory)
        self._key = (key_id, path)
        self.kalshi.register_key(key_id, public_pem)
        await self.kalshi.start()
        try:
            await self.polymarket.start()
            if self._control is not None:
                await self._control.start()
        except BaseException:
            await self.polymarket.stop()
            await self.kalshi.stop()
            self._remove_temp_keys()
            raise

    async def stop(self) -> None:
        try:
            if self._control is not None:
                await self._control.stop()
            await self.polymarket.stop()
        finally:
            await self.kalshi.stop()
            self.send_log.flush()
            self._remove_temp_keys()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _remove_temp_keys(self) -> None:
        if self._temp_key_dir is not None:
            shutil.rmtree(self._temp_key_dir, ignore_errors=True)
            self._temp_key_dir = None


def _top(ladder: SimLadder) -> list[int | None]:
    """[bid, ask, bid_size, ask_size] of one ladder (see `SimulatedVenues.tops`)."""
    bid, ask = ladder.best_bid(), ladder.best_ask()
    return [bid, ask, None if bid is None else ladder.bids[bid], None if ask is None else ladder.asks[ask]]
