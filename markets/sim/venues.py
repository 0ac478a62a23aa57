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

from markets.sim.faults import FaultPlan
from markets.sim.kalshi import KalshiSimulator
from markets.sim.keys import generate_demo_keypair
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.sendlog import SendLog
from markets.sim.universe import Universe, build_universe

# Polymarket's ladders draw from their own seed so that the two venues' books
# differ even when both grids are the same.
POLYMARKET_SEED_OFFSET = 1


class SimulatedVenues:
    """`async with SimulatedVenues() as venues:` starts Kalshi and Polymarket simulators.

    `key_dir` receives the demo key pair (mode 0600); without it a fresh temporary
    directory is used and removed on exit. Both simulators share `faults` and
    `send_log` (records carry the venue), and bind to `host` on the given ports
    (0 = ephemeral).
    """

    def __init__(self, *, n_markets: int = 20, seed: int = 0, rate: float = 5.0,
                 host: str = "127.0.0.1", kalshi_port: int = 0, polymarket_port: int = 0,
                 faults: FaultPlan | None = None, key_dir: Path | None = None,
                 send_log: SendLog | None = None, universe: Universe | None = None) -> None:
        self.universe = universe if universe is not None else build_universe(n_markets, seed=seed)
        self.send_log = send_log if send_log is not None else SendLog()
        self._given_key_dir = key_dir
        self._temp_key_dir: Path | None = None
        self._key: tuple[str, Path] | None = None
        self.kalshi = KalshiSimulator(self.universe, host=host, port=kalshi_port, rate=rate,
                                      seed=seed, faults=faults, send_log=self.send_log)
        self.polymarket = PolymarketSimulator(
            self.universe, host=host, port=polymarket_port, rate=rate,
            seed=seed + POLYMARKET_SEED_OFFSET, faults=faults, send_log=self.send_log)

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
        except BaseException:
            await self.kalshi.stop()
            self._remove_temp_keys()
            raise

    async def stop(self) -> None:
        try:
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
