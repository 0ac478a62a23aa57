"""The simulators' activity mix: most markets quiet for minutes, a few busy.

The clock is driven in virtual time here (no sleeping): `pop_due(now)` with a
`now` the test chooses. One test runs a real simulator to show the driver uses it.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from markets.sim.activity import ActivityClock, ActivityMix
from markets.sim.faults import FaultPlan
from markets.sim.kalshi import KalshiSimulator
from markets.sim.universe import build_universe
from tests.clients.conftest import wsk_eventually


def test_the_mix_makes_exactly_the_busy_share_busy() -> None:
    mix = ActivityMix(busy_share=0.1, busy_interval=0.5, quiet_interval=240.0)
    means = mix.mean_intervals(200, random.Random(1))
    assert Counter(means) == {0.5: 20, 240.0: 180}
    assert mix.mean_intervals(200, random.Random(1)) == means  # a seed reproduces it


def test_over_an_hour_quiet_markets_change_every_few_minutes_busy_ones_many_times_a_second() -> None:
    mix = ActivityMix(busy_share=0.05, busy_interval=0.3, quiet_interval=180.0)
    means = mix.mean_intervals(100, random.Random(2))
    clock = ActivityClock(means, random.Random(3), start=0.0)
    changes: Counter[int] = Counter()
    for tick in range(1, 36_001):  # one hour in 0.1 s steps
        changes.update(clock.pop_due(tick / 10, limit=10_000))
    busy = [changes[i] for i, mean in enumerate(means) if mean == 0.3]
    quiet = [changes[i] for i, mean in enumerate(means) if mean == 180.0]
    assert len(busy) == 5 and all(10_000 < n < 14_000 for n in busy)  # ~12,000 expected
    assert sum(quiet) / len(quiet) == pytest.approx(20, rel=0.2)  # 3600 s / 180 s
    assert max(quiet) < 45


def test_the_clock_hands_out_due_markets_earliest_first_and_within_the_limit() -> None:
    clock = ActivityClock([1.0, 1.0, 1.0], random.Random(4), start=0.0)
    first = clock.next_due()
    assert clock.pop_due(first - 1e-9, limit=10) == []
    assert len(clock.pop_due(first, limit=10)) >= 1
    assert len(clock.pop_due(1e9, limit=2)) == 2  # far behind: no more than the limit at once


@pytest.mark.parametrize("spec, problem", [("busy_share=2", "busy_share"), ("quiet_interval=0", "quiet_interval"),
                                           ("speed=1", "one of"), ("busy_interval=fast", "a number")])
def test_bad_activity_specs_are_refused_with_the_reason(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ActivityMix.parse(spec)


def test_activity_spec_parses() -> None:
    assert ActivityMix.parse("busy_share=0.2, quiet_interval=60") == ActivityMix(0.2, 0.3, 60.0)
    assert ActivityMix.parse("") == ActivityMix()


async def test_a_simulator_with_the_mix_moves_busy_markets_and_leaves_quiet_ones_alone() -> None:
    universe = build_universe(8, seed=9)
    mix = ActivityMix(busy_share=0.25, busy_interval=0.02, quiet_interval=1e6)
    async with KalshiSimulator(universe, seed=9, activity=mix, faults=FaultPlan()) as sim:
        before = {t: sim.book_levels(t) for t in sim.ladders}
        assert sim.mean_intervals is not None
        busy = {m.kalshi_ticker for m, mean in zip(universe.markets, sim.mean_intervals, strict=True)
                if mean == 0.02}
        assert len(busy) == 2
        await wsk_eventually(lambda: all(sim.book_levels(t) != before[t] for t in busy),
                             what="the busy markets to move")
        for ticker in set(sim.ladders) - busy:
            assert sim.book_levels(ticker) == before[ticker], ticker


def test_simulated_venues_and_the_sim_command_take_the_mix() -> None:
    from click.testing import CliRunner

    from broker.cli import main
    from markets.sim.venues import SimulatedVenues

    mix = ActivityMix(busy_share=0.5)
    venues = SimulatedVenues(n_markets=4, activity=mix)
    assert venues.kalshi.activity == mix and venues.polymarket.activity == mix
    assert sorted(venues.kalshi.mean_intervals or []) == [0.3, 0.3, 180.0, 180.0]
    refused = CliRunner().invoke(main, ["sim", "--activity", "busy_share=2"])
    assert refused.exit_code == 2 and "busy_share must be within [0, 1]" in refused.output
