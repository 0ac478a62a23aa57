"""Fixtures shared by tests/sim and tests/clients: the demo key pair and the simulator factories.

Both directories start simulators the same way — a seeded universe, nothing moving
on its own unless a rate is given (the test steps markets itself), every simulator
stopped at teardown — so the factories live here once, and each directory only
adds its own defaults on top (tests/clients' `wsk_start_sim` pings faster).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from markets.sim.kalshi import KalshiSimulator
from markets.sim.keys import generate_demo_keypair
from markets.sim.polymarket import PolymarketSimulator
from markets.sim.server import SimServer
from markets.sim.universe import build_universe

DemoKeyPair = tuple[str, Path, bytes]
"""(key id, private key path (mode 0600), public key PEM), as `generate_demo_keypair` returns it."""

StartKalshi = Callable[..., Awaitable[KalshiSimulator]]
StartPoly = Callable[..., Awaitable[PolymarketSimulator]]
Sim = TypeVar("Sim", bound=SimServer)


@pytest.fixture(scope="session")
def demo_keypair(tmp_path_factory: pytest.TempPathFactory) -> DemoKeyPair:
    """The key pair every `start_kalshi` simulator accepts; generated once (RSA generation is slow)."""
    return generate_demo_keypair(tmp_path_factory.mktemp("kalshi-demo-key"))


class RunningSimulators:
    """The simulators one test started; the fixture stops them all at teardown."""

    def __init__(self) -> None:
        self._started: list[SimServer] = []

    @staticmethod
    def build(venue: type[Sim], n_markets: int, seed: int, options: dict[str, Any]) -> Sim:
        """A simulator over a seeded universe; rate 0 (nothing moves on its own) unless given.
        A `lifecycle` option (a `LifecycleConfig`) sets when the universe's games end."""
        universe = build_universe(n_markets, seed=seed, lifecycle=options.pop("lifecycle", None))
        return venue(universe, seed=seed, **({"rate": 0.0} | options))

    async def start(self, sim: Sim) -> Sim:
        await sim.start()
        self._started.append(sim)
        return sim

    async def stop_all(self) -> None:
        for sim in self._started:
            await sim.stop()


@pytest.fixture
async def running_simulators() -> AsyncIterator[RunningSimulators]:
    simulators = RunningSimulators()
    yield simulators
    await simulators.stop_all()


@pytest.fixture
def start_kalshi(running_simulators: RunningSimulators, demo_keypair: DemoKeyPair) -> StartKalshi:
    """Factory: `await start_kalshi(n_markets=4, seed=7, **simulator_options)`; the demo key is registered."""
    key_id, _, public_pem = demo_keypair

    async def start(n_markets: int = 4, seed: int = 7, **options: Any) -> KalshiSimulator:
        sim = running_simulators.build(KalshiSimulator, n_markets, seed, options)
        sim.register_key(key_id, public_pem)
        return await running_simulators.start(sim)

    return start


@pytest.fixture
def start_poly(running_simulators: RunningSimulators) -> StartPoly:
    """Factory: `await start_poly(n_markets=3, seed=11, **simulator_options)`.

    With rate 0 nothing moves on its own: tests call `sim.step_market(m)`.
    """

    async def start(n_markets: int = 3, seed: int = 11, **options: Any) -> PolymarketSimulator:
        return await running_simulators.start(
            running_simulators.build(PolymarketSimulator, n_markets, seed, options))

    return start
